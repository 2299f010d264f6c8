using RaySharp.Autoscaler.Config;
using RaySharp.Autoscaler.Providers;

namespace RaySharp.Autoscaler.Scaling;

/// <summary>What one tick did.</summary>
/// <param name="Launched">Nodes the provider made, by type.</param>
/// <param name="Drained">Provider ids of idle nodes asked to drain.</param>
/// <param name="Terminated">Provider ids of nodes given back (drained idle nodes, died ones, failed setups).</param>
internal sealed record AutoscalerUpdate(
    IReadOnlyDictionary<string, int> Launched,
    IReadOnlyList<string> Drained,
    IReadOnlyList<string> Terminated,
    IReadOnlyList<ResourceDemand> Infeasible);

/// <summary>
/// Ray's <c>StandardAutoscaler</c>: one <see cref="UpdateAsync"/> per tick (the monitor calls it every
/// <see cref="AutoscalerOptions.UpdateInterval"/> with a fresh <see cref="LoadSnapshot"/>). The provider's list of
/// nodes is the truth of what exists, so a restarted autoscaler picks up where the last one stopped; the snapshot is the
/// truth of what has joined and what it does, and a node launched is pending until a live node of its address is in it.
/// The decisions are <see cref="ResourceDemandScheduler"/>'s (scale up) and <see cref="ScaleDownPolicy"/>'s (scale
/// down); this class carries them out and remembers what a tick cannot see: setups under way, failures and backoff,
/// which nodes had joined (so one missing or dead since is known to have died).
/// Ticks must not overlap; the setups they start run on between ticks.
/// </summary>
internal sealed class StandardAutoscaler : IAsyncDisposable
{
    private readonly ClusterConfig _config;
    private readonly INodeProvider _provider;
    private readonly Func<ProviderNode, CancellationToken, Task> _setUp;
    private readonly Func<NodeLoad, CancellationToken, Task<bool>>? _drainNode;
    private readonly TimeProvider _time;
    private readonly AutoscalerOptions _options;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Lock _gate = new();

    // Guarded by _gate: setups finish on their own, outside any tick.
    private readonly Dictionary<string, (Task Task, string Type)> _setups = new(StringComparer.Ordinal);
    private readonly HashSet<string> _setupFailed = new(StringComparer.Ordinal);
    // Since when a node has waited for its raylet to join: its setup's end, or when a tick first saw it without a setup
    // of ours (a node the monitor found after a restart).
    private readonly Dictionary<string, DateTimeOffset> _waitingSince = new(StringComparer.Ordinal);
    private readonly LaunchBackoff _backoff;

    // Touched by ticks only.
    private readonly HashSet<string> _joined = new(StringComparer.Ordinal);
    private readonly Dictionary<string, IReadOnlyDictionary<string, double>> _learned = new(StringComparer.Ordinal);
    private int _ticking;

    /// <param name="setUp">Brings a created node up (the launcher's NodeUpdater: wait for SSH, sync files, run the
    /// setup and start commands); a throw counts as a failed setup.</param>
    /// <param name="drainNode">Asks the GCS to drain an idle node before it is terminated; false when the node refused
    /// (it took work meanwhile). Null: no drain is needed, the node is already empty when chosen.</param>
    public StandardAutoscaler(
        ClusterConfig config,
        INodeProvider provider,
        Func<ProviderNode, CancellationToken, Task> setUp,
        TimeProvider time,
        AutoscalerOptions? options = null,
        Func<NodeLoad, CancellationToken, Task<bool>>? drainNode = null)
    {
        _config = config;
        _provider = provider;
        _setUp = setUp;
        _drainNode = drainNode;
        _time = time;
        _options = options ?? new AutoscalerOptions();
        _backoff = new LaunchBackoff(_options);
        _summary = new AutoscalerSummary { Time = time.GetUtcNow() };
    }

    /// <summary>As of the last tick, with the failures up to now (a setup may fail between ticks).</summary>
    public AutoscalerSummary Summary
    {
        get
        {
            lock (_gate) return _summary with { RecentFailures = _backoff.Recent };
        }
    }

    private AutoscalerSummary _summary;

    /// <summary>Completes once every setup started so far has finished (for shutdown, and for tests).</summary>
    public Task WhenSetupsDoneAsync()
    {
        lock (_gate) return Task.WhenAll(_setups.Values.Select(s => s.Task));
    }

    public async Task<AutoscalerUpdate> UpdateAsync(LoadSnapshot snapshot, CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _ticking, 1) == 1) throw new InvalidOperationException("StandardAutoscaler.UpdateAsync must not be called while a tick runs");
        try
        {
            return await TickAsync(snapshot, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            Volatile.Write(ref _ticking, 0);
        }
    }

    private async Task<AutoscalerUpdate> TickAsync(LoadSnapshot snapshot, CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        var providerNodes = await _provider.NonTerminatedNodesAsync(cancellationToken).ConfigureAwait(false);
        PruneSetups(providerNodes);
        var view = ClusterView.Build(_config, providerNodes, snapshot, _joined, IsSetupFailed, SetupState, ResourcesOf, n => JoinTimedOut(n, now));
        foreach (var w in view.Joined)
        {
            if (w.TypeName is null) continue;
            if (_joined.Add(w.ProviderNodeId)) lock (_gate) _backoff.Succeeded(w.TypeName);
            if (_config.AvailableNodeTypes.TryGetValue(w.TypeName, out var t) && t.Resources.Count == 0) _learned.TryAdd(w.TypeName, w.Load.Total);
        }

        // Nodes that will not join are given back first, so that what replaces them is planned in the same tick.
        var gone = view.Died.Select(n => (Node: n, Reason: "raylet died"))
            .Concat(view.SetupFailed.Select(n => (Node: n, Reason: "setup failed")))
            .Concat(view.NeverJoined.Select(n => (Node: n, Reason: "did not join")))
            .ToList();
        var goneResults = await Task.WhenAll(gone.Select(g => TerminateAsync(g.Node, g.Reason, now, cancellationToken))).ConfigureAwait(false);
        var terminated = gone.Zip(goneResults).Where(g => g.Second).Select(g => g.First.Node).ToList();
        var diedAndGone = view.Died.Where(terminated.Contains).ToList();
        lock (_gate)
        {
            foreach (var dead in diedAndGone)
                _backoff.Failed(new AutoscalerFailure(now, TypeOf(dead), dead.Ip, "raylet died; the node was replaced"), backOff: false);
            // A node that never joins is a launch that failed late (a raylet that cannot reach the GCS, a wrong token):
            // launching the type again at once would most likely fail the same way.
            foreach (var lost in view.NeverJoined.Where(terminated.Contains))
                _backoff.Failed(new AutoscalerFailure(now, TypeOf(lost), lost.Ip, $"did not join within {Describe(_options.NodeJoinTimeout)}; the node was terminated"), backOff: true);
        }

        // Scale up. A died node is replaced as it was (Ray's autoscaler recovers it); the replacement is pending capacity
        // for the scheduler, so the tasks it ran, queued again, do not launch a second node for the same work.
        var schedulerConfig = BuildSchedulerConfig(view);
        var replacements = diedAndGone.Select(TypeOf).Where(t => schedulerConfig.WorkerTypes.ContainsKey(t)).ToList();
        var nodes = view.SchedulingNodes.Concat(replacements.Select(t => Pending(schedulerConfig, t))).ToList();
        var demands = ResourceShapes.Group(snapshot.PendingDemands.Concat(snapshot.InfeasibleDemands));
        var plan = ResourceDemandScheduler.GetNodesToLaunch(schedulerConfig, nodes, demands, snapshot.ResourceRequests, snapshot.PlacementGroups);
        var launches = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var t in replacements) launches[t] = launches.GetValueOrDefault(t) + 1;
        foreach (var (t, n) in plan.ToLaunch) launches[t] = launches.GetValueOrDefault(t) + n;
        lock (_gate)
        {
            foreach (var t in launches.Keys.ToList())
                if (_backoff.Waiting(t, now)) launches.Remove(t);
        }

        // Scale down: drain first (the GCS refuses a node that took work meanwhile), terminate once drained.
        var minWorkers = _config.WorkerTypes.ToDictionary(t => t.Key, t => t.Value.MinWorkers, StringComparer.Ordinal);
        var idle = ScaleDownPolicy.NodesToDrain(view.Joined, minWorkers, view.OtherTotals, snapshot.ResourceRequests,
            TimeSpan.FromMinutes(_config.IdleTimeoutMinutes), now);
        var left = providerNodes.Where(n => !n.IsHead && !terminated.Contains(n)).GroupBy(TypeOf)
            .ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        var limits = _config.WorkerTypes.ToDictionary(t => t.Key, t => (t.Value.MinWorkers, t.Value.MaxWorkers), StringComparer.Ordinal);
        idle = [.. idle, .. ScaleDownPolicy.SurplusToDrain(view.Joined, idle, left, limits, _config.MaxWorkers)];
        var drainResults = await Task.WhenAll(idle.Select(w => DrainAsync(w, now, cancellationToken))).ConfigureAwait(false);
        var toTerminate = idle.Zip(drainResults).Where(d => d.Second).Select(d => view.ProviderNode(d.First)).ToList();
        var idleResults = await Task.WhenAll(toTerminate.Select(n => TerminateAsync(n, "idle", now, cancellationToken))).ConfigureAwait(false);
        terminated.AddRange(toTerminate.Zip(idleResults).Where(t => t.Second).Select(t => t.First));
        foreach (var node in terminated) _joined.Remove(node.Id);

        var made = await Task.WhenAll(launches.Select(l => LaunchAsync(l.Key, l.Value, now, cancellationToken))).ConfigureAwait(false);

        var pending = view.Pending.Concat(made.SelectMany(m => m).Select(n => new PendingNode(n.Ip, TypeOf(n), SetupState(n.Id) ?? NodeStatus.Uninitialized)));
        var summary = AutoscalerSummaryBuilder.Build(now, _config, providerNodes, snapshot, [.. pending], plan);
        lock (_gate) _summary = summary;
        return new AutoscalerUpdate(
            launches.Keys.Zip(made).Where(m => m.Second.Count > 0).ToDictionary(m => m.First, m => m.Second.Count, StringComparer.Ordinal),
            [.. idle.Select(w => w.ProviderNodeId)],
            [.. terminated.Select(n => n.Id)],
            [.. plan.Infeasible, .. plan.InfeasibleRequests, .. ResourceShapes.Group(plan.InfeasibleGroups.SelectMany(g => g.Shapes).Select(shape => new ResourceDemand(shape, 1)))]);
    }

    private SchedulerConfig BuildSchedulerConfig(ClusterView view)
    {
        var types = new Dictionary<string, WorkerTypeLimits>(StringComparer.Ordinal);
        foreach (var (name, t) in _config.WorkerTypes)
            types[name] = new WorkerTypeLimits(ResourcesOf(name), t.MinWorkers, t.MaxWorkers);
        var head = _config.AvailableNodeTypes.TryGetValue(_config.HeadNodeType, out var h) && h.Resources.Count > 0 ? [h.Resources] : view.HeadTotals;
        return new SchedulerConfig(types, _config.MaxWorkers, _config.UpscalingSpeed)
        {
            OtherTypeResources = head,
            MaxDemandVectorSize = _options.MaxDemandVectorSize,
            UpscalingInitialNodes = _options.UpscalingInitialNodes,
        };
    }

    /// <summary>A type's resources as declared, or as its first joined node reported them (a type may leave them to detection).</summary>
    private IReadOnlyDictionary<string, double> ResourcesOf(string type) =>
        _config.AvailableNodeTypes.TryGetValue(type, out var t) && t.Resources.Count > 0 ? t.Resources
        : _learned.TryGetValue(type, out var learned) ? learned : new Dictionary<string, double>();

    private static SchedulingNode Pending(SchedulerConfig config, string type) =>
        new(type, config.WorkerTypes[type].Resources, config.WorkerTypes[type].Resources, SchedulingNodeState.Pending);

    private static string TypeOf(ProviderNode node) => node.Tag(NodeTags.NodeType) ?? "";

    /// <summary>Forgets setups of nodes that are gone or have joined (what is left of them is the snapshot's to tell).</summary>
    private void PruneSetups(IReadOnlyList<ProviderNode> providerNodes)
    {
        var exist = providerNodes.Select(n => n.Id).ToHashSet(StringComparer.Ordinal);
        lock (_gate)
        {
            foreach (var id in _setups.Where(s => s.Value.Task.IsCompleted && (!exist.Contains(s.Key) || _joined.Contains(s.Key))).Select(s => s.Key).ToList())
                _setups.Remove(id);
            _setupFailed.RemoveWhere(id => !exist.Contains(id));
            foreach (var id in _waitingSince.Keys.Where(id => !exist.Contains(id) || _joined.Contains(id)).ToList())
                _waitingSince.Remove(id);
        }
    }

    /// <summary>Whether a node that never joined has waited for its raylet longer than the join timeout.</summary>
    private bool JoinTimedOut(ProviderNode node, DateTimeOffset now)
    {
        lock (_gate)
        {
            // A setup under way has its own failure (it throws); the wait for the raylet starts when it returns.
            if (_setups.TryGetValue(node.Id, out var setup) && !setup.Task.IsCompleted) return false;
            if (!_waitingSince.TryGetValue(node.Id, out var since)) _waitingSince[node.Id] = since = now;
            return now - since >= _options.NodeJoinTimeout;
        }
    }

    private static string Describe(TimeSpan t) =>
        t.TotalMinutes >= 1 && t.Seconds == 0 ? $"{t.TotalMinutes:0} min" : $"{t.TotalSeconds:0} s";

    private bool IsSetupFailed(string nodeId)
    {
        lock (_gate) return _setupFailed.Contains(nodeId);
    }

    private string? SetupState(string nodeId)
    {
        lock (_gate)
            return !_setups.TryGetValue(nodeId, out var s) ? null : s.Task.IsCompleted ? "waiting-for-raylet" : "setting-up";
    }

    private async Task<bool> DrainAsync(WorkerNode node, DateTimeOffset now, CancellationToken cancellationToken)
    {
        if (_drainNode is null) return true;
        try
        {
            return await _drainNode(node.Load, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            lock (_gate) _backoff.Failed(new AutoscalerFailure(now, node.TypeName ?? "", node.Load.Ip, "drain failed: " + e.Message), backOff: false);
            return false;
        }
    }

    private async Task<bool> TerminateAsync(ProviderNode node, string reason, DateTimeOffset now, CancellationToken cancellationToken)
    {
        try
        {
            await _provider.TerminateNodeAsync(node.Id, cancellationToken).ConfigureAwait(false);
            lock (_gate)
            {
                _setupFailed.Remove(node.Id);
                _setups.Remove(node.Id);
                _waitingSince.Remove(node.Id);
            }
            return true;
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            // Tried again next tick: the node is still in the provider's list, and still idle, dead or failed.
            lock (_gate) _backoff.Failed(new AutoscalerFailure(now, TypeOf(node), node.Ip, $"terminating ({reason}) failed: {e.Message}"), backOff: false);
            return false;
        }
    }

    /// <summary>Creates the nodes and starts their setups (not awaited: a setup takes minutes, a tick seconds).</summary>
    private async Task<IReadOnlyList<ProviderNode>> LaunchAsync(string type, int count, DateTimeOffset now, CancellationToken cancellationToken)
    {
        var tags = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [NodeTags.Kind] = NodeTags.KindWorker,
            [NodeTags.NodeType] = type,
            [NodeTags.Status] = NodeStatus.Uninitialized,
        };
        IReadOnlyList<ProviderNode> made;
        try
        {
            made = await _provider.CreateNodesAsync(_config.AvailableNodeTypes[type], tags, count, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            lock (_gate) _backoff.Failed(new AutoscalerFailure(now, type, null, $"launching {count} failed: {e.Message}"), backOff: true);
            return [];
        }
        lock (_gate)
        {
            if (made.Count < count)
                _backoff.Failed(new AutoscalerFailure(now, type, null, $"the provider made {made.Count} of the {count} nodes asked for"), backOff: true);
            foreach (var node in made) _setups[node.Id] = (Task.CompletedTask, type);
        }
        foreach (var node in made)
        {
            var setup = SetUpAsync(node, type, now);
            lock (_gate)
                if (_setups.ContainsKey(node.Id)) _setups[node.Id] = (setup, type);
        }
        return made;
    }

    private async Task SetUpAsync(ProviderNode node, string type, DateTimeOffset launchedAt)
    {
        // Off the tick's stack: a setup that finishes (or fails) at once must not run inside the tick that started it.
        await Task.Yield();
        try
        {
            await _setUp(node, _stopping.Token).ConfigureAwait(false);
            lock (_gate) _waitingSince[node.Id] = _time.GetUtcNow();
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            lock (_gate)
            {
                _setupFailed.Add(node.Id);
                _backoff.Failed(new AutoscalerFailure(_time.GetUtcNow(), type, node.Ip, "setup failed: " + e.Message), backOff: true, launchedAt);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        try
        {
            await WhenSetupsDoneAsync().ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
        _stopping.Dispose();
    }
}
