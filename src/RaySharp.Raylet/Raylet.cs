using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using RaySharp.Common;
using RaySharp.Raylet.Scheduling;
using RaySharp.Raylet.Services;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Raylet;

/// <summary>
/// One node's raylet: serves the node manager RPCs, registers the node with the GCS, keeps the GCS told of its
/// resources, follows the node table (for spillback), and owns the worker pool. It stops itself if the GCS declares
/// its node dead.
/// </summary>
internal sealed partial class Raylet : IAsyncDisposable
{
    private readonly RayletOptions _options;
    private readonly SessionDirectory _session;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly RpcChannelPool _channels = new();
    private readonly CancellationTokenSource _stopping = new();
    private readonly TaskCompletionSource<string> _fatal = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Dictionary<string, NodeInfo> _clusterNodes = new(StringComparer.Ordinal);
    private readonly Lock _viewGate = new();
    private readonly SemaphoreSlim _reportNow = new(0);
    private RpcServer? _rpc;
    private WorkerPool.WorkerPool? _pool;
    private LeaseManager? _leases;
    private Task _background = Task.CompletedTask;
    private RpcServer? _objectManagerServer;
    private ObjectStore.PlasmaArena? _arena;
    private ObjectStore.PlasmaStore? _store;
    private ObjectStore.ObjectManager? _objectManager;

    public Raylet(RayletOptions options, SessionDirectory session, TimeProvider time, ILogger<Raylet> logger)
    {
        _options = options;
        _session = session;
        _time = time;
        _logger = logger;
    }

    public int Port => _rpc?.Port ?? 0;

    /// <summary>The object manager's port, where other nodes pull objects from.</summary>
    public int ObjectManagerPort => _objectManagerServer?.Port ?? 0;

    /// <summary>Completes with a reason when the raylet must stop on its own (its node was declared dead, the GCS is gone).</summary>
    public Task<string> Fatal => _fatal.Task;

    private NodeInfoGcsService.NodeInfoGcsServiceClient Gcs => new(_channels.Get(_options.GcsAddress));

    public async Task StartAsync(ILoggerFactory loggerFactory, CancellationToken cancellationToken)
    {
        // The worker pool needs the raylet's address and the raylet's server needs the pool: bind first, then wire.
        WorkerPool.WorkerPool? pool = null;
        LeaseManager? leases = null;
        StartObjectStore(loggerFactory);
        _objectManagerServer = await RpcServer.StartAsync("object-manager", RpcListenOptions.Fixed(_options.ObjectManagerPort), loggerFactory,
            _ => { }, _ => { }, cancellationToken: cancellationToken, framedHandler: _objectManager).ConfigureAwait(false);
        _objectManager!.Address = NodeAddress.Format(_options.NodeIpAddress, _objectManagerServer.Port);
        _rpc = await RpcServer.StartAsync("raylet", RpcListenOptions.Fixed(_options.NodeManagerPort), loggerFactory,
            services =>
            {
                services.AddSingleton(_options);
                services.AddSingleton(_ => pool!);
                services.AddSingleton(_ => leases!);
            },
            endpoints => endpoints.MapGrpcService<NodeManagerServiceImpl>(), cancellationToken: cancellationToken,
            framedHandler: new ObjectStore.ObjectStoreService(_store!, _objectManager, _options.NodeIpAddress, () => _objectManagerServer.Port)).ConfigureAwait(false);

        pool = _pool = new WorkerPool.WorkerPool(_options, _session, NodeAddress.Format(_options.NodeIpAddress, _rpc.Port), _time,
            loggerFactory.CreateLogger<WorkerPool.WorkerPool>());
        leases = _leases = new LeaseManager(_options, pool, RemoteNodes, loggerFactory.CreateLogger<LeaseManager>(), () => _store?.PrimaryCount() ?? 0);
        leases.Changed += () => _reportNow.Release();

        await RegisterWithGcsAsync(cancellationToken).ConfigureAwait(false);
        pool.Prestart();
        _background = Task.WhenAll(ReportLoopAsync(_stopping.Token), FollowNodeTableAsync(_stopping.Token));
    }

    /// <summary>Maps the node's arena (after removing arenas left by raylets that died without cleaning up).</summary>
    private void StartObjectStore(ILoggerFactory loggerFactory)
    {
        var storeOptions = _options.ObjectStore;
        ObjectStore.PlasmaArena.DeleteLeftovers(storeOptions.Directory);
        _arena = ObjectStore.PlasmaArena.Create(storeOptions.Directory, _session.Name, _options.NodeId, storeOptions.ResolveCapacity());
        // Recorded so that `raysharp stop` removes it even when this raylet is killed.
        File.WriteAllText(System.IO.Path.Combine(_session.Path, ObjectStoreArenaFile), _arena.Path);
        var spill = storeOptions.SpillDirectory ?? System.IO.Path.Combine(_session.Path, "spill");
        spill = System.IO.Path.Combine(spill, _options.NodeId);
        _store = new ObjectStore.PlasmaStore(_arena, storeOptions, spill, _time, loggerFactory.CreateLogger<ObjectStore.PlasmaStore>());
        _objectManager = new ObjectStore.ObjectManager(_store, storeOptions, _options.NodeId, loggerFactory.CreateLogger<ObjectStore.ObjectManager>(),
            new GcsObjectLocations(new ObjectLocationGcsService.ObjectLocationGcsServiceClient(_channels.Get(_options.GcsAddress))));
        LogObjectStore(_logger, _arena.Path, _arena.Capacity >> 20);
    }

    /// <summary>The GCS's object location table over gRPC.</summary>
    private sealed class GcsObjectLocations(ObjectLocationGcsService.ObjectLocationGcsServiceClient gcs) : ObjectStore.IObjectLocations
    {
        public async Task<IReadOnlyList<string>> GetAsync(string objectId) =>
            (await gcs.GetObjectLocationsAsync(new GetObjectLocationsRequest { ObjectId = objectId }, deadline: DateTime.UtcNow.AddSeconds(3)).ConfigureAwait(false))
            .Locations.Select(l => l.Address).ToList();

        public async Task AddAsync(string objectId, string nodeId, string address) =>
            await gcs.AddObjectLocationAsync(new ObjectLocationRequest { ObjectIds = { objectId }, NodeId = nodeId, Address = address },
                deadline: DateTime.UtcNow.AddSeconds(3)).ConfigureAwait(false);

        public async Task RemoveAsync(string objectId, string nodeId) =>
            await gcs.RemoveObjectLocationAsync(new ObjectLocationRequest { ObjectIds = { objectId }, NodeId = nodeId },
                deadline: DateTime.UtcNow.AddSeconds(3)).ConfigureAwait(false);
    }

    /// <summary>File of the session directory naming the arena of this node's store.</summary>
    public const string ObjectStoreArenaFile = "object_store_arena";

    private async Task RegisterWithGcsAsync(CancellationToken cancellationToken)
    {
        var info = new NodeInfo
        {
            NodeId = _options.NodeId,
            NodeIpAddress = _options.NodeIpAddress,
            NodeName = Environment.MachineName,
            NodeManagerPort = _rpc!.Port,
            ObjectManagerPort = _objectManagerServer!.Port,
            IsHeadNode = _options.IsHead,
            SessionDir = _session.Path,
            RayletPid = Environment.ProcessId,
            MinWorkerPort = _options.MinWorkerPort,
            MaxWorkerPort = _options.MaxWorkerPort,
        };
        info.ResourcesTotal.Add(_options.Resources);
        var deadline = _time.GetUtcNow() + _options.GcsConnectTimeout;
        while (true)
        {
            try
            {
                var reply = await Gcs.RegisterNodeAsync(new RegisterNodeRequest { NodeInfo = info },
                    deadline: DateTime.UtcNow.AddSeconds(5), cancellationToken: cancellationToken).ConfigureAwait(false);
                LogRegistered(_logger, _options.NodeId, _options.GcsAddress, reply.ClusterId);
                return;
            }
            catch (RpcException e) when (e.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded && _time.GetUtcNow() < deadline)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(250), _time, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private IReadOnlyList<NodeView> RemoteNodes()
    {
        lock (_viewGate)
        {
            return _clusterNodes.Values
                .Where(n => n.State == NodeState.Alive && !n.IsDraining && n.NodeId != _options.NodeId)
                .Select(n => new NodeView(n.NodeId, n.NodeIpAddress, n.NodeManagerPort, n.ResourcesTotal, n.ResourcesAvailable))
                .ToList();
        }
    }

    private void UpdateView(IEnumerable<NodeInfo> nodes)
    {
        lock (_viewGate)
        {
            foreach (var n in nodes) _clusterNodes[n.NodeId] = n;
        }
        _leases?.Dispatch();
    }

    /// <summary>Tells the GCS what is free here (on change, at most every 100 ms, and every period regardless) and refreshes the view of other nodes.</summary>
    private async Task ReportLoopAsync(CancellationToken stop)
    {
        var failures = 0;
        DateTimeOffset? unreachableSince = null;
        int? gcsRestarts = null;
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await _reportNow.WaitAsync(_options.ResourceReportPeriod, stop).ConfigureAwait(false);
                await Task.Delay(TimeSpan.FromMilliseconds(100), _time, stop).ConfigureAwait(false);
                while (_reportNow.CurrentCount > 0) await _reportNow.WaitAsync(stop).ConfigureAwait(false);

                var (pending, infeasible) = _leases!.Demands();
                var report = new ReportResourceUsageRequest { NodeId = _options.NodeId };
                report.ResourcesAvailable.Add(_leases.AvailableSnapshot());
                // Committed bundles change the total (their group resources), which other raylets and the GCS schedule on.
                report.ResourcesTotal.Add(_leases.TotalSnapshot());
                report.PendingDemands.Add(pending);
                report.InfeasibleDemands.Add(infeasible);
                report.IdleDurationMs = (long)_leases.IdleFor().TotalMilliseconds;
                report.PrimaryObjectCount = _store?.PrimaryCount() ?? 0;
                report.IsDraining = _leases.IsDraining;
                var reply = await Gcs.ReportResourceUsageAsync(report, deadline: DateTime.UtcNow.AddSeconds(5), cancellationToken: stop).ConfigureAwait(false);
                if (!reply.NodeAlive)
                {
                    _fatal.TrySetResult("the GCS declared this node dead");
                    return;
                }
                if (gcsRestarts is { } known && reply.GcsRestarts != known)
                    LogCopiesReported(_logger, reply.GcsRestarts, _objectManager!.ReportCopiesAgain());
                gcsRestarts = reply.GcsRestarts;
                var all = await Gcs.GetAllNodeInfoAsync(new GetAllNodeInfoRequest(), deadline: DateTime.UtcNow.AddSeconds(5), cancellationToken: stop).ConfigureAwait(false);
                UpdateView(all.Nodes);
                _leases.OnViewRefreshed();
                failures = 0;
                unreachableSince = null;
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (RpcException e)
            {
                if (++failures == 1 || failures % 30 == 0) LogGcsUnreachable(_logger, _options.GcsAddress, e.Status.Detail);
                unreachableSince ??= _time.GetUtcNow();
                if (_time.GetUtcNow() - unreachableSince > _options.GcsReconnectTimeout)
                {
                    _fatal.TrySetResult($"the GCS at {_options.GcsAddress} has been unreachable for more than {_options.GcsReconnectTimeout.TotalSeconds:0} s");
                    return;
                }
                // Do not spin while the GCS is down: wait a period before the next attempt.
                try { await Task.Delay(_options.ResourceReportPeriod, _time, stop).ConfigureAwait(false); }
                catch (OperationCanceledException) { return; }
            }
            catch (Exception e)
            {
                // Not the GCS's absence but a fault of this side's: the loop must go on (a node that stopped reporting
                // looks alive to the GCS forever, with a stale view of free resources), so say what happened and retry.
                LogLoopFault(_logger, "resource report", e);
                try { await Task.Delay(_options.ResourceReportPeriod, _time, stop).ConfigureAwait(false); }
                catch (OperationCanceledException) { return; }
            }
        }
    }

    /// <summary>Follows node added/removed events so spillback decisions see a node the moment it joins or dies.</summary>
    private async Task FollowNodeTableAsync(CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            try
            {
                var client = new PubsubGcsService.PubsubGcsServiceClient(_channels.Get(_options.GcsAddress));
                var request = new SubscribeRequest { SubscriberId = _options.NodeId };
                request.Channels.Add(Channel.NodeInfo);
                request.Channels.Add(Channel.Job);
                using var call = client.Subscribe(request, cancellationToken: stop);
                await foreach (var message in call.ResponseStream.ReadAllAsync(stop).ConfigureAwait(false))
                {
                    if (message.JobInfo is { IsDead: true } job)
                    {
                        if (_store!.FreeJob(job.JobId) is > 0 and var freed) LogJobObjectsFreed(_logger, freed, job.JobId);
                        if (_leases?.ReclaimJob(job.JobId) is > 0 and var reclaimed) LogJobLeasesReclaimed(_logger, reclaimed, job.JobId);
                    }
                    if (message.NodeInfo is { } node)
                    {
                        if (node.NodeId == _options.NodeId && node.State == NodeState.Dead)
                        {
                            _fatal.TrySetResult($"the GCS declared this node dead: {node.DeathReason}");
                            return;
                        }
                        UpdateView([node]);
                    }
                }
            }
            catch (Exception e) when (stop.IsCancellationRequested && e is OperationCanceledException or RpcException)
            {
                return;
            }
            catch (RpcException)
            {
                // The GCS went away; the report loop logs it. Resubscribe after a pause.
            }
            catch (Exception e) when (!stop.IsCancellationRequested)
            {
                // A fault of this side's handling: without this loop, jobs' leases and objects are never reclaimed here.
                LogLoopFault(_logger, "node and job events", e);
            }
            try { await Task.Delay(TimeSpan.FromSeconds(1), _time, stop).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
        }
    }

    /// <summary>Stops the raylet: leave the cluster (best effort), stop every worker, close the server.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        try
        {
            await Gcs.UnregisterNodeAsync(new UnregisterNodeRequest { NodeId = _options.NodeId, Reason = "raylet stopped" },
                deadline: DateTime.UtcNow.AddSeconds(2)).ConfigureAwait(false);
        }
        catch (RpcException) { /* the GCS may be gone already; its health check will notice */ }
        try
        {
            if (_pool is not null) await _pool.DisposeAsync().ConfigureAwait(false);
            try { await _background.ConfigureAwait(false); } catch (OperationCanceledException) { }
            if (_rpc is not null) await _rpc.DisposeAsync().ConfigureAwait(false);
            if (_objectManagerServer is not null) await _objectManagerServer.DisposeAsync().ConfigureAwait(false);
            if (_objectManager is not null) await _objectManager.DisposeAsync().ConfigureAwait(false);
        }
        finally
        {
            // Whatever failed above, the node's shared memory and spill files go.
            _store?.Dispose();
            _arena?.Dispose();
            _arena?.Delete();
            _channels.Dispose();
        }
        _stopping.Dispose();
    }

    [LoggerMessage(EventId = 500, Level = LogLevel.Information, Message = "Node {NodeId} registered with the GCS at {GcsAddress} (cluster {ClusterId})")]
    private static partial void LogRegistered(ILogger logger, string nodeId, string gcsAddress, string clusterId);

    [LoggerMessage(EventId = 502, Level = LogLevel.Information, Message = "Object store: {Path}, {CapacityMib} MiB")]
    private static partial void LogObjectStore(ILogger logger, string path, long capacityMib);

    [LoggerMessage(EventId = 503, Level = LogLevel.Information, Message = "Freed {Count} objects of finished job {JobId}")]
    private static partial void LogJobObjectsFreed(ILogger logger, int count, string jobId);

    [LoggerMessage(EventId = 505, Level = LogLevel.Information, Message = "The GCS was restarted (restart {Restarts}); listed {Count} object copies of this node again")]
    private static partial void LogCopiesReported(ILogger logger, int restarts, int count);

    [LoggerMessage(EventId = 504, Level = LogLevel.Information, Message = "Took back {Count} lease(s) of finished job {JobId}")]
    private static partial void LogJobLeasesReclaimed(ILogger logger, int count, string jobId);

    [LoggerMessage(EventId = 506, Level = LogLevel.Error, Message = "The raylet's {Loop} loop failed; retrying")]
    private static partial void LogLoopFault(ILogger logger, string loop, Exception error);

    [LoggerMessage(EventId = 501, Level = LogLevel.Warning, Message = "Cannot reach the GCS at {GcsAddress}: {Detail}")]
    private static partial void LogGcsUnreachable(ILogger logger, string gcsAddress, string detail);
}
