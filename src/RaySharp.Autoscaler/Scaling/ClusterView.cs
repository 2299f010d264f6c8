using RaySharp.Autoscaler.Config;
using RaySharp.Autoscaler.Providers;

namespace RaySharp.Autoscaler.Scaling;

/// <summary>
/// One tick's join of the provider's nodes (what exists) with the snapshot's (what has joined, and its load), matched by
/// address. A worker is joined when a live node of its address is in the snapshot, died when it had joined and the
/// snapshot lists it dead, failed when its setup failed, and pending otherwise. A joined node missing from the snapshot
/// is not taken for dead (a snapshot read short must not terminate the cluster): it stays pending, "not-reporting".
/// A node that never joined and has waited past the join timeout is given up (<see cref="NeverJoined"/>).
/// </summary>
internal sealed class ClusterView
{
    public const string NotReporting = "not-reporting";

    private readonly Dictionary<string, ProviderNode> _byId = new(StringComparer.Ordinal);

    public List<WorkerNode> Joined { get; } = [];

    public List<ProviderNode> Died { get; } = [];

    public List<ProviderNode> SetupFailed { get; } = [];

    public List<PendingNode> Pending { get; } = [];

    /// <summary>Pending nodes that never joined and were waited for longer than the join timeout: given up.</summary>
    public List<ProviderNode> NeverJoined { get; } = [];

    /// <summary>Live nodes with their load, and pending ones with their type's full resources.</summary>
    public List<SchedulingNode> SchedulingNodes { get; } = [];

    /// <summary>
    /// Totals of the nodes that stay whatever scale-down decides (the head, nodes the provider does not know, pending
    /// ones): request_resources is packed onto these before any idle worker.
    /// </summary>
    public List<IReadOnlyDictionary<string, double>> OtherTotals { get; } = [];

    /// <summary>What the head offers, as it reported it (for types that declare no resources).</summary>
    public List<IReadOnlyDictionary<string, double>> HeadTotals { get; } = [];

    public ProviderNode ProviderNode(WorkerNode node) => _byId[node.ProviderNodeId];

    public static ClusterView Build(
        ClusterConfig config,
        IReadOnlyList<ProviderNode> providerNodes,
        LoadSnapshot snapshot,
        IReadOnlySet<string> joinedBefore,
        Func<string, bool> setupFailed,
        Func<string, string?> setupState,
        Func<string, IReadOnlyDictionary<string, double>> resourcesOf,
        Func<ProviderNode, bool>? joinTimedOut = null)
    {
        var view = new ClusterView();
        var alive = snapshot.Nodes.Where(n => n.Alive).GroupBy(n => n.Ip, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
        var workerTypes = config.WorkerTypes.Select(t => t.Key).ToHashSet(StringComparer.Ordinal);
        var dead = snapshot.Nodes.Where(n => !n.Alive).Select(n => n.Ip).ToHashSet(StringComparer.Ordinal);
        var matched = new HashSet<string>(StringComparer.Ordinal);
        var headIps = providerNodes.Where(n => n.IsHead).Select(n => n.Ip).ToHashSet(StringComparer.Ordinal);

        foreach (var node in providerNodes.Where(n => !n.IsHead))
        {
            view._byId[node.Id] = node;
            var type = node.Tag(NodeTags.NodeType);
            var known = type is not null && workerTypes.Contains(type) ? type : null;
            if (alive.TryGetValue(node.Ip, out var load))
            {
                matched.Add(node.Ip);
                view.Joined.Add(new WorkerNode(node.Id, type, load));
                view.SchedulingNodes.Add(new SchedulingNode(known, load.Total, load.Draining ? new Dictionary<string, double>() : load.Available, SchedulingNodeState.Running)
                {
                    NodeId = load.NodeId,
                });
            }
            else if (joinedBefore.Contains(node.Id) && dead.Contains(node.Ip))
            {
                view.Died.Add(node);
            }
            else if (setupFailed(node.Id) || node.Tag(NodeTags.Status) == NodeStatus.UpdateFailed)
            {
                view.SetupFailed.Add(node);
            }
            else if (!joinedBefore.Contains(node.Id) && joinTimedOut?.Invoke(node) == true)
            {
                view.NeverJoined.Add(node);
            }
            else
            {
                var tag = node.Tag(NodeTags.Status);
                var ours = setupState(node.Id);
                // The updater's tag says more (waiting-for-ssh, syncing-files) while it runs; once it is done, what is
                // left is for the raylet to join.
                var state = joinedBefore.Contains(node.Id) ? NotReporting
                    : ours == "setting-up" && tag is not null && tag != NodeStatus.Uninitialized ? tag
                    : ours ?? tag ?? NodeStatus.Uninitialized;
                view.Pending.Add(new PendingNode(node.Ip, type ?? "", state));
                var resources = known is null ? new Dictionary<string, double>() : resourcesOf(known);
                view.SchedulingNodes.Add(new SchedulingNode(known, resources, resources, SchedulingNodeState.Pending));
                view.OtherTotals.Add(resources);
            }
        }

        // The head, and nodes the provider does not know (started by hand): their free resources take demand, but they
        // count towards no type's limits and are never removed.
        foreach (var load in alive.Values.Where(l => !matched.Contains(l.Ip)))
        {
            view.SchedulingNodes.Add(new SchedulingNode(null, load.Total, load.Available, SchedulingNodeState.Running) { NodeId = load.NodeId });
            view.OtherTotals.Add(load.Total);
            if (load.IsHead || headIps.Contains(load.Ip)) view.HeadTotals.Add(load.Total);
        }
        return view;
    }
}
