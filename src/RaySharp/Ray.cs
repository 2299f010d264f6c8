using Google.Protobuf;
using Grpc.Core;
using RaySharp.Common;
using RaySharp.CoreWorker.CodeShipping;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;

namespace RaySharp;

/// <summary>
/// The entry point of a RaySharp program (a driver). <c>using var ray = Ray.Init();</c> connects to the cluster started
/// on this machine, or starts an embedded one; <c>Ray.Init("auto")</c> requires the local cluster;
/// <c>Ray.Init("10.0.0.1:6379")</c> joins the head at that address. <c>RAYSHARP_ADDRESS</c> stands in for a missing
/// or "auto" address.
/// </summary>
public static class Ray
{
    public const string AddressEnvironmentVariable = "RAYSHARP_ADDRESS";

    private static readonly Lock s_gate = new();
    private static DriverSession? s_session;

    /// <summary>True between <see cref="Init(string?, RayInitOptions?)"/> and <see cref="Shutdown"/>.</summary>
    public static bool IsInitialized => Volatile.Read(ref s_session) is not null;

    /// <summary>Connects this program to a RaySharp cluster; dispose the result (or call <see cref="Shutdown"/>) to disconnect.</summary>
    public static IDisposable Init(string? address = null, RayInitOptions? options = null) =>
        InitAsync(address, options).GetAwaiter().GetResult();

    public static async Task<IDisposable> InitAsync(string? address = null, RayInitOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new RayInitOptions();
        lock (s_gate)
        {
            if (s_session is not null)
                throw new RayException("Ray.Init was already called in this process; call Ray.Shutdown() (or dispose the result of Ray.Init) first.");
        }
        var session = await DriverSession.ConnectAsync(address, options, cancellationToken).ConfigureAwait(false);
        lock (s_gate)
        {
            if (s_session is not null)
            {
                session.DisposeAsync().AsTask().GetAwaiter().GetResult();
                throw new RayException("Ray.Init was called twice at once in this process.");
            }
            s_session = session;
        }
        AppDomain.CurrentDomain.ProcessExit += OnProcessExit;
        return new Connection();
    }

    /// <summary>Disconnects: the job is marked finished, and an embedded cluster is stopped. Safe to call twice.</summary>
    public static void Shutdown()
    {
        DriverSession? session;
        lock (s_gate)
        {
            session = s_session;
            s_session = null;
        }
        if (session is null) return;
        AppDomain.CurrentDomain.ProcessExit -= OnProcessExit;
        session.DisposeAsync().AsTask().GetAwaiter().GetResult();
    }

    /// <summary>The address of the cluster's GCS (<c>ip:port</c>).</summary>
    public static string GcsAddress => Session.GcsAddress;

    /// <summary>This job's id, assigned by the GCS (in a driver or inside one of its tasks).</summary>
    public static string JobId =>
        Volatile.Read(ref s_session)?.JobId ?? CoreWorker.Execution.WorkerContext.CurrentJobId
        ?? throw new RayException("RaySharp is not initialized: call Ray.Init() first.");

    /// <summary>Inside a task: the id of the node and of the worker running it. Null in a driver.</summary>
    public static string? NodeId => CoreWorker.Execution.WorkerContext.Current?.NodeId;

    public static string? WorkerId => CoreWorker.Execution.WorkerContext.Current?.WorkerId;

    /// <summary>The IP address of the node this code runs on, as the cluster sees it (in a driver or inside a task).</summary>
    public static string NodeIpAddress =>
        Volatile.Read(ref s_session)?.NodeIpAddress
        ?? CoreWorker.Execution.WorkerContext.Current?.NodeIpAddress
        ?? throw new RayException("RaySharp is not initialized: call Ray.Init() first.");

    // ---- Tasks ----

    /// <summary>A remote task of a static method, static local function or lambda that captures nothing.</summary>
    public static RemoteFunction<TResult> Task<TResult>(Func<TResult> function, TaskOptions? options = null) => new(function, options ?? new TaskOptions());

    public static RemoteFunction<T1, TResult> Task<T1, TResult>(Func<T1, TResult> function, TaskOptions? options = null) => new(function, options ?? new TaskOptions());

    public static RemoteFunction<T1, T2, TResult> Task<T1, T2, TResult>(Func<T1, T2, TResult> function, TaskOptions? options = null) => new(function, options ?? new TaskOptions());

    public static RemoteFunction<T1, T2, T3, TResult> Task<T1, T2, T3, TResult>(Func<T1, T2, T3, TResult> function, TaskOptions? options = null) => new(function, options ?? new TaskOptions());

    /// <summary>A remote task of an async function: the reference is to the awaited result.</summary>
    public static RemoteFunction<TResult> Task<TResult>(Func<Task<TResult>> function, TaskOptions? options = null) => new(function, options ?? new TaskOptions());

    public static RemoteFunction<T1, TResult> Task<T1, TResult>(Func<T1, Task<TResult>> function, TaskOptions? options = null) => new(function, options ?? new TaskOptions());

    public static RemoteFunction<T1, T2, TResult> Task<T1, T2, TResult>(Func<T1, T2, Task<TResult>> function, TaskOptions? options = null) => new(function, options ?? new TaskOptions());

    public static RemoteFunction<T1, T2, T3, TResult> Task<T1, T2, T3, TResult>(Func<T1, T2, T3, Task<TResult>> function, TaskOptions? options = null) => new(function, options ?? new TaskOptions());

    // ---- Actors ----

    /// <summary>An actor class: <c>Ray.Actor(() =&gt; new Counter(10)).Remote()</c> builds one on a node of the cluster.</summary>
    public static ActorClass<TActor> Actor<TActor>(Func<TActor> factory, ActorOptions? options = null) where TActor : class => new(factory, options ?? new ActorOptions());

    /// <summary>An actor class whose constructor takes arguments: <c>Ray.Actor((int start) =&gt; new Counter(start)).Remote(10)</c>.</summary>
    public static ActorClass<T1, TActor> Actor<T1, TActor>(Func<T1, TActor> factory, ActorOptions? options = null) where TActor : class => new(factory, options ?? new ActorOptions());

    public static ActorClass<T1, T2, TActor> Actor<T1, T2, TActor>(Func<T1, T2, TActor> factory, ActorOptions? options = null) where TActor : class => new(factory, options ?? new ActorOptions());

    public static ActorClass<T1, T2, T3, TActor> Actor<T1, T2, T3, TActor>(Func<T1, T2, T3, TActor> factory, ActorOptions? options = null) where TActor : class => new(factory, options ?? new ActorOptions());

    /// <summary>The live actor named <paramref name="name"/> in <paramref name="namespace"/> (default: this driver's).</summary>
    /// <exception cref="RayException">No live actor has that name there.</exception>
    public static ActorHandle<TActor> GetActor<TActor>(string name, string? @namespace = null) where TActor : class
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        var context = ActorContext();
        var ns = @namespace ?? context.Namespace;
        var reply = context.Submitter.Gcs.Actors.GetNamedActor(new GetNamedActorRequest { Name = name, Namespace = ns });
        if (!reply.Found) throw new RayException($"no live actor is named '{name}' in namespace '{ns}'; check the name and the namespace (RayInitOptions.Namespace or the namespace argument)");
        var expected = typeof(TActor).FullName ?? typeof(TActor).Name;
        if (reply.Info.ClassName != expected) throw new RayException($"the actor named '{name}' is a {reply.Info.ClassName}, not a {expected}");
        return new ActorHandle<TActor>(reply.Info.ActorId, 0, -1);
    }

    /// <summary>
    /// Kills an actor now, interrupting calls in flight (they fail with <see cref="ActorDiedException"/>). With
    /// <paramref name="noRestart"/> false, an actor with restarts left is rebuilt instead.
    /// </summary>
    public static void Kill<TActor>(ActorHandle<TActor> actor, bool noRestart = true) where TActor : class
    {
        ArgumentNullException.ThrowIfNull(actor);
        try
        {
            ActorContext().Submitter.KillAsync(actor.ActorId, noRestart).GetAwaiter().GetResult();
        }
        catch (InvalidOperationException e)
        {
            throw new RayException(e.Message, e);
        }
    }

    /// <summary>Every actor of the cluster with its state (pending, alive, restarting, dead), as <c>raysharp list actors</c> shows.</summary>
    public static IReadOnlyList<ActorDescription> ListActors(bool includeDead = true) =>
        ActorContext().Submitter.Gcs.Actors.ListActors(new ListActorsRequest { IncludeDead = includeDead }).Actors.Select(a => new ActorDescription(
            a.ActorId, a.ClassName, a.Name.Length > 0 ? a.Name : null, a.Namespace, ProtocolNames.Of(a.State), a.JobId,
            a.Address?.NodeId, a.Address?.IpAddress, a.Address?.Pid, a.NumRestarts, a.Detached, a.Lightweight,
            a.DeathCause.Length > 0 ? a.DeathCause : null)).ToList();

    /// <summary>Who calls actors: the driver's session, or, inside a task or actor, the worker running it.</summary>
    internal static ActorCallerContext ActorContext()
    {
        if (Volatile.Read(ref s_session) is { } session) return session.ActorCaller;
        if (CoreWorker.Execution.WorkerContext.Current is { ActorSubmitter: { } submitter, RayletAddress: { } rayletAddress } && CoreWorker.Execution.WorkerContext.CurrentJobId is { } jobId)
        {
            // Per call inside tasks and actors: reuse the context while the job stays the same.
            var known = s_workerActorContext;
            if (known?.JobId == jobId && ReferenceEquals(known.Submitter, submitter)) return known;
            var raylet = System.Threading.Tasks.Task.FromResult(rayletAddress);
            return s_workerActorContext = new ActorCallerContext(jobId, AnonymousNamespace(jobId), submitter, () => raylet);
        }
        throw new RayException("RaySharp is not initialized: call Ray.Init() first.");
    }

    private static ActorCallerContext? s_workerActorContext;

    internal static string AnonymousNamespace(string jobId) => "job-" + jobId;

    // ---- Objects ----

    /// <summary>The value of <paramref name="reference"/>, waiting for it at most <paramref name="timeout"/> (default: forever).</summary>
    public static T Get<T>(ObjectRef<T> reference, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(reference);
        var started = timeout is null ? 0 : System.Diagnostics.Stopwatch.GetTimestamp();
        // The bytes first: a small value then deserializes at once, with no asynchronous state per read.
        var value = reference.Bytes.IsCompleted || WaitForBytes(reference.Bytes, timeout) ? reference.Value : null;
        if (value is { IsCompletedSuccessfully: true }) return value.Result;
        try
        {
            if (value is null || !WaitLendingCpus(value, Remaining(timeout, started)))
                throw new GetTimeoutException($"{reference} was not ready within {timeout!.Value.TotalSeconds:0.###} s");
        }
        catch (AggregateException e) when (e.InnerExceptions.Count == 1)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerException!).Throw();
        }
        return value.Result;
    }

    /// <summary>The values of <paramref name="references"/>, in order, waiting at most <paramref name="timeout"/> for all of them.</summary>
    public static T[] Get<T>(IEnumerable<ObjectRef<T>> references, TimeSpan? timeout = null)
    {
        var list = references.ToList();
        var started = timeout is null ? 0 : System.Diagnostics.Stopwatch.GetTimestamp();
        string NotReady() => $"{list.Count(r => !r.IsReady)} of {list.Count} objects were not ready within {timeout!.Value.TotalSeconds:0.###} s";
        // As for one reference: the bytes of all, then the values (started together: large ones may be fetched).
        if (!list.TrueForAll(static r => r.Bytes.IsCompleted)
            && !WaitForBytes(System.Threading.Tasks.Task.WhenAll(list.Select(r => (System.Threading.Tasks.Task)r.Bytes)), timeout))
            throw new GetTimeoutException(NotReady());
        var all = System.Threading.Tasks.Task.WhenAll(list.Select(r => r.Value));
        try
        {
            if (!WaitLendingCpus(all, Remaining(timeout, started))) throw new GetTimeoutException(NotReady());
        }
        catch (AggregateException)
        {
            // Rethrow the first failure in list order, as a sequential Get would.
            foreach (var r in list) Get(r);
        }
        return all.Result;
    }

    /// <summary>
    /// Waits for serialized values; false when the time ran out. A failure is left for the values, which turn it into
    /// the API's exception.
    /// </summary>
    private static bool WaitForBytes(System.Threading.Tasks.Task bytes, TimeSpan? timeout)
    {
        try
        {
            return WaitLendingCpus(bytes, timeout ?? Timeout.InfiniteTimeSpan);
        }
        catch (AggregateException)
        {
            return true;
        }
    }

    private static TimeSpan Remaining(TimeSpan? timeout, long started) => timeout is { } limit
        ? TimeSpan.FromTicks(Math.Max(0, (limit - System.Diagnostics.Stopwatch.GetElapsedTime(started)).Ticks))
        : Timeout.InfiniteTimeSpan;

    /// <summary>Stores <paramref name="value"/> in the cluster and returns a reference to it, owned by this driver.</summary>
    public static ObjectRef<T> Put<T>(T value)
    {
        SubmitContext();
        ValueTask<Google.Protobuf.ByteString> storing;
        try
        {
            // Small values stay in this process; large ones are written once into the node's shared-memory store.
            storing = CoreWorker.Objects.LocalObjectStore.SerializeAsync(typeof(T), value, JobId);
        }
        catch (Exception e) when (e is MessagePack.MessagePackSerializationException or NotSupportedException or InvalidOperationException)
        {
            throw new ArgumentException($"a value of type {typeof(T)} cannot be serialized for Ray.Put: {e.GetBaseException().Message}", nameof(value), e);
        }
        Google.Protobuf.ByteString bytes;
        try
        {
            bytes = storing.IsCompletedSuccessfully ? storing.Result : storing.AsTask().GetAwaiter().GetResult();
        }
        catch (CoreWorker.Objects.ObjectStoreFullCoreException e)
        {
            throw new ObjectStoreFullException(e.Message);
        }
        return new ObjectRef<T>(Common.UniqueId.New(), System.Threading.Tasks.Task.FromResult(bytes));
    }

    /// <summary>
    /// Waits until <paramref name="numReturns"/> of <paramref name="references"/> are ready (succeeded or failed) or
    /// <paramref name="timeout"/> passes; returns the ready ones and the others, each in their original order.
    /// </summary>
    public static (List<ObjectRef<T>> Ready, List<ObjectRef<T>> NotReady) Wait<T>(IReadOnlyList<ObjectRef<T>> references, int numReturns = 1, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(references);
        if (numReturns < 0 || numReturns > references.Count)
            throw new ArgumentOutOfRangeException(nameof(numReturns), $"numReturns must be between 0 and the number of references ({references.Count}), got {numReturns}");
        var deadline = timeout is { } t ? DateTime.UtcNow + t : DateTime.MaxValue;
        while (references.Count(r => r.IsReady) < numReturns)
        {
            var pending = references.Where(r => !r.IsReady).Select(r => (System.Threading.Tasks.Task)r.Bytes).ToArray();
            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero) break;
            System.Threading.Tasks.Task.WaitAny(pending, deadline == DateTime.MaxValue ? Timeout.InfiniteTimeSpan : left);
        }
        var ready = references.Where(r => r.IsReady).Take(numReturns).ToList();
        return (ready, references.Where(r => !ready.Contains(r)).ToList());
    }

    /// <summary>Awaits the values of <paramref name="references"/>, in order.</summary>
    public static Task<T[]> GetAsync<T>(IEnumerable<ObjectRef<T>> references)
    {
        var all = System.Threading.Tasks.Task.WhenAll(references.Select(r => r.Value));
        if (all.IsCompleted) return all;
        // Values complete on connection read loops: the caller's continuation must not run there.
        var detached = new TaskCompletionSource<T[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        all.ContinueWith(static (t, d) => ((TaskCompletionSource<T[]>)d!).TrySetFromTask(t), detached, CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        return detached.Task;
    }

    /// <summary>Who submits: the driver's session, or, inside a task, the worker running it (nested tasks).</summary>
    internal static (string JobId, CoreWorker.Submission.TaskSubmitter Submitter) SubmitContext()
    {
        if (Volatile.Read(ref s_session) is { } session) return (session.JobId, session.Submitter);
        if (CoreWorker.Execution.WorkerContext.Current is { Submitter: { } submitter } && CoreWorker.Execution.WorkerContext.CurrentJobId is { } jobId)
            return (jobId, submitter);
        throw new RayException("RaySharp is not initialized: call Ray.Init() first.");
    }

    /// <summary>Inside a task, a wait for other tasks lends the worker's CPUs back to its node (no nested deadlock).</summary>
    private static bool WaitLendingCpus(System.Threading.Tasks.Task value, TimeSpan timeout)
    {
        // A reply usually comes within tens of microseconds: stay awake for it before sleeping.
        // Wait(0) on a completed task: throws its failure as Wait does.
        if (Common.YieldingSpin.Until(static t => t.IsCompleted, value)) return value.Wait(0);
        if (CoreWorker.Execution.WorkerContext.Current?.NotifyBlocked is not { } notify) return value.Wait(timeout);
        notify(true).GetAwaiter().GetResult();
        try
        {
            return value.Wait(timeout);
        }
        finally
        {
            notify(false).GetAwaiter().GetResult();
        }
    }

    /// <summary>Every node the cluster has known, alive or dead.</summary>
    public static IReadOnlyList<NodeDescription> Nodes() =>
        Session.Gcs.GetAllNodesAsync(aliveOnly: false).GetAwaiter().GetResult().Select(n => new NodeDescription(
            n.NodeId, n.NodeIpAddress, n.State == NodeState.Alive, n.IsHeadNode,
            new Dictionary<string, double>(n.ResourcesTotal), new Dictionary<string, double>(n.ResourcesAvailable),
            n.State == NodeState.Alive ? null : n.DeathReason)).ToList();

    /// <summary>Resources of all alive nodes, summed.</summary>
    public static IReadOnlyDictionary<string, double> ClusterResources() => Sum(n => n.Resources);

    /// <summary>Resources of all alive nodes not held by a lease now, summed.</summary>
    public static IReadOnlyDictionary<string, double> AvailableResources() => Sum(n => n.AvailableResources);

    private static Dictionary<string, double> Sum(Func<NodeDescription, IReadOnlyDictionary<string, double>> pick)
    {
        var total = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var node in Nodes().Where(n => n.Alive))
        {
            foreach (var (k, v) in pick(node)) total[k] = total.GetValueOrDefault(k) + v;
        }
        return total;
    }

    private static DriverSession Session =>
        Volatile.Read(ref s_session) ?? throw new RayException("RaySharp is not initialized: call Ray.Init() first.");

    private static void OnProcessExit(object? sender, EventArgs e) => Shutdown();

    private sealed class Connection : IDisposable
    {
        public void Dispose() => Shutdown();
    }
}

/// <summary>What a connected driver holds: its GCS client, its job, and the embedded cluster it started, if any.</summary>
internal sealed class DriverSession : IAsyncDisposable
{
    private readonly RpcChannelPool _channels;
    private readonly EmbeddedCluster? _embedded;

    private Rpc.Transport.FramedConnection _driverConnection;
    private readonly CancellationTokenSource _closing = new();
    private readonly Task _registration;

    private DriverSession(RpcChannelPool channels, GcsClient gcs, string jobId, string nodeIp, EmbeddedCluster? embedded, string? ns,
        Rpc.Transport.FramedConnection driverConnection, TimeSpan reconnectTimeout)
    {
        _driverConnection = driverConnection;
        _channels = channels;
        Gcs = gcs;
        JobId = jobId;
        NodeIpAddress = nodeIp;
        _embedded = embedded;
        Submitter = new CoreWorker.Submission.TaskSubmitter(channels, LocalRayletAsync,
            Microsoft.Extensions.Logging.Abstractions.NullLogger<CoreWorker.Submission.TaskSubmitter>.Instance,
            () => gcs.GetAllNodesAsync(aliveOnly: true), message => Console.Error.WriteLine(message),
            (text, isError) => (isError ? Console.Error : Console.Out).WriteLine(text));
        ActorCaller = new ActorCallerContext(jobId, ns ?? Ray.AnonymousNamespace(jobId),
            new CoreWorker.Submission.ActorTaskSubmitter(gcs, Submitter.CallerHandler, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance),
            LocalRayletAsync);
        CoreWorker.Objects.LocalObjectStore.Configure(LocalRayletAsync);
        _registration = Task.WhenAll(KeepRegisteredAsync(reconnectTimeout), ReportNodeDeathsAsync());
    }

    public CoreWorker.Submission.TaskSubmitter Submitter { get; }

    public ActorCallerContext ActorCaller { get; }

    private string? _localRaylet;

    /// <summary>Tasks are submitted through the raylet of the node the driver runs on, as in Ray.</summary>
    private async Task<string> LocalRayletAsync()
    {
        if (_localRaylet is { } known) return known;
        var nodes = await Gcs.GetAllNodesAsync(aliveOnly: true).ConfigureAwait(false);
        var local = nodes.FirstOrDefault(n => n.NodeIpAddress == NodeIpAddress && (_embedded is null || n.SessionDir == _embedded.SessionDir))
            ?? throw new InvalidOperationException(
                $"no RaySharp node runs on this machine ({NodeIpAddress}); a driver submits tasks through its local raylet. " +
                "Run the driver on a node of the cluster, or join this machine with `raysharp start --address=<head-ip>:<port>`.");
        return _localRaylet = NodeAddress.Format(local.NodeIpAddress, local.NodeManagerPort);
    }

    public GcsClient Gcs { get; }
    public string GcsAddress => Gcs.Address;
    public string JobId { get; }
    public string NodeIpAddress { get; }

    public static async Task<DriverSession> ConnectAsync(string? address, RayInitOptions options, CancellationToken cancellationToken)
    {
        var root = SessionDirectory.ResolveRoot(options.TempDir);
        if (string.IsNullOrWhiteSpace(address) || address == "auto")
        {
            if (Environment.GetEnvironmentVariable(Ray.AddressEnvironmentVariable) is { Length: > 0 } env && env != "auto") address = env;
        }
        RpcChannelPool? channels = null;
        EmbeddedCluster? embedded = null;
        try
        {
            string gcsAddress;
            if (address == "auto")
            {
                gcsAddress = SessionDirectory.ReadCurrentClusterAddress(root)
                    ?? throw new RayException($"Ray.Init(\"auto\") found no RaySharp cluster on this machine ({SessionDirectory.CurrentClusterFile(root)} does not exist). " +
                                              "Start one with `raysharp start --head`, or call Ray.Init() to start an embedded cluster.");
            }
            else if (!string.IsNullOrWhiteSpace(address))
            {
                if (!NodeAddress.TryParse(address, out var host, out var port, out var error))
                    throw new RayException($"Ray.Init(\"{address}\"): {error}. Give the head's address as \"<ip>:<port>\", or \"auto\".");
                gcsAddress = NodeAddress.Format(host, port);
            }
            else if (SessionDirectory.ReadCurrentClusterAddress(root) is { } local && await AnswersAsync(local, SecurityFor(options, root, local), cancellationToken).ConfigureAwait(false))
            {
                gcsAddress = local;
            }
            else
            {
                embedded = await EmbeddedCluster.StartAsync(options, cancellationToken).ConfigureAwait(false);
                gcsAddress = embedded.GcsAddress;
            }

            // Every connection this driver opens (gRPC, framed, object transfer) presents the cluster's token.
            var security = SecurityFor(options with { Token = embedded?.Token ?? options.Token }, root, gcsAddress);
            RpcSecurityOptions.Current = security;
            channels = new RpcChannelPool(security, connectTimeout: TimeSpan.FromSeconds(3));
            var gcs = new GcsClient(channels, gcsAddress, ReconnectTimeout(options));
            try
            {
                await gcs.WaitReachableAsync(options.ConnectTimeout, cancellationToken).ConfigureAwait(false);
            }
            catch (ClusterTokenRefusedException e)
            {
                throw new RayException($"Ray.Init: {e.Message}");
            }
            catch (GcsUnreachableException e)
            {
                throw new RayException($"Could not reach the RaySharp head (GCS) at {gcsAddress} within {options.ConnectTimeout.TotalSeconds:0} s: {e.Message}. " +
                                       "Check that the cluster is running (`raysharp status` on the head), that the address is the one `raysharp start --head` printed, and that no firewall blocks the port.");
            }
            NodeAddress.TryParse(gcsAddress, out var gcsHost, out _, out _);
            var nodeIp = embedded?.NodeIpAddress ?? NodeAddress.DetectNodeIp(gcsHost);
            var jobId = (await gcs.Jobs.GetNextJobIdAsync(new GetNextJobIdRequest(), cancellationToken: cancellationToken).ConfigureAwait(false)).JobId;
            await gcs.Jobs.AddJobAsync(new AddJobRequest
            {
                JobInfo = new JobInfo
                {
                    JobId = jobId,
                    DriverIpAddress = nodeIp,
                    DriverPid = Environment.ProcessId,
                    Entrypoint = Environment.CommandLine,
                    Namespace = options.Namespace ?? Ray.AnonymousNamespace(jobId),
                },
            }, cancellationToken: cancellationToken).ConfigureAwait(false);
            // Ship the application's code once per job, so workers anywhere can run its functions.
            await CodePackage.UploadAsync(gcs, jobId, AppContext.BaseDirectory, System.Reflection.Assembly.GetEntryAssembly()?.GetName().Name, cancellationToken).ConfigureAwait(false);
            // The GCS learns of this driver's exit (even by SIGKILL) when this connection closes, and ends the job.
            var driverConnection = await RegisterDriverAsync(gcsAddress, jobId, cancellationToken).ConfigureAwait(false);
            return new DriverSession(channels, gcs, jobId, nodeIp, embedded, options.Namespace, driverConnection, ReconnectTimeout(options));
        }
        catch
        {
            if (embedded is not null) await embedded.DisposeAsync().ConfigureAwait(false);
            channels?.Dispose();
            throw;
        }
    }

    /// <summary>What to present to the cluster at <paramref name="gcsAddress"/>: the token option, else this machine's token and TLS files (environment, node session).</summary>
    private static RpcSecurityOptions SecurityFor(RayInitOptions options, string root, string gcsAddress)
    {
        try
        {
            return RpcSecurityOptions.ForCluster(root, gcsAddress, options.Token);
        }
        catch (InvalidOperationException e)
        {
            throw new RayException("Ray.Init: " + e.Message);
        }
    }

    private static TimeSpan ReconnectTimeout(RayInitOptions options) => options.GcsReconnectTimeout ?? GcsClient.ReconnectTimeoutFromEnvironment();

    /// <summary>Opens the connection whose closing tells the GCS this driver is gone, and names the job on it.</summary>
    private static async Task<Rpc.Transport.FramedConnection> RegisterDriverAsync(string gcsAddress, string jobId, CancellationToken cancellationToken)
    {
        NodeAddress.TryParse(gcsAddress, out var gcsIp, out var gcsPort, out _);
        var connection = await Rpc.Transport.FramedClient.ConnectAsync(gcsIp, gcsPort, cancellationToken: cancellationToken).ConfigureAwait(false);
        try
        {
            await connection.CallAsync(Rpc.Transport.FramedMethods.RegisterDriver, new RegisterDriverRequest { JobId = jobId }.ToByteArray(), cancellationToken).ConfigureAwait(false);
            return connection;
        }
        catch
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// A GCS that goes away may come back (a head restarted on Redis): register with it again, so it keeps the job and
    /// its actors. Tasks and calls to live actors go on meanwhile, as they need no GCS.
    /// </summary>
    private async Task KeepRegisteredAsync(TimeSpan reconnectTimeout)
    {
        var closing = _closing.Token;
        while (true)
        {
            try { await _driverConnection.Completion.WaitAsync(closing).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
            catch (Exception) { /* the connection failed: reconnect below */ }
            var deadline = DateTime.UtcNow + reconnectTimeout;
            while (true)
            {
                try
                {
                    _driverConnection = await RegisterDriverAsync(GcsAddress, JobId, closing).ConfigureAwait(false);
                    break;
                }
                catch (OperationCanceledException) { return; }
                catch (Exception) when (DateTime.UtcNow < deadline)
                {
                    try { await Task.Delay(500, closing).ConfigureAwait(false); }
                    catch (OperationCanceledException) { return; }
                }
                catch (Exception e)
                {
                    Console.Error.WriteLine($"RaySharp: lost the cluster's GCS at {GcsAddress} for more than {reconnectTimeout.TotalSeconds:0} s ({e.Message}); " +
                                            "the head is down. Tasks and actor calls that need it will fail; restart the head (with --redis-address to keep the cluster's state) and run the driver again.");
                    return;
                }
            }
        }
    }

    /// <summary>Tells the user, on the driver's console, of each node the cluster loses while the driver runs, as Ray does.</summary>
    private async Task ReportNodeDeathsAsync()
    {
        var closing = _closing.Token;
        var reported = new HashSet<string>(StringComparer.Ordinal);
        while (!closing.IsCancellationRequested)
        {
            try
            {
                var request = new SubscribeRequest { SubscriberId = "driver-" + JobId };
                request.Channels.Add(Channel.NodeInfo);
                using var call = new PubsubGcsService.PubsubGcsServiceClient(_channels.Get(GcsAddress)).Subscribe(request, cancellationToken: closing);
                await foreach (var message in call.ResponseStream.ReadAllAsync(closing).ConfigureAwait(false))
                {
                    if (message.NodeInfo is { State: NodeState.Dead } node && reported.Add(node.NodeId))
                    {
                        ActorCaller.Submitter.OnNodeDead(node.NodeId);
                        Submitter.OnNodeDead(node.NodeId);
                        Console.Error.WriteLine($"RaySharp: node {node.NodeIpAddress} ({node.NodeId}) died: " +
                                                $"{(node.DeathReason.Length > 0 ? node.DeathReason : "no reason given")}. Its tasks are retried elsewhere and its lost objects rebuilt where they can be.");
                    }
                }
            }
            catch (Exception) when (closing.IsCancellationRequested)
            {
                return;
            }
            catch (Exception)
            {
                // The GCS is away (restarting on Redis, or gone), or the stream broke some other way: subscribe again
                // shortly. Never let this end the loop: a fault here would fault DisposeAsync's wait for it.
            }
            try { await Task.Delay(1000, closing).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
        }
    }

    private static async Task<bool> AnswersAsync(string address, RpcSecurityOptions security, CancellationToken cancellationToken)
    {
        using var channels = new RpcChannelPool(security, connectTimeout: TimeSpan.FromSeconds(3));
        try
        {
            await new GcsClient(channels, address).WaitReachableAsync(TimeSpan.FromSeconds(2), cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (GcsUnreachableException)
        {
            return false; // a stale pointer left by a cluster that is gone: start an embedded one instead
        }
    }

    /// <summary>
    /// Every step runs whatever the ones before it did: a failure of one (a GCS gone, a loop that faulted) must not
    /// leave an embedded cluster's processes running or this process's calls hanging. The first failure is rethrown
    /// once everything is stopped.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        var failures = new List<Exception>();
        async Task Step(Func<Task> step)
        {
            try { await step().ConfigureAwait(false); }
            catch (Exception e) { failures.Add(e); }
        }
        CoreWorker.Objects.LocalObjectStore.Configure(null);
        await Step(() => ActorCaller.Submitter.DisposeAsync().AsTask()).ConfigureAwait(false);
        await Step(() => Submitter.DisposeAsync().AsTask()).ConfigureAwait(false);
        try
        {
            await Gcs.Jobs.MarkJobFinishedAsync(new MarkJobFinishedRequest { JobId = JobId }, deadline: DateTime.UtcNow.AddSeconds(2)).ConfigureAwait(false);
        }
        catch (Exception e) when (e is RpcException or ObjectDisposedException or InvalidOperationException) { /* the cluster may be gone already */ }
        await _closing.CancelAsync().ConfigureAwait(false);
        await Step(() => _registration).ConfigureAwait(false);
        await Step(() => _driverConnection.DisposeAsync().AsTask()).ConfigureAwait(false);
        _closing.Dispose();
        if (_embedded is not null) await Step(() => _embedded.DisposeAsync().AsTask()).ConfigureAwait(false);
        _channels.Dispose();
        RpcSecurityOptions.ResetCurrent();
        if (failures.Count > 0) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failures[0]);
    }
}
