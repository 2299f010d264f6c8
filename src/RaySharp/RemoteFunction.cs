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

    internal Dictionary<string, double> Shape()
    {
        var shape = new Dictionary<string, double>(StringComparer.Ordinal);
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
public abstract class RemoteFunctionBase
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
    internal string[] ParameterNames { get; }
    public TaskOptions Options { get; }

    private protected static ByteString Arg<TArg>(TArg value, string name)
    {
        try
        {
            return ByteString.CopyFrom(ValueSerializer.Serialize(value));
        }
        catch (Exception e) when (e is MessagePack.MessagePackSerializationException or NotSupportedException or InvalidOperationException)
        {
            throw new ArgumentException($"argument '{name}' of type {typeof(TArg)} cannot be serialized for a remote task: {e.GetBaseException().Message}", name, e);
        }
    }

    private protected ObjectRef<TResult> Submit<TResult>(params ByteString[] args)
    {
        var session = Ray.DriverSessionForSubmit();
        var request = new PushTaskRequest
        {
            JobId = session.JobId,
            TaskId = UniqueId.New(),
            Function = Descriptor,
            Name = Options.Name ?? Descriptor.Method,
        };
        request.Args.Add(args);
        return new ObjectRef<TResult>(request.TaskId, session.Submitter.SubmitAsync(request, Options.Shape()));
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
    public ObjectRef<TResult> Remote(T1 a1) => Submit<TResult>(Arg(a1, ParameterNames[0]));
}

public sealed class RemoteFunction<T1, T2, TResult> : RemoteFunctionBase
{
    internal RemoteFunction(Delegate f, TaskOptions o) : base(f, o) { }
    private RemoteFunction(RemoteFunction<T1, T2, TResult> other, TaskOptions o) : base(other, o) { }
    public RemoteFunction<T1, T2, TResult> WithOptions(TaskOptions options) => new(this, options);
    public ObjectRef<TResult> Remote(T1 a1, T2 a2) => Submit<TResult>(Arg(a1, ParameterNames[0]), Arg(a2, ParameterNames[1]));
}

public sealed class RemoteFunction<T1, T2, T3, TResult> : RemoteFunctionBase
{
    internal RemoteFunction(Delegate f, TaskOptions o) : base(f, o) { }
    private RemoteFunction(RemoteFunction<T1, T2, T3, TResult> other, TaskOptions o) : base(other, o) { }
    public RemoteFunction<T1, T2, T3, TResult> WithOptions(TaskOptions options) => new(this, options);
    public ObjectRef<TResult> Remote(T1 a1, T2 a2, T3 a3) =>
        Submit<TResult>(Arg(a1, ParameterNames[0]), Arg(a2, ParameterNames[1]), Arg(a3, ParameterNames[2]));
}
