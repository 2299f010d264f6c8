using Google.Protobuf;
using Microsoft.Extensions.Logging;
using RaySharp.Gcs.Storage;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs.PlacementGroups;

/// <summary>
/// The GCS's placement groups (Ray's <c>GcsPlacementGroupManager</c> and its scheduler in one): the table, kept in the
/// store so that groups outlive a GCS restart, and one loop that places pending groups one at a time, oldest first
/// (groups being rescheduled before new ones). A placement is chosen by <see cref="BundlePlacementPolicy"/> against the
/// node table's view, then made real in two phases: every node prepares its bundles (locks the resources), and only when
/// all did are they committed; a prepare that fails (the view was stale, a node went away) rolls the others back and
/// the group tries again after a backoff. A group that fits nowhere waits, with the reason, until a node joins or
/// resources free up.
/// </summary>
internal sealed partial class GcsPlacementGroupManager : IAsyncDisposable
{
    /// <summary>The first wait after a failed two-phase attempt; it doubles per failure in a row.</summary>
    public static readonly TimeSpan InitialBackoff = TimeSpan.FromMilliseconds(100);

    /// <summary>The longest wait between attempts.</summary>
    public static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(5);

    /// <summary>How often waiting groups are tried again without a wake-up (resource reports carry none).</summary>
    public static readonly TimeSpan RescanInterval = TimeSpan.FromSeconds(1);

    private readonly IGcsStore _store;
    private readonly GcsNodeManager _nodes;
    private readonly IBundleReserver _reserver;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, Entry> _groups = new(StringComparer.Ordinal);
    private readonly List<string> _pending = [];
    private readonly Queue<string> _removed = new();
    private readonly int _maxRemovedKept;
    private TaskCompletionSource _wake = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _stopping = new();
    private Task _loop = Task.CompletedTask;

    /// <param name="maxRemovedKept">Most removed groups kept in the table (and the store) to be looked at, oldest dropped first.</param>
    public GcsPlacementGroupManager(IGcsStore store, GcsNodeManager nodes, IBundleReserver reserver, TimeProvider time, ILogger logger,
        int maxRemovedKept = GcsServerOptions.DefaultMaxRemovedPlacementGroups)
    {
        _maxRemovedKept = maxRemovedKept;
        _store = store;
        _nodes = nodes;
        _reserver = reserver;
        _time = time;
        _logger = logger;
        nodes.NodeAdded += _ => Wake();
        nodes.NodeRemoved += OnNodeRemoved;
    }

    private sealed class Entry(PlacementGroupTableData data)
    {
        public PlacementGroupTableData Data { get; } = data;
        public TaskCompletionSource<bool> Ready { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public int FailuresInARow { get; set; }
        public DateTimeOffset NotBefore { get; set; }
    }

    public void Start() => _loop = Task.Run(() => RunAsync(_stopping.Token));

    /// <summary>Registers a group and queues it; null when accepted, else why not (a name taken in its namespace).</summary>
    public async Task<string?> CreateAsync(PlacementGroupTableData spec)
    {
        var data = spec.Clone();
        data.State = PlacementGroupState.Pending;
        data.CreationTimeMs = _time.GetUtcNow().ToUnixTimeMilliseconds();
        foreach (var b in data.Bundles)
        {
            b.PlacementGroupId = data.PlacementGroupId;
            b.NodeId = "";
        }
        lock (_gate)
        {
            if (_groups.ContainsKey(data.PlacementGroupId)) return $"placement group {data.PlacementGroupId} exists already";
            if (data.Name.Length > 0 && _groups.Values.Any(g => g.Data.State != PlacementGroupState.Removed && g.Data.Name == data.Name && g.Data.RayNamespace == data.RayNamespace))
                return $"a placement group named '{data.Name}' exists already in namespace '{data.RayNamespace}'; remove it first or choose another name";
            _groups[data.PlacementGroupId] = new Entry(data);
            _pending.Add(data.PlacementGroupId);
            // The scheduling loop may change the entry from now on: what is stored is a copy taken here, since
            // serializing a message that another thread changes meanwhile fails (or stores a torn row).
            data = data.Clone();
        }
        await PersistAsync(data).ConfigureAwait(false);
        LogCreated(_logger, data.PlacementGroupId, data.Name, data.Strategy, data.Bundles.Count);
        Wake();
        return null;
    }

    public PlacementGroupTableData? Get(string id)
    {
        lock (_gate) return _groups.TryGetValue(id, out var e) ? e.Data.Clone() : null;
    }

    public PlacementGroupTableData? GetNamed(string name, string ns)
    {
        lock (_gate)
            return _groups.Values.FirstOrDefault(g => g.Data.State != PlacementGroupState.Removed && g.Data.Name == name && g.Data.RayNamespace == ns)?.Data.Clone();
    }

    public IReadOnlyList<PlacementGroupTableData> List()
    {
        lock (_gate) return _groups.Values.Select(g => g.Data.Clone()).OrderBy(g => g.CreationTimeMs).ToList();
    }

    /// <summary>True once the group is created (or was, before a node of it died); false at the timeout or when it was removed first.</summary>
    public async Task<bool> WaitUntilReadyAsync(string id, TimeSpan timeout, CancellationToken cancellationToken)
    {
        Task<bool> ready;
        Entry? group;
        lock (_gate)
        {
            if (!_groups.TryGetValue(id, out group)) return false;
            ready = group.Ready.Task;
        }
        try
        {
            // Ready stays completed once the group was created: a group removed since is not ready.
            if (!await ready.WaitAsync(timeout, _time, cancellationToken).ConfigureAwait(false)) return false;
            lock (_gate) return group.Data.State != PlacementGroupState.Removed;
        }
        catch (TimeoutException)
        {
            return false;
        }
    }

    /// <summary>Removes the group: its bundles are given back on their nodes (what runs in them is killed there). False when unknown.</summary>
    public async Task<bool> RemoveAsync(string id, string reason = "removed")
    {
        List<(NodeInfo Node, BundleSpec Bundle)> placed;
        PlacementGroupTableData data;
        List<string> dropped = [];
        lock (_gate)
        {
            if (!_groups.TryGetValue(id, out var entry)) return false;
            if (entry.Data.State == PlacementGroupState.Removed) return true;
            placed = [];
            foreach (var b in entry.Data.Bundles)
                if (b.NodeId.Length > 0 && _nodes.Get(b.NodeId) is { State: NodeState.Alive } node) placed.Add((node, b.Clone()));
            entry.Data.State = PlacementGroupState.Removed;
            entry.Data.StateMessage = reason;
            foreach (var b in entry.Data.Bundles) b.NodeId = "";
            _pending.Remove(id);
            entry.Ready.TrySetResult(false);
            data = entry.Data.Clone();
            dropped = ForgetOldestRemovedLocked(id);
        }
        await PersistAsync(data).ConfigureAwait(false);
        foreach (var old in dropped) await _store.DeleteAsync(GcsTables.PlacementGroups, old).ConfigureAwait(false);
        await Task.WhenAll(placed.Select(p => CancelQuietlyAsync(p.Node, p.Bundle))).ConfigureAwait(false);
        LogRemoved(_logger, id, reason);
        return true;
    }

    /// <summary>The job's groups that are not detached go with it, as its actors do.</summary>
    public async Task OnJobFinishedAsync(string jobId)
    {
        List<string> owned;
        lock (_gate)
            owned = _groups.Values.Where(g => !g.Data.IsDetached && g.Data.CreatorJobId == jobId && g.Data.State != PlacementGroupState.Removed)
                .Select(g => g.Data.PlacementGroupId).ToList();
        foreach (var id in owned) await RemoveAsync(id, $"its job {jobId} ended").ConfigureAwait(false);
    }

    /// <summary>
    /// A node died: each group with bundles there places just those again (RESCHEDULING), first in the queue; the
    /// bundles on other nodes keep running.
    /// </summary>
    private void OnNodeRemoved(NodeInfo node)
    {
        var changed = new List<PlacementGroupTableData>();
        lock (_gate)
        {
            foreach (var entry in _groups.Values)
            {
                var lost = entry.Data.Bundles.Where(b => b.NodeId == node.NodeId).ToList();
                if (lost.Count == 0 || entry.Data.State == PlacementGroupState.Removed) continue;
                foreach (var b in lost) b.NodeId = "";
                if (entry.Data.State == PlacementGroupState.Created) entry.Data.State = PlacementGroupState.Rescheduling;
                entry.Data.StateMessage = $"{lost.Count} bundle(s) lost with node {node.NodeId} ({node.NodeIpAddress}); placing them again";
                _pending.Remove(entry.Data.PlacementGroupId);
                _pending.Insert(0, entry.Data.PlacementGroupId);
                entry.FailuresInARow = 0;
                entry.NotBefore = default;
                changed.Add(entry.Data.Clone());
            }
        }
        foreach (var data in changed)
        {
            LogRescheduling(_logger, data.PlacementGroupId, node.NodeId);
            _ = PersistQuietlyAsync(data);
        }
        if (changed.Count > 0) Wake();
    }

    private void Wake()
    {
        lock (_gate) _wake.TrySetResult();
    }

    private async Task RunAsync(CancellationToken stopping)
    {
        while (!stopping.IsCancellationRequested)
        {
            Task woken;
            lock (_gate) woken = _wake.Task;
            try
            {
                await woken.WaitAsync(RescanInterval, _time, stopping).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (TimeoutException)
            {
            }
            // Reset before the pass: a wake-up during it runs the next pass at once.
            lock (_gate)
                if (_wake.Task.IsCompleted) _wake = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            await SchedulePendingAsync(stopping).ConfigureAwait(false);
        }
    }

    /// <summary>One pass over the queue: each group whose backoff is over gets one attempt, one group at a time.</summary>
    internal async Task SchedulePendingAsync(CancellationToken stopping)
    {
        List<Entry> due;
        var now = _time.GetUtcNow();
        lock (_gate) due = _pending.Select(id => _groups[id]).Where(e => e.NotBefore <= now).ToList();
        foreach (var entry in due)
        {
            if (stopping.IsCancellationRequested) return;
            try
            {
                await ScheduleAsync(entry, stopping).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OperationCanceledException || !stopping.IsCancellationRequested)
            {
                LogAttemptFailed(_logger, entry.Data.PlacementGroupId, e.Message);
                Backoff(entry, "placing failed: " + e.Message);
            }
        }
    }

    private async Task ScheduleAsync(Entry entry, CancellationToken stopping)
    {
        PlacementGroupTableData data;
        Dictionary<int, string> kept;
        List<NodeInfo> alive = _nodes.GetAll(aliveOnly: true).Where(n => !n.IsDraining).ToList();
        lock (_gate)
        {
            if (entry.Data.State == PlacementGroupState.Removed) return;
            data = entry.Data.Clone();
            entry.Data.SchedulingAttempts++;
            kept = data.Bundles.Where(b => b.NodeId.Length > 0).ToDictionary(b => b.BundleIndex, b => b.NodeId);
        }
        var candidates = alive.Select(n => new CandidateNode(n.NodeId, n.ResourcesTotal, n.ResourcesAvailable)).ToList();
        var placement = BundlePlacementPolicy.Place(data.Strategy, data.Bundles.Select(b => (IReadOnlyDictionary<string, double>)b.Resources).ToList(), candidates, kept);
        if (placement.Outcome != PlacementOutcome.Placed)
        {
            PlacementGroupTableData? changed = null;
            lock (_gate)
            {
                var infeasible = placement.Outcome == PlacementOutcome.Infeasible;
                if (entry.Data.StateMessage != placement.Reason || entry.Data.Infeasible != infeasible)
                {
                    entry.Data.StateMessage = placement.Reason;
                    entry.Data.Infeasible = infeasible;
                    changed = entry.Data.Clone();
                }
            }
            if (changed is not null)
            {
                LogWaiting(_logger, data.PlacementGroupId, placement.Reason ?? "");
                await PersistAsync(changed).ConfigureAwait(false);
            }
            return;
        }

        // Phase one: every node locks its bundles, or none keeps them.
        var byNode = placement.Nodes.GroupBy(p => p.Value, StringComparer.Ordinal)
            .Select(g => (Node: alive.First(n => n.NodeId == g.Key), Bundles: g.Select(p => WithNode(data.Bundles[p.Key], g.Key)).ToList()))
            .ToList();
        var prepared = await Task.WhenAll(byNode.Select(async n =>
        {
            try
            {
                var reply = await _reserver.PrepareAsync(n.Node, n.Bundles, stopping).ConfigureAwait(false);
                return (n.Node, n.Bundles, reply.Success, Message: reply.FailureMessage);
            }
            catch (Exception e) when (e is not OperationCanceledException || !stopping.IsCancellationRequested)
            {
                return (n.Node, n.Bundles, Success: false, Message: $"node {n.Node.NodeIpAddress} did not answer: {e.Message}");
            }
        })).ConfigureAwait(false);
        var failed = prepared.Where(p => !p.Success).ToList();
        bool removed;
        lock (_gate) removed = entry.Data.State == PlacementGroupState.Removed;
        if (failed.Count > 0 || removed)
        {
            await Task.WhenAll(prepared.Where(p => p.Success).SelectMany(p => p.Bundles.Select(b => CancelQuietlyAsync(p.Node, b)))).ConfigureAwait(false);
            if (!removed) Backoff(entry, string.Join("; ", failed.Select(f => f.Message)));
            return;
        }

        PlacementGroupTableData snapshot;
        lock (_gate)
        {
            foreach (var (_, bundles, _, _) in prepared)
                foreach (var b in bundles) entry.Data.Bundles[b.BundleIndex].NodeId = b.NodeId;
            entry.Data.State = PlacementGroupState.Prepared;
            snapshot = entry.Data.Clone();
        }
        // Stored before the commit: a GCS that restarts between the phases commits what it finds prepared.
        await PersistAsync(snapshot).ConfigureAwait(false);

        // Phase two. A node that dies meanwhile takes its bundles with it (OnNodeRemoved places them again).
        await Task.WhenAll(prepared.Select(async p =>
        {
            try
            {
                await _reserver.CommitAsync(p.Node, p.Bundles, stopping).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OperationCanceledException || !stopping.IsCancellationRequested)
            {
                LogCommitFailed(_logger, data.PlacementGroupId, p.Node.NodeIpAddress, e.Message);
                lock (_gate)
                    foreach (var b in p.Bundles) entry.Data.Bundles[b.BundleIndex].NodeId = "";
            }
        })).ConfigureAwait(false);

        lock (_gate)
        {
            if (entry.Data.State == PlacementGroupState.Removed) return;
            entry.FailuresInARow = 0;
            if (entry.Data.Bundles.Any(b => b.NodeId.Length == 0))
            {
                entry.Data.State = entry.Ready.Task.IsCompleted ? PlacementGroupState.Rescheduling : PlacementGroupState.Pending;
                entry.Data.StateMessage = "a node did not commit its bundles; placing them again";
            }
            else
            {
                entry.Data.State = PlacementGroupState.Created;
                entry.Data.StateMessage = "";
                entry.Data.Infeasible = false;
                entry.Data.CreatedTimeMs = _time.GetUtcNow().ToUnixTimeMilliseconds();
                _pending.Remove(entry.Data.PlacementGroupId);
                entry.Ready.TrySetResult(true);
            }
            snapshot = entry.Data.Clone();
        }
        await PersistAsync(snapshot).ConfigureAwait(false);
        if (snapshot.State == PlacementGroupState.Created) LogPlaced(_logger, snapshot.PlacementGroupId, string.Join(", ", snapshot.Bundles.Select(b => $"{b.BundleIndex}@{b.NodeId}")));
    }

    /// <summary>
    /// Queues a group just removed and drops the oldest removed ones past the bound, so that a job creating and removing
    /// groups forever does not grow the table (and every listing of it) forever. Returns the ids to delete from the store.
    /// </summary>
    private List<string> ForgetOldestRemovedLocked(string removedId)
    {
        _removed.Enqueue(removedId);
        var dropped = new List<string>();
        while (_removed.Count > _maxRemovedKept)
        {
            var oldest = _removed.Dequeue();
            if (_groups.Remove(oldest)) dropped.Add(oldest);
        }
        return dropped;
    }

    private static BundleSpec WithNode(BundleSpec bundle, string nodeId)
    {
        var b = bundle.Clone();
        b.NodeId = nodeId;
        return b;
    }

    private void Backoff(Entry entry, string message)
    {
        lock (_gate)
        {
            entry.FailuresInARow++;
            var wait = InitialBackoff * Math.Pow(2, Math.Min(entry.FailuresInARow - 1, 16));
            entry.NotBefore = _time.GetUtcNow() + (wait > MaxBackoff ? MaxBackoff : wait);
            entry.Data.StateMessage = message;
        }
    }

    private async Task CancelQuietlyAsync(NodeInfo node, BundleSpec bundle)
    {
        try
        {
            await _reserver.CancelAsync(node, bundle, _stopping.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // The node is gone or will release it itself: a raylet returns bundles the GCS no longer lists.
            LogCancelFailed(_logger, bundle.PlacementGroupId, bundle.BundleIndex, node.NodeIpAddress, e.Message);
        }
    }

    /// <summary>
    /// Takes the table over from the store (a GCS restart): groups that were prepared are committed (the commit is
    /// idempotent on the raylets), created ones are ready, the rest queue again; then every live node gives back the
    /// bundles the table does not list.
    /// </summary>
    public async Task LoadAsync(CancellationToken cancellationToken)
    {
        var rows = (await _store.GetAllAsync(GcsTables.PlacementGroups).ConfigureAwait(false))
            .Select(r => PlacementGroupTableData.Parser.ParseFrom(r.Value)).OrderBy(d => d.CreationTimeMs).ToList();
        foreach (var data in rows)
        {
            var entry = new Entry(data);
            List<string> dropped = [];
            lock (_gate)
            {
                _groups[data.PlacementGroupId] = entry;
                if (data.State == PlacementGroupState.Removed)
                {
                    entry.Ready.TrySetResult(false);
                    dropped = ForgetOldestRemovedLocked(data.PlacementGroupId);
                }
                else if (data.State == PlacementGroupState.Created) entry.Ready.TrySetResult(true);
                else if (data.State != PlacementGroupState.Prepared) _pending.Add(data.PlacementGroupId);
            }
            foreach (var old in dropped) await _store.DeleteAsync(GcsTables.PlacementGroups, old).ConfigureAwait(false);
            if (data.State == PlacementGroupState.Prepared) await RecommitAsync(entry, cancellationToken).ConfigureAwait(false);
        }
        await Task.WhenAll(_nodes.GetAll(aliveOnly: true).Select(async node =>
        {
            List<BundleSpec> inUse;
            lock (_gate)
                inUse = _groups.Values.Where(g => g.Data.State != PlacementGroupState.Removed)
                    .SelectMany(g => g.Data.Bundles.Where(b => b.NodeId == node.NodeId)).Select(b => b.Clone()).ToList();
            try
            {
                await _reserver.ReleaseUnusedAsync(node, inUse, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                LogCancelFailed(_logger, "(unused)", -1, node.NodeIpAddress, e.Message);
            }
        })).ConfigureAwait(false);
        Wake();
    }

    private async Task RecommitAsync(Entry entry, CancellationToken cancellationToken)
    {
        var byNode = entry.Data.Bundles.Where(b => b.NodeId.Length > 0).GroupBy(b => b.NodeId, StringComparer.Ordinal).ToList();
        var lost = false;
        foreach (var group in byNode)
        {
            var node = _nodes.Get(group.Key);
            try
            {
                if (node is not { State: NodeState.Alive }) throw new InvalidOperationException("node is gone");
                await _reserver.CommitAsync(node, group.Select(b => b.Clone()).ToList(), cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                LogCommitFailed(_logger, entry.Data.PlacementGroupId, node?.NodeIpAddress ?? group.Key, e.Message);
                foreach (var b in group) b.NodeId = "";
                lost = true;
            }
        }
        PlacementGroupTableData snapshot;
        lock (_gate)
        {
            if (lost)
            {
                entry.Data.State = PlacementGroupState.Pending;
                _pending.Add(entry.Data.PlacementGroupId);
            }
            else
            {
                entry.Data.State = PlacementGroupState.Created;
                entry.Ready.TrySetResult(true);
            }
            snapshot = entry.Data.Clone();
        }
        await PersistAsync(snapshot).ConfigureAwait(false);
    }

    private Task PersistAsync(PlacementGroupTableData data) => _store.PutAsync(GcsTables.PlacementGroups, data.PlacementGroupId, data.ToByteArray());

    private async Task PersistQuietlyAsync(PlacementGroupTableData data)
    {
        try
        {
            await PersistAsync(data).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            LogAttemptFailed(_logger, data.PlacementGroupId, "storing its state failed: " + e.Message);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        try { await _loop.ConfigureAwait(false); }
        catch (OperationCanceledException) { }
        _stopping.Dispose();
    }

    [LoggerMessage(EventId = 7000, Level = LogLevel.Information, Message = "Placement group {Id} '{Name}' registered: {Strategy}, {Count} bundle(s)")]
    private static partial void LogCreated(ILogger logger, string id, string name, PlacementStrategy strategy, int count);

    [LoggerMessage(EventId = 7001, Level = LogLevel.Information, Message = "Placement group {Id} created: {Bundles}")]
    private static partial void LogPlaced(ILogger logger, string id, string bundles);

    [LoggerMessage(EventId = 7002, Level = LogLevel.Information, Message = "Placement group {Id} waits: {Reason}")]
    private static partial void LogWaiting(ILogger logger, string id, string reason);

    [LoggerMessage(EventId = 7003, Level = LogLevel.Warning, Message = "Placement group {Id}: attempt failed ({Message}); trying again after a backoff")]
    private static partial void LogAttemptFailed(ILogger logger, string id, string message);

    [LoggerMessage(EventId = 7004, Level = LogLevel.Warning, Message = "Placement group {Id}: node {Node} did not commit ({Message})")]
    private static partial void LogCommitFailed(ILogger logger, string id, string node, string message);

    [LoggerMessage(EventId = 7005, Level = LogLevel.Warning, Message = "Placement group {Id}: bundle {Index} could not be returned on {Node} ({Message})")]
    private static partial void LogCancelFailed(ILogger logger, string id, int index, string node, string message);

    [LoggerMessage(EventId = 7006, Level = LogLevel.Information, Message = "Placement group {Id} removed: {Reason}")]
    private static partial void LogRemoved(ILogger logger, string id, string reason);

    [LoggerMessage(EventId = 7007, Level = LogLevel.Warning, Message = "Placement group {Id}: node {Node} died; placing its bundles there again")]
    private static partial void LogRescheduling(ILogger logger, string id, string node);
}
