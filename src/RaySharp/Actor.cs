using System.ComponentModel;
using Google.Protobuf;
using Grpc.Core;
using RaySharp.Common;
using RaySharp.CoreWorker.Execution;
using RaySharp.CoreWorker.Submission;
using RaySharp.Rpc.Protocol;

namespace RaySharp;

/// <summary>An actor class with its constructor (a factory lambda): <c>.Remote(...)</c> creates one actor.</summary>
public abstract class ActorClassBase<TActor> where TActor : class
{
    private readonly string[] _parameterNames;

    private protected ActorClassBase(Delegate factory, ActorOptions options)
    {
        Factory = factory;
        Descriptor = FunctionDescriptors.For(factory);
        _parameterNames = factory.Method.GetParameters().Select(p => p.Name ?? "arg").ToArray();
        Options = options;
    }

    internal FunctionDescriptor Descriptor { get; }
    internal Delegate Factory { get; }
    public ActorOptions Options { get; }

    private protected Task<ByteString> Serialize<TArg>(Arg<TArg> arg, int index) =>
        TaskArgs.Serialize(arg, _parameterNames[index], $"the constructor of actor {typeof(TActor).Name}");

    private protected ActorHandle<TActor> Create(params Task<ByteString>[] args)
    {
        var options = Options;
        // A default-strategy actor made inside a task or actor whose group captures its children goes in that group.
        if (options.Strategy.Kind == SchedulingStrategyKind.SchedulingDefault && RunningTask.Current is { CaptureChildTasks: true, PlacementGroupId: { } group })
            options = options with { Strategy = SchedulingStrategy.Captured(group) };
        var (held, placement) = options.Shapes();
        held = options.Strategy.Resources(held);
        placement = options.Strategy.Resources(placement);
        var context = Ray.ActorContext();
        var actorId = UniqueId.New();
        var ns = options.Namespace ?? context.Namespace;
        var request = new RegisterActorRequest
        {
            Info = new ActorInfo
            {
                ActorId = actorId,
                JobId = context.JobId,
                ClassName = typeof(TActor).FullName ?? typeof(TActor).Name,
                Name = options.Name ?? "",
                Namespace = ns,
                Detached = options.Lifetime == ActorLifetime.Detached,
                Lightweight = options.Lightweight,
                MaxRestarts = options.MaxRestarts,
            },
            Creation = new PushTaskRequest
            {
                JobId = context.JobId,
                TaskId = actorId,
                Function = Descriptor,
                Name = typeof(TActor).Name + ".ctor",
                ActorId = actorId,
                MaxConcurrency = options.MaxConcurrency ?? 0,
                ClassName = typeof(TActor).FullName ?? typeof(TActor).Name,
            },
            Strategy = options.Strategy.ToProto(),
            GetIfExists = options.GetIfExists,
        };
        if (options.Strategy.Group is { } inGroup)
        {
            request.Creation.PlacementGroupId = inGroup.Id;
            request.Creation.CaptureChildTasks = options.Strategy.CaptureChildTasks;
        }
        request.Resources.Add(held);
        request.PlacementResources.Add(placement);
        var registration = RegisterAsync(context, request, args);
        if (options.Name is null)
        {
            // Unnamed actors are created in the background, as Ray does: calls queue until the actor is alive.
            context.Submitter.TrackRegistration(actorId, registration);
            var token = options.Lifetime == ActorLifetime.Owned ? new ActorLifetimeToken(actorId, context.Submitter) : null;
            return new ActorHandle<TActor>(actorId, options.MaxTaskRetries, options.MaxPendingCalls) { Token = token };
        }
        // A named actor's registration is awaited, so a taken name fails here and GetIfExists can return the existing one.
        RegisterActorReply reply;
        try
        {
            reply = registration.GetAwaiter().GetResult();
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.AlreadyExists)
        {
            throw new ArgumentException(e.Status.Detail, nameof(ActorOptions.Name), e);
        }
        if (reply.Existed && reply.ClassName != request.Info.ClassName)
            throw new ArgumentException($"the actor named '{options.Name}' in namespace '{ns}' is a {reply.ClassName}, not a {request.Info.ClassName}");
        return new ActorHandle<TActor>(reply.ActorId, options.MaxTaskRetries, options.MaxPendingCalls);
    }

    private static async Task<RegisterActorReply> RegisterAsync(ActorCallerContext context, RegisterActorRequest request, Task<ByteString>[] args)
    {
        await TaskArgs.Fill(request.Creation, args).ConfigureAwait(false);
        request.OwnerRayletAddress = await context.LocalRaylet().ConfigureAwait(false);
        return await context.Submitter.Gcs.Actors.RegisterActorAsync(request).ResponseAsync.ConfigureAwait(false);
    }
}

public sealed class ActorClass<TActor> : ActorClassBase<TActor> where TActor : class
{
    internal ActorClass(Delegate factory, ActorOptions options) : base(factory, options) { }
    public ActorClass<TActor> WithOptions(ActorOptions options) => new(Factory, options);
    public ActorHandle<TActor> Remote() => Create();
}

public sealed class ActorClass<T1, TActor> : ActorClassBase<TActor> where TActor : class
{
    internal ActorClass(Delegate factory, ActorOptions options) : base(factory, options) { }
    public ActorClass<T1, TActor> WithOptions(ActorOptions options) => new(Factory, options);
    public ActorHandle<TActor> Remote(Arg<T1> a1) => Create(Serialize(a1, 0));
}

public sealed class ActorClass<T1, T2, TActor> : ActorClassBase<TActor> where TActor : class
{
    internal ActorClass(Delegate factory, ActorOptions options) : base(factory, options) { }
    public ActorClass<T1, T2, TActor> WithOptions(ActorOptions options) => new(Factory, options);
    public ActorHandle<TActor> Remote(Arg<T1> a1, Arg<T2> a2) => Create(Serialize(a1, 0), Serialize(a2, 1));
}

public sealed class ActorClass<T1, T2, T3, TActor> : ActorClassBase<TActor> where TActor : class
{
    internal ActorClass(Delegate factory, ActorOptions options) : base(factory, options) { }
    public ActorClass<T1, T2, T3, TActor> WithOptions(ActorOptions options) => new(Factory, options);
    public ActorHandle<TActor> Remote(Arg<T1> a1, Arg<T2> a2, Arg<T3> a3) => Create(Serialize(a1, 0), Serialize(a2, 1), Serialize(a3, 2));
}

/// <summary>
/// A method of an actor class, described once (by the generated proxy, on first use) so calls carry no reflection.
/// Not for direct use: call the actor's methods on its <see cref="ActorHandle{TActor}"/>.
/// </summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class ActorMethod
{
    private ActorMethod(FunctionDescriptor descriptor, string name, string[] parameterNames, bool lambda)
    {
        Descriptor = descriptor;
        Name = name;
        ParameterNames = parameterNames;
        IsLambda = lambda;
    }

    internal FunctionDescriptor Descriptor { get; }
    internal string Name { get; }
    internal string[] ParameterNames { get; }
    internal bool IsLambda { get; }

    public static ActorMethod Of<TActor>(string name, string[] parameterNames, params Type[] parameterTypes) =>
        new(FunctionDescriptors.ForActorMethod(typeof(TActor), name, parameterTypes), typeof(TActor).Name + "." + name, parameterNames, lambda: false);

    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<System.Reflection.MethodInfo, ActorMethod> s_lambdas = new();

    /// <summary>A lambda whose first parameter is the actor: <c>handle.Call((Counter c, int n) => c.Add(n), 5)</c>.</summary>
    internal static ActorMethod OfLambda<TActor>(Delegate lambda) =>
        s_lambdas.GetValue(lambda.Method, m => new ActorMethod(FunctionDescriptors.For(lambda), typeof(TActor).Name + ".lambda",
            m.GetParameters().Skip(1).Select(p => p.Name ?? "arg").ToArray(), lambda: true));
}

/// <summary>
/// A reference to a live actor. Call its methods directly (<c>counter.Increment(5)</c>: typed proxies generated at
/// build time for every actor class the program uses) or through a lambda (<c>counter.Call(c => c.Value)</c>). Each
/// call returns an <see cref="ObjectRef{T}"/>; calls from one caller run in the order they were made. Handles can be
/// passed to tasks and other actors.
/// </summary>
[MessagePack.MessagePackFormatter(typeof(ActorHandleFormatter<>))]
public sealed class ActorHandle<TActor> where TActor : class
{
    internal ActorHandle(string actorId, int maxTaskRetries, int maxPendingCalls)
    {
        ActorId = actorId;
        MaxTaskRetries = maxTaskRetries;
        MaxPendingCalls = maxPendingCalls;
    }

    public string ActorId { get; }

    /// <summary>Set on the handle that created an unnamed owned actor: when it is collected, so is the actor.</summary>
    internal ActorLifetimeToken? Token { get; init; }

    internal int MaxTaskRetries { get; }
    internal int MaxPendingCalls { get; }

    public override string ToString() => $"ActorHandle<{typeof(TActor).Name}>({ActorId})";

    private ObjectRef<TResult> Submit<TResult>(ActorMethod method, params Task<ByteString>[] args)
    {
        var context = Ray.ActorContext();
        var request = new PushTaskRequest
        {
            JobId = context.JobId,
            TaskId = UniqueId.New(),
            ActorId = ActorId,
            Name = method.Name,
            LambdaCall = method.IsLambda,
        };
        FunctionDescriptors.SetFunction(request, method.Descriptor);
        Task<ByteString> result;
        try
        {
            // A call in flight keeps the actor's handle alive (the submitter holds Token until the reply), as a pending
            // task holds a reference in Ray.
            result = args.All(a => a.IsCompletedSuccessfully)
                ? SubmitNow(context.Submitter, request, args)
                : SubmitWhenReadyAsync(context.Submitter, request, args);
        }
        catch (PendingCallsLimitCoreException e)
        {
            throw new PendingCallsLimitExceededException(e.Message);
        }
        return new ObjectRef<TResult>(request.TaskId, result);
    }

    private Task<ByteString> SubmitNow(ActorTaskSubmitter submitter, PushTaskRequest request, Task<ByteString>[] args)
    {
        foreach (var a in args) request.Args.Add(a.Result);
        return submitter.SubmitAsync(ActorId, request, MaxTaskRetries, MaxPendingCalls, TaskOutcome.Instance, keepAlive: Token);
    }

    private async Task<ByteString> SubmitWhenReadyAsync(ActorTaskSubmitter submitter, PushTaskRequest request, Task<ByteString>[] args)
    {
        // Refs among the arguments are resolved first; order with later calls is kept only among ready calls, as in Ray.
        try
        {
            await TaskArgs.Fill(request, args).ConfigureAwait(false);
        }
        catch (Exception e) when (TaskOutcome.ApiFailure(e) is { } failure)
        {
            throw failure;
        }
        return await submitter.SubmitAsync(ActorId, request, MaxTaskRetries, MaxPendingCalls, TaskOutcome.Instance, keepAlive: Token).ConfigureAwait(false);
    }

    private static Task<ByteString> Arg<T>(ActorMethod method, Arg<T> arg, int index) =>
        TaskArgs.Serialize(arg, method.ParameterNames[index], method.Name);

    // ---- Used by generated proxies ----

    [EditorBrowsable(EditorBrowsableState.Never)]
    public ObjectRef<TResult> Invoke<TResult>(ActorMethod method) => Submit<TResult>(method);

    [EditorBrowsable(EditorBrowsableState.Never)]
    public ObjectRef<TResult> Invoke<T1, TResult>(ActorMethod method, Arg<T1> a1) => Submit<TResult>(method, Arg(method, a1, 0));

    [EditorBrowsable(EditorBrowsableState.Never)]
    public ObjectRef<TResult> Invoke<T1, T2, TResult>(ActorMethod method, Arg<T1> a1, Arg<T2> a2) =>
        Submit<TResult>(method, Arg(method, a1, 0), Arg(method, a2, 1));

    [EditorBrowsable(EditorBrowsableState.Never)]
    public ObjectRef<TResult> Invoke<T1, T2, T3, TResult>(ActorMethod method, Arg<T1> a1, Arg<T2> a2, Arg<T3> a3) =>
        Submit<TResult>(method, Arg(method, a1, 0), Arg(method, a2, 1), Arg(method, a3, 2));

    [EditorBrowsable(EditorBrowsableState.Never)]
    public ObjectRef<TResult> Invoke<T1, T2, T3, T4, TResult>(ActorMethod method, Arg<T1> a1, Arg<T2> a2, Arg<T3> a3, Arg<T4> a4) =>
        Submit<TResult>(method, Arg(method, a1, 0), Arg(method, a2, 1), Arg(method, a3, 2), Arg(method, a4, 3));

    // ---- Explicit lambda form: a lambda that captures nothing, taking the actor first ----

    public ObjectRef<TResult> Call<TResult>(Func<TActor, TResult> method) => Submit<TResult>(ActorMethod.OfLambda<TActor>(method));

    public ObjectRef<TResult> Call<TResult>(Func<TActor, Task<TResult>> method) => Submit<TResult>(ActorMethod.OfLambda<TActor>(method));

    public ObjectRef<object?> Call(Action<TActor> method) => Submit<object?>(ActorMethod.OfLambda<TActor>(method));

    public ObjectRef<TResult> Call<T1, TResult>(Func<TActor, T1, TResult> method, Arg<T1> a1)
    {
        var m = ActorMethod.OfLambda<TActor>(method);
        return Submit<TResult>(m, Arg(m, a1, 0));
    }

    public ObjectRef<TResult> Call<T1, TResult>(Func<TActor, T1, Task<TResult>> method, Arg<T1> a1)
    {
        var m = ActorMethod.OfLambda<TActor>(method);
        return Submit<TResult>(m, Arg(m, a1, 0));
    }

    public ObjectRef<TResult> Call<T1, T2, TResult>(Func<TActor, T1, T2, TResult> method, Arg<T1> a1, Arg<T2> a2)
    {
        var m = ActorMethod.OfLambda<TActor>(method);
        return Submit<TResult>(m, Arg(m, a1, 0), Arg(m, a2, 1));
    }
}

/// <summary>Writes an <see cref="ActorHandle{TActor}"/> inside a value as its id and call options; read back, it calls the same actor.</summary>
internal sealed class ActorHandleFormatter<TActor> : MessagePack.Formatters.IMessagePackFormatter<ActorHandle<TActor>?> where TActor : class
{
    public void Serialize(ref MessagePack.MessagePackWriter writer, ActorHandle<TActor>? value, MessagePack.MessagePackSerializerOptions options)
    {
        if (value is null)
        {
            writer.WriteNil();
            return;
        }
        // Passed on: someone else may call it now, and this process cannot count their handles.
        if (value.Token is { } token) token.Escaped = true;
        writer.WriteArrayHeader(3);
        writer.Write(value.ActorId);
        writer.Write(value.MaxTaskRetries);
        writer.Write(value.MaxPendingCalls);
    }

    public ActorHandle<TActor>? Deserialize(ref MessagePack.MessagePackReader reader, MessagePack.MessagePackSerializerOptions options)
    {
        if (reader.TryReadNil()) return null;
        reader.ReadArrayHeader();
        return new ActorHandle<TActor>(reader.ReadString()!, reader.ReadInt32(), reader.ReadInt32());
    }
}

/// <summary>
/// Ends an unnamed owned actor when the handle that created it (and every copy of that handle object) is garbage,
/// as Ray ends actors whose handles are all out of scope. A handle that was passed to a task or actor has escaped:
/// its actor then lives until its owner exits or it is killed, since this process cannot count handles elsewhere.
/// </summary>
internal sealed class ActorLifetimeToken(string actorId, ActorTaskSubmitter submitter)
{
    public volatile bool Escaped;

    ~ActorLifetimeToken()
    {
        if (!Escaped && !Environment.HasShutdownStarted) submitter.ReleaseUnreferenced(actorId);
    }
}

/// <summary>An actor, as <see cref="Ray.ListActors"/> reports it.</summary>
public sealed record ActorDescription(
    string ActorId,
    string ClassName,
    string? Name,
    string Namespace,
    string State,
    string JobId,
    string? NodeId,
    string? NodeIpAddress,
    int? Pid,
    int NumRestarts,
    bool Detached,
    bool Lightweight,
    string? DeathCause);

/// <summary>
/// The actor is dead and will not come back: it was killed, its constructor threw, its process or node died with no
/// restarts left, or its owner exited. <see cref="Cause"/> says which.
/// </summary>
public sealed class ActorDiedException : RayException
{
    internal ActorDiedException(string actorId, string cause, Exception inner)
        : base($"The actor {actorId} died: {cause}", inner)
    {
        ActorId = actorId;
        Cause = cause;
    }

    public string ActorId { get; }
    public string Cause { get; }
}

/// <summary>The actor restarted while a call ran on it, and the call was not retried (<see cref="ActorOptions.MaxTaskRetries"/> is 0).</summary>
public sealed class ActorUnavailableException : RayException
{
    internal ActorUnavailableException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>A caller made more calls to an actor than its <see cref="ActorOptions.MaxPendingCalls"/> allows before results came back.</summary>
public sealed class PendingCallsLimitExceededException(string message) : RayException(message);
