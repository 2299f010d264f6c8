using Grpc.Core;
using Microsoft.Extensions.Logging.Abstractions;
using RaySharp.Common;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;

namespace RaySharp.CoreWorker;

/// <summary>
/// A driver process's runtime, as <see cref="WorkerRuntime"/> is a worker's: its job and the registration that keeps
/// it, and the embedded cluster it started, if any, beside what every core worker holds (<see cref="CoreWorkerRuntime"/>:
/// store, submitters, directories, wired as a worker's). One per driver process, made by <see cref="ConnectAsync"/> (in
/// <c>DriverRuntime.Connect.cs</c>: discovery, embedded start, job, code and driver registration); the API's
/// <c>Ray</c> holds it. <see cref="DisposeAsync"/> says goodbye over the network; <see cref="StopLocal"/> is all a
/// process exit may do.
/// </summary>
internal sealed partial class DriverRuntime : CoreWorkerRuntime
{
    /// <summary>Stands in for a missing or "auto" address of <c>Ray.Init</c>.</summary>
    public const string AddressEnvironmentVariable = "RAYSHARP_ADDRESS";

    /// <summary>The most a process exit waits for an embedded cluster's processes before it kills them.</summary>
    private static readonly TimeSpan s_exitStopBudget = TimeSpan.FromSeconds(1);

    private readonly RpcChannelPool _channels;
    private readonly EmbeddedCluster? _embedded;
    private readonly Submission.ActorCallerContext _actorCaller;

    /// <summary>The connection whose closing tells the GCS this driver is gone; replaced when the GCS comes back.</summary>
    private Rpc.Transport.FramedConnection _driverConnection;
    private readonly CancellationTokenSource _closing = new();
    private readonly Task _registration;

    private DriverRuntime(RpcChannelPool channels, GcsClient gcs, string jobId, string nodeIp, EmbeddedCluster? embedded, string? ns,
        Rpc.Transport.FramedConnection driverConnection, TimeSpan reconnectTimeout, LocalRayletFinder localRaylet)
        : base(channels, gcs, localRaylet.FindAsync, workerId: "", NullLoggerFactory.Instance)
    {
        _driverConnection = driverConnection;
        _channels = channels;
        JobId = jobId;
        NodeIpAddress = nodeIp;
        _embedded = embedded;
        _actorCaller = new Submission.ActorCallerContext(jobId, ns ?? Submission.ActorCallerContext.AnonymousNamespace(jobId), Actors, localRaylet.FindAsync);
        _registration = Task.WhenAll(KeepRegisteredAsync(reconnectTimeout), ReportNodeDeathsAsync());
    }

    public override string JobId { get; }

    public override string NodeIpAddress { get; }

    public override Submission.ActorCallerContext ActorCaller() => _actorCaller;

    /// <summary>Tasks are submitted through the raylet of the node the driver runs on, as in Ray: found once, in the GCS's node table.</summary>
    private sealed class LocalRayletFinder(GcsClient gcs, string nodeIp, string? sessionDir)
    {
        private readonly Lock _gate = new();
        private Task<string>? _finding;

        /// <summary>
        /// One lookup shared by every caller: a driver that creates hundreds of actors at once would otherwise ask the
        /// GCS for the whole node table once per actor, all at the same time (and time out behind one another). A
        /// lookup that failed is made again by the next caller.
        /// </summary>
        public Task<string> FindAsync()
        {
            lock (_gate)
            {
                if (_finding is null || _finding.IsFaulted || _finding.IsCanceled) _finding = LookUpAsync();
                return _finding;
            }
        }

        private async Task<string> LookUpAsync()
        {
            var nodes = await gcs.GetAllNodesAsync(aliveOnly: true).ConfigureAwait(false);
            var local = nodes.FirstOrDefault(n => n.NodeIpAddress == nodeIp && (sessionDir is null || n.SessionDir == sessionDir))
                ?? throw new InvalidOperationException(
                    $"no RaySharp node runs on this machine ({nodeIp}); a driver submits tasks through its local raylet. " +
                    "Run the driver on a node of the cluster, or join this machine with `raysharp start --address=<head-ip>:<port>`.");
            return NodeAddress.Format(local.NodeIpAddress, local.NodeManagerPort);
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
                        OnNodeDead(node.NodeId);
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

    /// <summary>
    /// The goodbye (call it outside any lock): calls not finished fail, the job is marked finished, the registration
    /// closes, an embedded cluster stops. Every step runs whatever the ones before it did: a failure of one (a GCS
    /// gone, a loop that faulted) must not leave an embedded cluster's processes running or this process's calls
    /// hanging. The first failure is rethrown once everything is stopped.
    /// </summary>
    public override async ValueTask DisposeAsync()
    {
        var failures = new List<Exception>();
        async Task Step(Func<Task> step)
        {
            try { await step().ConfigureAwait(false); }
            catch (Exception e) { failures.Add(e); }
        }
        await Step(() => DisposeCallersAsync().AsTask()).ConfigureAwait(false);
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

    /// <summary>
    /// All a process exit does, when the driver never shut down: stop an embedded cluster's processes by their
    /// recorded pids, bounded, with no network. The GCS learns of the exit as the registration's connection closes
    /// with the process, and ends the job after its grace period, as for a driver killed by SIGKILL.
    /// </summary>
    public void StopLocal() => _embedded?.StopNow(s_exitStopBudget);
}
