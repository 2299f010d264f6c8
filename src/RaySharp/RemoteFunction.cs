using Google.Protobuf;
using RaySharp.Common;
using RaySharp.CoreWorker.Execution;
using RaySharp.CoreWorker.Serialization;
using RaySharp.Rpc.Protocol;

namespace RaySharp;

/// <summary>Per-call or per-function options of a remote task. Each default is the value used when unset.</summary>
public sealed record TaskOptions
{
    /// <summary>CPUs the task holds while it runs. Default 1.</summary>
    public double NumCpus { get; init; } = 1;

    /// <summary>GPUs the task holds while it runs. Default 0.</summary>
    public double NumGpus { get; init; }

    /// <summary>Custom resources the task holds while it runs. Default none.</summary>
    public IReadOnlyDictionary<string, double>? Resources { get; init; }

    /// <summary>A name for logs. Default: the method's name.</summary>
    public string? Name { get; init; }

    /// <summary>Times a task is re-run when its worker or node dies under it (not when it throws); -1: no limit. Default 3.</summary>
    public int MaxRetries { get; init; } = 3;

    /// <summary>
    /// Whether an exception thrown by the task is retried too (within <see cref="MaxRetries"/>), as Ray's
    /// <c>retry_exceptions=True</c>. Default false: the exception goes to the caller at once.
    /// </summary>
    public bool RetryExceptions { get; init; }

    /// <summary>
    /// Retry only exceptions of these types (or types derived from them), as Ray's <c>retry_exceptions=[...]</c>.
    /// Setting it implies <see cref="RetryExceptions"/>. Default none.
    /// </summary>
    public IReadOnlyList<Type>? RetryExceptionTypes { get; init; }

    /// <summary>The test that decides whether a task's exception is retried; null when none is.</summary>
    internal Func<TaskError, bool>? RetryPredicate()
    {
        if (RetryExceptionTypes is { } types)
        {
            foreach (var t in types)
            {
                if (!typeof(Exception).IsAssignableFrom(t))
                    throw new ArgumentException($"TaskOptions.RetryExceptionTypes lists {t.FullName}, which is not an exception type; list exception types only");
            }
            var names = types.Select(t => t.FullName ?? t.Name).ToHashSet(StringComparer.Ordinal);
            return error => error.ExceptionTypes.Any(names.Contains);
        }
        return RetryExceptions ? static _ => true : null;
    }

    /// <summary>Where tasks go. Default <see cref="SchedulingStrategy.Default"/> (pack the local node while lightly used, then spread).</summary>
    public SchedulingStrategy Strategy { get; init; } = SchedulingStrategy.Default;

    internal Dictionary<string, double> Shape()
    {
        var shape = new Dictionary<string, double>(StringComparer.Ordinal);
        if (MaxRetries < -1) throw new ArgumentException($"TaskOptions.MaxRetries must be -1 (no limit) or more, got {MaxRetries}");
        if (NumCpus > 0) shape[ResourceSet.Cpu] = NumCpus;
        if (NumGpus > 0) shape[ResourceSet.Gpu] = NumGpus;
        if (Resources is not null)
        {
            foreach (var (k, v) in Resources)
            {
                if (v < 0 || !double.IsFinite(v)) throw new ArgumentException($"TaskOptions.Resources[\"{k}\"] = {v} must be a non-negative number");
                if (v > 0) shape[k] = v;
            }
        }
        return shape;
    }
}

/// <summary>What every remote function shares: its descriptor, its options, and submission.</summary>
public abstract class RemoteFunctionBase : CoreWorker.Objects.ILineageSource
{
    private protected RemoteFunctionBase(Delegate function, TaskOptions options)
    {
        Descriptor = FunctionDescriptors.For(function);
        ParameterNames = function.Method.GetParameters().Select(p => p.Name ?? "arg").ToArray();
        Options = options;
    }

    private protected RemoteFunctionBase(RemoteFunctionBase other, TaskOptions options)
    {
        Descriptor = other.Descriptor;
        ParameterNames = other.ParameterNames;
        Options = options;
    }

    internal FunctionDescriptor Descriptor { get; }

    /// <summary>A readable name for compiler-generated methods: local function <c>&lt;Main&gt;g__Add|0_1</c> is <c>Add</c>.</summary>
    private static string DisplayName(string method)
    {
        var local = System.Text.RegularExpressions.Regex.Match(method, @"g__(?<name>[^|]+)\|");
        if (local.Success) return local.Groups["name"].Value;
        return method.Contains("b__", StringComparison.Ordinal) ? "lambda" : method;
    }
    internal string[] ParameterNames { get; }
    public TaskOptions Options { get; }

    private protected static Task<ByteString> Serialize<TArg>(Arg<TArg> arg, string name) => TaskArgs.Serialize(arg, name, "a remote task");

    private protected ObjectRef<TResult> Submit<TResult>(params Task<ByteString>[] args)
    {
        var (jobId, runtime) = Ray.SubmitContext();
        var submitter = runtime.Tasks;
        var request = new PushTaskRequest
        {
            JobId = jobId,
            TaskId = UniqueId.New(),
            Name = Options.Name ?? (_displayName ??= DisplayName(Descriptor.Method)),
        };
        FunctionDescriptors.SetFunction(request, Descriptor);
        var placement = PlacementFor(Options.Strategy.Kind == SchedulingStrategyKind.SchedulingDefault ? RunningTask.Current : null);
        placement.Stamp(request);
        var reply = args.All(a => a.IsCompletedSuccessfully)
            ? SubmitNow(submitter, request, placement, Options.MaxRetries, args)
            : SubmitWhenReadyAsync(submitter, request, placement, Options.MaxRetries, args);
        return new ObjectRef<TResult>(request.TaskId, ObjectRef<TResult>.FromReply(reply, runtime, request, this));
    }

    int CoreWorker.Objects.ILineageSource.MaxRetries => Options.MaxRetries;

    Task<PushTaskReply> CoreWorker.Objects.ILineageSource.ResubmitAsync(CoreWorker.Submission.TaskSubmitter submitter, PushTaskRequest request)
    {
        // A task captured by its parent's group was stamped with it: it runs again in that group.
        var placement = Options.Strategy.Kind == SchedulingStrategyKind.SchedulingDefault && request.CaptureChildTasks
            ? Placement.Of(Options with { Strategy = SchedulingStrategy.Captured(request.PlacementGroupId) })
            : _placement ??= Placement.Of(Options);
        return submitter.SubmitAsync(request, placement.Shape, placement.Strategy, Options.MaxRetries, placement.QueueKey, placement.RetryOn);
    }

    /// <summary>
    /// The placement of one call: these options' (built once), or, for a default-strategy call made inside a task or
    /// actor whose placement group captures its children, the same options in that group (any bundle).
    /// </summary>
    private Placement PlacementFor(RunningTask? parent) => parent is { CaptureChildTasks: true, PlacementGroupId: { } group }
        ? Placement.Of(Options with { Strategy = SchedulingStrategy.Captured(group) })
        : _placement ??= Placement.Of(Options);

    /// <summary>The resource shape, strategy and queue key of these options: the same for every call, so built once.</summary>
    private sealed record Placement(Dictionary<string, double> Shape, Rpc.Protocol.SchedulingStrategy Strategy, string QueueKey, Func<TaskError, bool>? RetryOn)
    {
        public static Placement Of(TaskOptions options)
        {
            var shape = options.Strategy.Resources(options.Shape());
            var strategy = options.Strategy.ToProto();
            return new Placement(shape, strategy, CoreWorker.Submission.TaskSubmitter.QueueKey(shape, strategy), options.RetryPredicate());
        }

        /// <summary>Tells the worker which group the task runs in (for its children and <see cref="Ray.GetCurrentPlacementGroup"/>).</summary>
        public void Stamp(PushTaskRequest request)
        {
            if (Strategy.Kind != SchedulingStrategyKind.SchedulingPlacementGroup) return;
            request.PlacementGroupId = Strategy.PlacementGroupId;
            request.CaptureChildTasks = Strategy.CaptureChildTasks;
        }
    }

    private Placement? _placement;
    private string? _displayName;

    private static Task<PushTaskReply> SubmitNow(CoreWorker.Submission.TaskSubmitter submitter, PushTaskRequest request, Placement placement, int maxRetries, Task<ByteString>[] args)
    {
        foreach (var a in args) request.Args.Add(a.Result);
        return submitter.SubmitAsync(request, placement.Shape, placement.Strategy, maxRetries, placement.QueueKey, placement.RetryOn);
    }

    /// <summary>A task with references among its arguments is scheduled once they are all ready; a failed one fails it too.</summary>
    private static async Task<PushTaskReply> SubmitWhenReadyAsync(CoreWorker.Submission.TaskSubmitter submitter, PushTaskRequest request, Placement placement, int maxRetries, Task<ByteString>[] args)
    {
        foreach (var a in args) request.Args.Add(await a.ConfigureAwait(false));
        return await submitter.SubmitAsync(request, placement.Shape, placement.Strategy, maxRetries, placement.QueueKey, placement.RetryOn).ConfigureAwait(false);
    }
}

public sealed class RemoteFunction<TResult> : RemoteFunctionBase
{
    internal RemoteFunction(Delegate f, TaskOptions o) : base(f, o) { }
    private RemoteFunction(RemoteFunction<TResult> other, TaskOptions o) : base(other, o) { }
    public RemoteFunction<TResult> WithOptions(TaskOptions options) => new(this, options);
    public ObjectRef<TResult> Remote() => Submit<TResult>();
}

public sealed class RemoteFunction<T1, TResult> : RemoteFunctionBase
{
    internal RemoteFunction(Delegate f, TaskOptions o) : base(f, o) { }
    private RemoteFunction(RemoteFunction<T1, TResult> other, TaskOptions o) : base(other, o) { }
    public RemoteFunction<T1, TResult> WithOptions(TaskOptions options) => new(this, options);
    public ObjectRef<TResult> Remote(Arg<T1> a1) => Submit<TResult>(Serialize(a1, ParameterNames[0]));
}

public sealed class RemoteFunction<T1, T2, TResult> : RemoteFunctionBase
{
    internal RemoteFunction(Delegate f, TaskOptions o) : base(f, o) { }
    private RemoteFunction(RemoteFunction<T1, T2, TResult> other, TaskOptions o) : base(other, o) { }
    public RemoteFunction<T1, T2, TResult> WithOptions(TaskOptions options) => new(this, options);
    public ObjectRef<TResult> Remote(Arg<T1> a1, Arg<T2> a2) => Submit<TResult>(Serialize(a1, ParameterNames[0]), Serialize(a2, ParameterNames[1]));
}

public sealed class RemoteFunction<T1, T2, T3, TResult> : RemoteFunctionBase
{
    internal RemoteFunction(Delegate f, TaskOptions o) : base(f, o) { }
    private RemoteFunction(RemoteFunction<T1, T2, T3, TResult> other, TaskOptions o) : base(other, o) { }
    public RemoteFunction<T1, T2, T3, TResult> WithOptions(TaskOptions options) => new(this, options);
    public ObjectRef<TResult> Remote(Arg<T1> a1, Arg<T2> a2, Arg<T3> a3) =>
        Submit<TResult>(Serialize(a1, ParameterNames[0]), Serialize(a2, ParameterNames[1]), Serialize(a3, ParameterNames[2]));
}


/// <summary>How arguments of tasks, actor constructors and actor calls become bytes.</summary>
internal static class TaskArgs
{
    /// <summary>A serialized argument now, or the bytes of a referenced object once it is ready.</summary>
    public static Task<ByteString> Serialize<TArg>(Arg<TArg> arg, string name, string forWhat)
    {
        if (arg.Reference is { } reference)
        {
            // A ref whose object was rebuilt since travels with its new location.
            return reference.Bytes.IsCompletedSuccessfully && CoreWorker.Objects.LocalObjectStore.IsStored(reference.Bytes.Result)
                ? Task.FromResult(Ray.CurrentRuntime.Lineage.Latest(reference.Bytes.Result))
                : reference.Bytes;
        }
        try
        {
            // A large value goes into the object store once and travels as a reference, freed when the task is done.
            var (jobId, runtime) = Ray.SubmitContext();
            var bytes = runtime.Store.SerializeAsync(typeof(TArg), arg.Value, jobId);
            return bytes.IsCompletedSuccessfully ? Task.FromResult(bytes.Result) : ObjectRef<TArg>.MapStoreErrors(bytes.AsTask());
        }
        catch (Exception e) when (e is MessagePack.MessagePackSerializationException or NotSupportedException or InvalidOperationException)
        {
            throw new ArgumentException($"argument '{name}' of type {typeof(TArg)} cannot be serialized for {forWhat}: {e.GetBaseException().Message}", name, e);
        }
    }

    /// <summary>Fills the request's arguments, now when all are values or ready refs, else once every ref is ready.</summary>
    public static async ValueTask Fill(PushTaskRequest request, Task<ByteString>[] args)
    {
        foreach (var a in args) request.Args.Add(a.IsCompletedSuccessfully ? a.Result : await a.ConfigureAwait(false));
    }
}
