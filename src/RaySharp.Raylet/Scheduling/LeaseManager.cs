using Microsoft.Extensions.Logging;
using RaySharp.Common;
using RaySharp.Raylet.WorkerPool;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Raylet.Scheduling;

/// <summary>
/// The lease protocol's local half: queues lease requests, grants workers when the node's resources allow, answers
/// "retry at node X" (spillback) when another node should run the shape, and keeps requests that no node can satisfy
/// as infeasible (reported to the GCS, never dropped). Resources are held from grant to return.
/// </summary>
internal sealed partial class LeaseManager
{
    private readonly RayletOptions _options;
    private readonly WorkerPool.WorkerPool _pool;
    private readonly Func<IReadOnlyList<NodeView>> _remoteNodes;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, double> _total;
    private readonly Dictionary<string, double> _available;
    private readonly List<PendingLease> _queue = [];
    private readonly Dictionary<string, Lease> _leases = new(StringComparer.Ordinal);
    // Shapes spilled to each node since the view of that node was last refreshed: counted as used there, so a burst
    // of requests spreads over the cluster instead of all following one stale view to the same node.
    private readonly Dictionary<string, Dictionary<string, double>> _spilledSinceRefresh = new(StringComparer.Ordinal);
    private long _nextLease;
    // When a lease was last held or asked for (Environment.TickCount64): where the node's idle time starts.
    private long _lastActive = Environment.TickCount64;
    // GPU indices not held by a lease; a lease asking for n GPUs (rounded up) gets n of them.
    private readonly SortedSet<int> _freeGpus;
    private readonly Func<long> _primaryObjects;
    // Set once a drain was accepted, under _gate: from then on no lease is granted here (the node is about to go).
    private bool _draining;
    // Placement-group bundles, on _total and _available: changed under _gate like every grant.
    private readonly BundleReservations _bundles;

    private sealed record Lease(string LeaseId, WorkerHandle Worker, IReadOnlyDictionary<string, double> Resources, IReadOnlyList<int> GpuIds, string JobId)
    {
        /// <summary>True while the worker is blocked in Get and has lent its CPUs back.</summary>
        public bool Blocked { get; set; }

        public Dictionary<string, double> Cpus => Resources.Where(r => r.Key == ResourceSet.Cpu).ToDictionary(r => r.Key, r => r.Value);
    }

    private sealed class PendingLease(RequestWorkerLeaseRequest request)
    {
        public RequestWorkerLeaseRequest Request { get; } = request;
        /// <summary>What the lease holds.</summary>
        public Dictionary<string, double> Shape { get; } = new(request.Resources, StringComparer.Ordinal);
        /// <summary>What must be free to grant it (an actor may need a CPU to be placed and hold none).</summary>
        public Dictionary<string, double> Placement { get; } = request.PlacementResources.Count > 0
            ? new(request.PlacementResources, StringComparer.Ordinal)
            : new(request.Resources, StringComparer.Ordinal);
        public TaskCompletionSource<RequestWorkerLeaseReply> Reply { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public bool Infeasible { get; set; }
        // Both under the manager's lock, so a grant and the caller giving up always see each other: whichever comes
        // second hands the lease back (a grant given to a call that is gone would hold its worker forever).
        public bool Cancelled { get; set; }
        public RequestWorkerLeaseReply? Granted { get; set; }
    }

    /// <param name="primaryObjects">Primary copies in the node's store: a node holding one refuses to drain.</param>
    public LeaseManager(RayletOptions options, WorkerPool.WorkerPool pool, Func<IReadOnlyList<NodeView>> remoteNodes, ILogger<LeaseManager> logger,
        Func<long>? primaryObjects = null)
    {
        _primaryObjects = primaryObjects ?? (() => 0);
        _options = options;
        _pool = pool;
        _remoteNodes = remoteNodes;
        _logger = logger;
        _total = new Dictionary<string, double>(options.Resources, StringComparer.Ordinal);
        _available = new Dictionary<string, double>(options.Resources, StringComparer.Ordinal);
        _bundles = new BundleReservations(_total, _available);
        _freeGpus = new SortedSet<int>(Enumerable.Range(0, (int)Math.Floor(options.Resources.GetValueOrDefault(ResourceSet.Gpu))));
        pool.WorkerAvailable += Dispatch;
        pool.WorkerExited += OnWorkerExited;
    }

    /// <summary>Raised when available resources or the queue changed, so the raylet reports soon.</summary>
    public event Action? Changed;

    /// <summary>The node's resources, with the group resources of the bundles committed here.</summary>
    public Dictionary<string, double> TotalSnapshot()
    {
        lock (_gate) return new Dictionary<string, double>(_total, StringComparer.Ordinal);
    }

    public IReadOnlyList<HeldBundle> Bundles()
    {
        lock (_gate) return _bundles.Held();
    }

    public Dictionary<string, double> AvailableSnapshot()
    {
        lock (_gate) return new Dictionary<string, double>(_available, StringComparer.Ordinal);
    }

    public (List<ResourceDemand> Pending, List<ResourceDemand> Infeasible) Demands()
    {
        lock (_gate)
        {
            return (Group(_queue.Where(p => !p.Infeasible)), Group(_queue.Where(p => p.Infeasible)));
        }

        static List<ResourceDemand> Group(IEnumerable<PendingLease> items) =>
            items.GroupBy(p => ResourceSet.Describe(p.Placement)).Select(g =>
            {
                var d = new ResourceDemand { Count = g.Count() };
                d.Shape.Add(g.First().Placement);
                return d;
            }).ToList();
    }

    /// <summary>
    /// How long this node has held and queued no lease (Ray's idle duration); zero while it holds or queues one. A
    /// lease granted and returned between two reports still counts: its return restarts the idle time.
    /// </summary>
    public TimeSpan IdleFor()
    {
        lock (_gate)
        {
            var now = Environment.TickCount64;
            // A bundle is held for its group's work to come: the node is in use, as Ray counts reserved resources.
            if (_leases.Count > 0 || _queue.Count > 0 || _bundles.Count > 0) _lastActive = now;
            return TimeSpan.FromMilliseconds(now - _lastActive);
        }
    }

    public (int Pending, int Infeasible) QueueCounts()
    {
        lock (_gate) return (_queue.Count(p => !p.Infeasible), _queue.Count(p => p.Infeasible));
    }

    public bool IsDraining
    {
        get { lock (_gate) return _draining; }
    }

    /// <summary>
    /// Accepts a drain only while the node is idle: no lease granted, none queued, no primary copy in its store. The
    /// check and the mark are one step under the lock, so no lease is granted between them; once accepted, queued and
    /// new requests go elsewhere (<see cref="Dispatch"/>). A node already draining accepts again (a retried drain).
    /// </summary>
    /// <returns>Null when accepted, else why not.</returns>
    public string? TryDrain()
    {
        lock (_gate)
        {
            if (_draining) return null;
            if (_leases.Count > 0) return $"the node holds {_leases.Count} lease(s)";
            if (_queue.Count > 0) return $"the node has {_queue.Count} lease request(s) queued";
            if (_bundles.Count > 0) return $"the node holds {_bundles.Count} placement group bundle(s)";
            // The store's lock is taken inside this one; the store never calls back into the lease manager.
            var primaries = _primaryObjects();
            if (primaries > 0) return $"the node holds the primary copy of {primaries} object(s)";
            _draining = true;
        }
        LogDraining(_logger);
        Changed?.Invoke();
        return null;
    }

    /// <summary>The other alive nodes that spillback decisions choose from now.</summary>
    public IReadOnlyList<NodeView> RemoteNodes() => _remoteNodes();

    public Task<RequestWorkerLeaseReply> RequestAsync(RequestWorkerLeaseRequest request, CancellationToken cancellationToken)
    {
        var pending = new PendingLease(request);
        lock (_gate) _queue.Add(pending);
        // A caller that gives up (deadline, disconnect) leaves the queue; a grant racing with it is handed back.
        cancellationToken.Register(() =>
        {
            bool removed;
            RequestWorkerLeaseReply? granted;
            lock (_gate)
            {
                removed = _queue.Remove(pending);
                pending.Cancelled = true;
                granted = pending.Granted;
            }
            if (removed) pending.Reply.TrySetCanceled(cancellationToken);
            else if (granted?.WorkerAddress is not null) Return(granted.LeaseId, disconnect: false);
        });
        Dispatch();
        return pending.Reply.Task;
    }

    /// <summary>
    /// A leased worker blocked in Get lends its CPUs back (so the tasks it waits for can run here) and takes them again
    /// when it unblocks, even if that briefly oversubscribes the node, as Ray does.
    /// </summary>
    public bool SetBlocked(string workerId, bool blocked)
    {
        lock (_gate)
        {
            var lease = _leases.Values.FirstOrDefault(l => l.Worker.WorkerId == workerId);
            if (lease is null) return false;
            if (lease.Blocked == blocked) return true;
            lease.Blocked = blocked;
            if (blocked) ResourceSet.Add(_available, lease.Cpus, _total);
            else ResourceSet.Subtract(_available, lease.Cpus);
        }
        Changed?.Invoke();
        if (blocked) Dispatch();
        return true;
    }

    public bool Return(string leaseId, bool disconnect)
    {
        Lease? lease;
        lock (_gate)
        {
            if (!_leases.Remove(leaseId, out lease)) return false;
            ReleaseLocked(lease);
        }
        LogReturned(_logger, leaseId, lease.Worker.WorkerId);
        _pool.Return(lease.Worker, disconnect);
        Changed?.Invoke();
        Dispatch();
        return true;
    }

    /// <summary>
    /// The GPUs a shape runs on: its own, or its placement group's (a bundle's GPUs were taken from the node's GPU
    /// count, not from its indices, so a lease of them draws indices like any). A lease asks for a group's GPUs under
    /// the bundle's name and the wildcard at once: the same GPUs, counted once.
    /// </summary>
    internal static double GpusOf(IReadOnlyDictionary<string, double> shape) =>
        shape.Where(r => r.Key == ResourceSet.Gpu || r.Key.StartsWith(ResourceSet.Gpu + "_group_", StringComparison.Ordinal) && BundleResources.IsGroupResource(r.Key))
            .Select(r => r.Value).DefaultIfEmpty(0).Max();

    /// <summary>A lease removed from the table gives its GPUs and resources back (a blocked one lent its CPUs already).</summary>
    private void ReleaseLocked(Lease lease)
    {
        _lastActive = Environment.TickCount64;
        _freeGpus.UnionWith(lease.GpuIds);
        // Only names the node still has: a group resource whose bundle went must not come back as a free resource.
        var back = lease.Resources.Where(r => !(lease.Blocked && r.Key == ResourceSet.Cpu) && _total.ContainsKey(r.Key)).ToDictionary(r => r.Key, r => r.Value);
        ResourceSet.Add(_available, back, _total);
    }

    /// <summary>
    /// Prepares bundles (all or none, see <see cref="BundleReservations.Prepare"/>). A draining node takes none: it is
    /// about to go, and the group would lose them with it.
    /// </summary>
    /// <returns>Null when all are held; else why not.</returns>
    public string? PrepareBundles(IReadOnlyList<BundleRequest> bundles)
    {
        string? failure;
        lock (_gate)
        {
            failure = _draining ? "this node is draining and about to be terminated" : _bundles.Prepare(bundles);
            if (failure is null) _lastActive = Environment.TickCount64;
        }
        if (failure is not null)
        {
            LogPrepareFailed(_logger, failure);
            return failure;
        }
        foreach (var b in bundles) LogBundlePrepared(_logger, b.Index, b.GroupId, ResourceSet.Describe(b.Resources));
        Changed?.Invoke();
        return null;
    }

    /// <returns>Null when all are committed; else the bundle that was never prepared here.</returns>
    public string? CommitBundles(IReadOnlyList<(string GroupId, int Index)> bundles)
    {
        string? failure;
        lock (_gate) failure = _bundles.Commit(bundles);
        if (failure is not null) return failure;
        foreach (var (groupId, index) in bundles) LogBundleCommitted(_logger, index, groupId);
        Changed?.Invoke();
        // Leases of the group may have queued before the commit reached this node.
        Dispatch();
        return null;
    }

    /// <summary>
    /// Gives a bundle back. Leases holding any of its group's resources are taken back first and their workers
    /// killed, as Ray does when a group is removed: a lease may hold the group's wildcard rather than this bundle's
    /// names, so which bundle it runs in is not known, and work of a group being removed must not outlive it.
    /// </summary>
    /// <returns>False when this node did not hold the bundle (nothing done).</returns>
    public bool CancelBundle(string groupId, int index)
    {
        List<Lease> killed;
        lock (_gate)
        {
            if (_bundles.Find(groupId, index) is null) return false;
            killed = _leases.Values.Where(l => l.Resources.Any(r => r.Value > 0 && BundleResources.BelongsTo(r.Key, groupId))).ToList();
            foreach (var lease in killed)
            {
                _leases.Remove(lease.LeaseId);
                ReleaseLocked(lease);
            }
            _bundles.Cancel(groupId, index);
            _lastActive = Environment.TickCount64;
        }
        LogBundleCancelled(_logger, index, groupId, killed.Count);
        foreach (var lease in killed) _pool.Return(lease.Worker, disconnect: true);
        Changed?.Invoke();
        Dispatch();
        return true;
    }

    /// <summary>Cancels every bundle held here that <paramref name="inUse"/> does not name (the GCS forgot it).</summary>
    public int ReleaseUnusedBundles(IReadOnlyCollection<(string GroupId, int Index)> inUse)
    {
        var keep = inUse.ToHashSet();
        var released = 0;
        foreach (var b in Bundles())
        {
            if (!keep.Contains((b.GroupId, b.Index)) && CancelBundle(b.GroupId, b.Index)) released++;
        }
        return released;
    }

    /// <summary>Takes back every lease of a job that ended, stopping their workers (which may hold the job's state).</summary>
    public int ReclaimJob(string jobId)
    {
        List<string> ids;
        lock (_gate) ids = _leases.Values.Where(l => l.JobId == jobId).Select(l => l.LeaseId).ToList();
        foreach (var id in ids) Return(id, disconnect: true);
        return ids.Count;
    }

    public IReadOnlyDictionary<string, string> LeaseOfWorker()
    {
        lock (_gate) return _leases.Values.ToDictionary(l => l.Worker.WorkerId, l => l.LeaseId, StringComparer.Ordinal);
    }

    private void OnWorkerExited(WorkerHandle worker, int exitCode)
    {
        lock (_gate)
        {
            // The lessee learns of the death when its push to the worker fails; the resources come back now.
            if (worker.LeaseId is { } id && _leases.Remove(id, out var lease)) ReleaseLocked(lease);
        }
        Changed?.Invoke();
        Dispatch();
    }

    /// <summary>The raylet refreshed its view of other nodes: their reported availability now includes earlier spills.</summary>
    public void OnViewRefreshed()
    {
        lock (_gate) _spilledSinceRefresh.Clear();
        Dispatch();
    }

    private List<NodeView> AdjustedRemotes(IReadOnlyList<NodeView> remotes) =>
        remotes.Select(n =>
        {
            if (!_spilledSinceRefresh.TryGetValue(n.NodeId, out var spilled)) return n;
            var available = new Dictionary<string, double>(n.Available, StringComparer.Ordinal);
            ResourceSet.Subtract(available, spilled);
            return n with { Available = available };
        }).ToList();

    /// <summary>Decides every queued request against the current view. Called on any change that could unblock one.</summary>
    public void Dispatch()
    {
        var completions = new List<(PendingLease, RequestWorkerLeaseReply)>();
        var waitingForWorkers = 0;
        var changed = false;
        var reported = _remoteNodes();
        lock (_gate)
        {
            var remotes = AdjustedRemotes(reported);
            var local = new NodeView(_options.NodeId, _options.NodeIpAddress, 0, _total, _available);
            for (var i = 0; i < _queue.Count; i++)
            {
                var p = _queue[i];
                var placement = _draining
                    ? ClusterResourceScheduler.DecideWhileDraining(p.Placement, p.Request.Strategy, local, remotes)
                    : ClusterResourceScheduler.Decide(p.Placement, p.Request.Strategy, p.Request.GrantOrReject, local, remotes);
                if (_draining && placement.Kind == PlacementKind.Infeasible && p.Request.GrantOrReject)
                {
                    // Spilled here before the drain was known: its first raylet chooses again, among nodes that stay.
                    _queue.RemoveAt(i--);
                    changed = true;
                    completions.Add((p, new RequestWorkerLeaseReply { Draining = true }));
                    continue;
                }
                switch (placement.Kind)
                {
                    case PlacementKind.Local when ResourceSet.Fits(p.Placement, _available) && ResourceSet.Fits(p.Shape, _available):
                        var leaseId = $"{UniqueId.Short(_options.NodeId)}-{++_nextLease}";
                        var worker = _pool.TryPopIdle(leaseId, p.Request.JobId);
                        if (worker is null)
                        {
                            // Resources are there but no idle worker: keep the request and have one started.
                            waitingForWorkers++;
                            p.Infeasible = false;
                            continue;
                        }
                        ResourceSet.Subtract(_available, p.Shape);
                        var gpuIds = _freeGpus.Take((int)Math.Ceiling(GpusOf(p.Shape))).ToList();
                        foreach (var id in gpuIds) _freeGpus.Remove(id);
                        _leases[leaseId] = new Lease(leaseId, worker, p.Shape, gpuIds, p.Request.JobId);
                        worker.ServeJob(p.Request.JobId);
                        _queue.RemoveAt(i--);
                        changed = true;
                        var granted = new RequestWorkerLeaseReply
                        {
                            LeaseId = leaseId,
                            WorkerAddress = new WorkerAddress
                            {
                                NodeId = _options.NodeId,
                                IpAddress = _options.NodeIpAddress,
                                Port = worker.Port,
                                WorkerId = worker.WorkerId,
                                Pid = worker.Pid,
                            },
                        };
                        granted.GpuIds.Add(gpuIds);
                        completions.Add((p, granted));
                        break;
                    case PlacementKind.Local:
                        if (p.Infeasible) changed = true;
                        p.Infeasible = false; // feasible here, waiting for resources to free up
                        break;
                    case PlacementKind.Remote:
                        _queue.RemoveAt(i--);
                        changed = true;
                        if (!_spilledSinceRefresh.TryGetValue(placement.Node!.NodeId, out var spilled))
                            _spilledSinceRefresh[placement.Node.NodeId] = spilled = new Dictionary<string, double>(StringComparer.Ordinal);
                        ResourceSet.Add(spilled, p.Placement, new Dictionary<string, double>());
                        remotes = AdjustedRemotes(reported);
                        completions.Add((p, new RequestWorkerLeaseReply
                        {
                            RetryAtNodeId = placement.Node!.NodeId,
                            RetryAtIpAddress = placement.Node.IpAddress,
                            RetryAtPort = placement.Node.Port,
                        }));
                        break;
                    case PlacementKind.Rejected:
                        _queue.RemoveAt(i--);
                        changed = true;
                        completions.Add((p, new RequestWorkerLeaseReply { Rejected = true, FailureMessage = placement.Reason ?? "rejected" }));
                        break;
                    case PlacementKind.Infeasible:
                        if (!p.Infeasible)
                        {
                            p.Infeasible = true;
                            changed = true;
                            LogInfeasible(_logger, ResourceSet.Describe(p.Placement));
                        }
                        break;
                }
            }
        }
        if (waitingForWorkers > 0) _pool.EnsureAvailable(waitingForWorkers);
        foreach (var (p, reply) in completions)
        {
            bool cancelled;
            lock (_gate)
            {
                cancelled = p.Cancelled;
                if (!cancelled) p.Granted = reply;
            }
            if (cancelled || !p.Reply.TrySetResult(reply))
            {
                p.Reply.TrySetCanceled();
                if (reply.WorkerAddress is not null) Return(reply.LeaseId, disconnect: false);
            }
        }
        if (changed) Changed?.Invoke();
    }

    [LoggerMessage(EventId = 403, Level = LogLevel.Information, Message = "Prepared bundle {Index} of placement group {GroupId}: {Shape}")]
    private static partial void LogBundlePrepared(ILogger logger, int index, string groupId, string shape);

    [LoggerMessage(EventId = 404, Level = LogLevel.Information, Message = "Preparing placement group bundles failed: {Reason}")]
    private static partial void LogPrepareFailed(ILogger logger, string reason);

    [LoggerMessage(EventId = 405, Level = LogLevel.Information, Message = "Committed bundle {Index} of placement group {GroupId}")]
    private static partial void LogBundleCommitted(ILogger logger, int index, string groupId);

    [LoggerMessage(EventId = 406, Level = LogLevel.Information, Message = "Cancelled bundle {Index} of placement group {GroupId}; killed {Killed} worker(s) of the group")]
    private static partial void LogBundleCancelled(ILogger logger, int index, string groupId, int killed);

    [LoggerMessage(EventId = 402, Level = LogLevel.Information, Message = "Drain accepted: this node grants no new lease")]
    private static partial void LogDraining(ILogger logger);

    [LoggerMessage(EventId = 400, Level = LogLevel.Debug, Message = "Lease {LeaseId} on worker {WorkerId} returned")]
    private static partial void LogReturned(ILogger logger, string leaseId, string workerId);

    [LoggerMessage(EventId = 401, Level = LogLevel.Warning, Message = "No node in the cluster can ever satisfy {Shape}; the request waits until one joins")]
    private static partial void LogInfeasible(ILogger logger, string shape);
}
