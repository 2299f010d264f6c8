using System.Runtime.CompilerServices;
using Google.Protobuf;
using RaySharp.CoreWorker.Objects;
using RaySharp.CoreWorker.Serialization;
using RaySharp.CoreWorker.Submission;
using RaySharp.Rpc.Protocol;

namespace RaySharp;

/// <summary>
/// A typed reference to a value that a task will produce (or has produced), or that <see cref="Ray.Put{T}(T)"/>
/// stored. Await it, read it with <see cref="Ray.Get{T}(ObjectRef{T}, TimeSpan?)"/>, or pass it to a task where a
/// <typeparamref name="T"/> is expected: the task runs once the value is ready, with the value. The driver that
/// created it owns the value.
/// </summary>
[MessagePack.MessagePackFormatter(typeof(ObjectRefFormatter<>))]
public sealed class ObjectRef<T>
{
    // Deserialized on first use (most refs passed along as arguments are never read here).
    private Task<T>? _value;

    internal ObjectRef(string id, Task<ByteString> bytes)
    {
        Id = id;
        Bytes = bytes;
    }

    /// <summary>The id of the object (for a task's result, the task's id).</summary>
    public string Id { get; }

    /// <summary>True once the value (or the task's failure) is known.</summary>
    public bool IsReady => Bytes.IsCompleted;

    /// <summary>The serialized value, as it travels to tasks that take it as an argument.</summary>
    internal Task<ByteString> Bytes { get; }

    internal Task<T> Value
    {
        get
        {
            if (_value is { } known) return known;
            var made = DeserializeAsync(Bytes);
            // Two first readers at once: one deserialization wins, both see it.
            return Interlocked.CompareExchange(ref _value, made, null) ?? made;
        }
    }

    /// <summary>Awaits the value; the code after the <c>await</c> continues on the caller's context or the thread pool.</summary>
    public ObjectRefAwaiter<T> GetAwaiter() => new(Value);

    private static async Task<T> DeserializeAsync(Task<ByteString> bytes)
    {
        ByteString value;
        try
        {
            value = await bytes.ConfigureAwait(false);
        }
        catch (CoreWorker.Objects.OwnerDiedCoreException e)
        {
            throw new OwnerDiedException(e.Message, e);
        }
        // Inline values need no runtime: they are the bytes.
        if (!LocalObjectStore.IsStored(value)) return ValueSerializer.Deserialize<T>(value.Memory);
        var runtime = Ray.CurrentRuntime;
        value = runtime.Lineage.Latest(value);
        try
        {
            return await runtime.Store.DeserializeAsync<T>(value).ConfigureAwait(false);
        }
        catch (IOException lost)
        {
            // Every copy is gone: make it again from its lineage, when this process made it with a task.
            var rebuilding = runtime.Lineage.TryRebuildAsync(value)
                ?? throw new ObjectLostException(lost.Message + ". It cannot be rebuilt: it was made by Ray.Put (or is owned by another process), " +
                                                 "and only task results are made again from their lineage", lost);
            ByteString rebuilt;
            try
            {
                rebuilt = await rebuilding.ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or RayException or CoreWorker.Submission.WorkerLostCoreException or InvalidOperationException)
            {
                throw new ObjectLostException($"{lost.Message}; rebuilding it from its lineage failed: {e.Message}", e);
            }
            try
            {
                return await runtime.Store.DeserializeAsync<T>(rebuilt).ConfigureAwait(false);
            }
            catch (IOException e)
            {
                throw new ObjectLostException(e.Message, e);
            }
        }
    }

    /// <summary>Turns the store's internal failures into the API's exceptions.</summary>
    internal static async Task<ByteString> MapStoreErrors(Task<ByteString> storing)
    {
        try
        {
            return await storing.ConfigureAwait(false);
        }
        catch (CoreWorker.Objects.ObjectStoreFullCoreException e)
        {
            throw new ObjectStoreFullException(e.Message);
        }
    }

    /// <summary>The result bytes of a task's reply; a failed task becomes the exception its readers see.</summary>
    /// <param name="runtime">The submitter's: a stored result becomes its store's to free, and its lineage is kept there.</param>
    /// <param name="request">With <paramref name="lineage"/>: the task, recorded with a stored result so it can be made again.</param>
    internal static async Task<ByteString> FromReply(Task<PushTaskReply> pending, CoreWorker.CoreWorkerRuntime runtime, PushTaskRequest? request = null,
        CoreWorker.Objects.ILineageSource? lineage = null)
    {
        PushTaskReply reply;
        try
        {
            reply = await pending.ConfigureAwait(false);
        }
        catch (Exception e) when (TaskOutcome.ApiFailure(e) is { } failure)
        {
            throw failure;
        }
        // A result left in the worker's node store becomes this process's to free.
        var result = runtime.Store.TakeOwnership(TaskOutcome.Instance.Result(reply));
        if (lineage is not null) runtime.Lineage.Record(result, request!, lineage);
        return result;
    }

    public override string ToString() => $"ObjectRef<{typeof(T).Name}>({Id})";
}

/// <summary>What a task's or actor call's outcome becomes for the readers of its result: the API's exceptions.</summary>
internal sealed class TaskOutcome : ICallOutcome
{
    public static readonly TaskOutcome Instance = new();

    public ByteString Result(PushTaskReply reply)
    {
        if (reply.Error is { } error) throw new RayTaskException(error);
        return reply.Result;
    }

    public Exception Failure(Exception coreFailure) => ApiFailure(coreFailure) ?? coreFailure;

    /// <summary>The API's exception for a failure of the runtime's; null for one that readers see as it is.</summary>
    public static Exception? ApiFailure(Exception e) => e switch
    {
        WorkerLostCoreException { NodeDied: true } lost => new NodeDiedException("The task's node died before it answered: " + lost.Message, lost, lost.Attempts),
        WorkerLostCoreException lost => new WorkerCrashedException("The task's worker process died before it answered: " + lost.Message, lost, lost.Attempts),
        InvalidOperationException unscheduled => new RayException("The task could not be scheduled: " + unscheduled.Message, unscheduled),
        ActorDiedCoreException died => new ActorDiedException(died.ActorId, died.Cause, died),
        ActorUnavailableCoreException unavailable => new ActorUnavailableException(unavailable.Message, unavailable),
        ShutdownCoreException down => new RayException(down.Message, down),
        _ => null,
    };
}

/// <summary>
/// Awaits an <see cref="ObjectRef{T}"/>. Values are completed on the connection that brought the reply (no thread hop
/// on the way to a waiting <c>Get</c>), so code awaiting one is never continued there: it goes to the captured
/// synchronization context, as with any task, or else to the thread pool.
/// </summary>
public readonly struct ObjectRefAwaiter<T> : ICriticalNotifyCompletion
{
    private readonly Task<T> _value;

    internal ObjectRefAwaiter(Task<T> value) => _value = value;

    public bool IsCompleted => _value.IsCompleted;

    public T GetResult() => _value.GetAwaiter().GetResult();

    public void OnCompleted(Action continuation) => Schedule(continuation, flowContext: true);

    public void UnsafeOnCompleted(Action continuation) => Schedule(continuation, flowContext: false);

    private void Schedule(Action continuation, bool flowContext)
    {
        var context = SynchronizationContext.Current;
        if (context is not null && context.GetType() != typeof(SynchronizationContext) || TaskScheduler.Current != TaskScheduler.Default)
        {
            // Posted to the context or scheduler, never run inline: what a TaskAwaiter does anyway.
            if (flowContext) _value.GetAwaiter().OnCompleted(continuation);
            else _value.GetAwaiter().UnsafeOnCompleted(continuation);
            return;
        }
        // Not ExecuteSynchronously: queued to the thread pool once the value is known.
        _value.ContinueWith(static (_, c) => ((Action)c!)(), continuation, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
    }
}

/// <summary>
/// Writes an <see cref="ObjectRef{T}"/> inside a value as its id, with its serialized value when that is already known
/// (small values inline, large ones as their store envelope), and keeps the object in this process's directory so a
/// receiver can still fetch it later. Reads it back as a borrowed reference: ready at once when the value travelled
/// with it, else fetched from the process that sent it (Ray's nested refs). So refs a task returns inside its result,
/// once ready, are readable by whoever gets the result.
/// </summary>
internal sealed class ObjectRefFormatter<T> : MessagePack.Formatters.IMessagePackFormatter<ObjectRef<T>?>
{
    public void Serialize(ref MessagePack.MessagePackWriter writer, ObjectRef<T>? value, MessagePack.MessagePackSerializerOptions options)
    {
        if (value is null)
        {
            writer.WriteNil();
            return;
        }
        Ray.CurrentRuntime.Objects.Register(value.Id, value.Bytes);
        var ready = value.Bytes.IsCompletedSuccessfully;
        writer.WriteArrayHeader(ready ? 2 : 1);
        writer.Write(value.Id);
        if (ready) writer.Write(value.Bytes.Result.Span);
    }

    public ObjectRef<T>? Deserialize(ref MessagePack.MessagePackReader reader, MessagePack.MessagePackSerializerOptions options)
    {
        if (reader.TryReadNil()) return null;
        var count = reader.ReadArrayHeader();
        var id = reader.ReadString()!;
        if (count >= 2 && reader.ReadBytes() is { } bytes)
        {
            for (var i = 2; i < count; i++) reader.Skip();
            return new ObjectRef<T>(id, Task.FromResult(UnsafeByteOperations.UnsafeWrap(System.Buffers.BuffersExtensions.ToArray(bytes))));
        }
        for (var i = 1; i < count; i++) reader.Skip();
        return new ObjectRef<T>(id, Ray.CurrentRuntime.Objects.Fetch(id));
    }
}

/// <summary>
/// A task argument: a value, or a reference to one (<see cref="ObjectRef{T}"/>) that is resolved before the task runs.
/// Converted implicitly from either, so <c>f.Remote(1, someRef)</c> reads naturally.
/// </summary>
public readonly struct Arg<T>
{
    internal Arg(T value, ObjectRef<T>? reference)
    {
        Value = value;
        Reference = reference;
    }

    internal T Value { get; }
    internal ObjectRef<T>? Reference { get; }

    public static implicit operator Arg<T>(T value) => new(value, null);
    public static implicit operator Arg<T>(ObjectRef<T> reference) => new(default!, reference ?? throw new ArgumentNullException(nameof(reference)));
}

/// <summary>An exception thrown inside a task, rethrown where its result is read.</summary>
public sealed class RayTaskException : RayException
{
    internal RayTaskException(TaskError error)
        : base($"{error.ExceptionType}: {error.Message} (in a task on {error.NodeIpAddress}, worker pid {error.Pid})\n--- remote stack trace ---\n{error.StackTrace}")
    {
        RemoteExceptionType = error.ExceptionType;
        RemoteMessage = error.Message;
        RemoteStackTrace = error.StackTrace;
        NodeIpAddress = error.NodeIpAddress;
        WorkerId = error.WorkerId;
    }

    /// <summary>Full name of the exception's type in the task, for example <c>System.InvalidOperationException</c>.</summary>
    public string RemoteExceptionType { get; }
    public string RemoteMessage { get; }
    public string RemoteStackTrace { get; }
    public string NodeIpAddress { get; }
    public string WorkerId { get; }
}

/// <summary>
/// A value could not be stored: the node's object store is full of objects that are in use, even after evicting
/// copies and spilling to disk. The message names the sizes.
/// </summary>
public sealed class ObjectStoreFullException(string message) : RayException(message);

/// <summary>
/// A task's worker process died (or was disconnected) under it on every attempt its <see cref="TaskOptions.MaxRetries"/>
/// allowed. The message says how many attempts ran and where.
/// </summary>
public sealed class WorkerCrashedException : RayException
{
    internal WorkerCrashedException(string message, Exception inner, int attempts) : base(message, inner) => Attempts = attempts;

    /// <summary>How many times the task was started.</summary>
    public int Attempts { get; }
}

/// <summary>
/// The node running a task died under it on its last allowed attempt (its raylet no longer answers). The message
/// says how many attempts ran and where.
/// </summary>
public sealed class NodeDiedException : RayException
{
    internal NodeDiedException(string message, Exception inner, int attempts) : base(message, inner) => Attempts = attempts;

    /// <summary>How many times the task was started.</summary>
    public int Attempts { get; }
}

/// <summary>
/// A borrowed reference (one that arrived inside a value from another process) could not be read because the process
/// that owns the object died before its value was known. Objects live only as long as their owner, as in Ray.
/// </summary>
public sealed class OwnerDiedException : RayException
{
    internal OwnerDiedException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>A stored value could not be read: every copy is gone (freed, or its node died), or it could not be transferred.</summary>
public sealed class ObjectLostException(string message, Exception inner) : RayException(message, inner);

/// <summary><see cref="Ray.Get{T}(ObjectRef{T}, TimeSpan?)"/> ran out of time before the value was ready.</summary>
public sealed class GetTimeoutException(string message) : RayException(message);
