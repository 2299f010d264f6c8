using System.Runtime.CompilerServices;
using RaySharp.CoreWorker.Serialization;
using RaySharp.CoreWorker.Submission;
using RaySharp.Rpc.Protocol;

namespace RaySharp;

/// <summary>
/// A typed reference to a value that a task will produce (or has produced). Await it, or read it with
/// <see cref="Ray.Get{T}(ObjectRef{T}, TimeSpan?)"/>. The driver that submitted the task owns the value.
/// </summary>
public sealed class ObjectRef<T>
{
    private readonly Lazy<Task<T>> _value;

    internal ObjectRef(string id, Task<PushTaskReply> reply)
    {
        Id = id;
        _value = new Lazy<Task<T>>(() => ResolveAsync(reply));
    }

    /// <summary>The id of the object (the task that produces it).</summary>
    public string Id { get; }

    /// <summary>True once the value (or the task's failure) is known.</summary>
    public bool IsReady => _value.Value.IsCompleted;

    internal Task<T> Value => _value.Value;

    public TaskAwaiter<T> GetAwaiter() => Value.GetAwaiter();

    private static async Task<T> ResolveAsync(Task<PushTaskReply> pending)
    {
        PushTaskReply reply;
        try
        {
            reply = await pending.ConfigureAwait(false);
        }
        catch (WorkerCrashedException e)
        {
            throw new RayException("The task's worker died before it answered: " + e.Message, e);
        }
        catch (InvalidOperationException e)
        {
            throw new RayException("The task could not be scheduled: " + e.Message, e);
        }
        if (reply.Error is { } error) throw new RayTaskException(error);
        return ValueSerializer.Deserialize<T>(reply.Result.Memory);
    }

    public override string ToString() => $"ObjectRef<{typeof(T).Name}>({Id})";
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

/// <summary><see cref="Ray.Get{T}(ObjectRef{T}, TimeSpan?)"/> ran out of time before the value was ready.</summary>
public sealed class GetTimeoutException(string message) : RayException(message);
