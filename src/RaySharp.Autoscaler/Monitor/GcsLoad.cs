using RaySharp.Autoscaler.Config;
using RaySharp.Autoscaler.Providers;
using RaySharp.Autoscaler.Scaling;
using RaySharp.Common;
using RaySharp.Rpc.Protocol;
using Demand = RaySharp.Autoscaler.Scaling.ResourceDemand;

namespace RaySharp.Autoscaler.Monitor;

/// <summary>
/// Turns what the GCS reports (its node table, the resource request, the placement groups) into the autoscaler's
/// <see cref="LoadSnapshot"/>.
/// </summary>
internal static class GcsLoad
{
    public static LoadSnapshot Snapshot(ClusterConfig config, IReadOnlyList<NodeInfo> nodes, IReadOnlyList<ProviderNode> providerNodes,
        IReadOnlyList<IReadOnlyDictionary<string, double>> request, DateTimeOffset now, IReadOnlyList<PlacementGroupTableData>? groups = null)
    {
        var types = providerNodes.GroupBy(n => n.Ip, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.First().Tag(NodeTags.NodeType), StringComparer.Ordinal);
        // One row per address: a node launched again at the address of one that died is the live row, not the dead one.
        var rows = nodes.GroupBy(n => n.NodeIpAddress, StringComparer.Ordinal)
            .Select(g => g.OrderByDescending(n => n.State == NodeState.Alive).ThenByDescending(n => n.StartTimeMs).First());
        var loads = rows.Select(n => new NodeLoad(n.NodeId, n.NodeIpAddress)
        {
            NodeType = n.IsHeadNode ? config.HeadNodeType : types.GetValueOrDefault(n.NodeIpAddress),
            Total = Schedulable(n.ResourcesTotal),
            Available = Schedulable(n.ResourcesAvailable),
            // The raylet reports how long it has held and queued no lease; zero while it holds one.
            IdleSince = n.IdleDurationMs > 0 ? now - TimeSpan.FromMilliseconds(n.IdleDurationMs) : null,
            HoldsPrimaryObjects = n.PrimaryObjectCount > 0,
            Alive = n.State == NodeState.Alive,
            IsHead = n.IsHeadNode,
            Draining = n.IsDraining,
            HoldsBundles = n.ResourcesTotal.Keys.Any(BundleResources.IsGroupResource),
        }).ToList();
        var alive = nodes.Where(n => n.State == NodeState.Alive).ToList();
        return new LoadSnapshot
        {
            Nodes = loads,
            PendingDemands = Demands(alive.SelectMany(n => n.PendingDemands)),
            InfeasibleDemands = Demands(alive.SelectMany(n => n.InfeasibleDemands)),
            ResourceRequests = request,
            PlacementGroups = GroupDemands(groups ?? []),
        };
    }

    /// <summary>
    /// Groups waiting for placement (pending, or rescheduling after a node died), with the bundles that have no node
    /// yet: those are what new nodes would hold. A group being committed (prepared) or created wants nothing more.
    /// </summary>
    private static List<PlacementGroupDemand> GroupDemands(IReadOnlyList<PlacementGroupTableData> groups) =>
        [.. groups.Where(g => g.State is PlacementGroupState.Pending or PlacementGroupState.Rescheduling)
            .Select(g => new PlacementGroupDemand(g.PlacementGroupId, Strategy(g.Strategy),
                [.. g.Bundles.Where(b => b.NodeId.Length == 0).Select(b => (IReadOnlyDictionary<string, double>)new Dictionary<string, double>(b.Resources, StringComparer.Ordinal))])
            {
                PlacedOn = g.Bundles.Where(b => b.NodeId.Length > 0).Select(b => b.NodeId).ToHashSet(StringComparer.Ordinal),
            })
            .Where(g => g.Bundles.Count > 0)];

    private static GroupStrategy Strategy(PlacementStrategy strategy) => strategy switch
    {
        PlacementStrategy.Spread => GroupStrategy.Spread,
        PlacementStrategy.StrictPack => GroupStrategy.StrictPack,
        PlacementStrategy.StrictSpread => GroupStrategy.StrictSpread,
        _ => GroupStrategy.Pack,
    };

    /// <summary>
    /// The node's resources without its <c>node:&lt;ip&gt;</c> marker (no node type has one, so a node that joined
    /// would otherwise never look like the type it was launched as) nor committed bundles' group resources: those are
    /// the node's own CPUs and the like again, already taken from its available resources, and only the group's work
    /// can use them.
    /// </summary>
    private static Dictionary<string, double> Schedulable(IDictionary<string, double> resources) =>
        resources.Where(r => !r.Key.StartsWith("node:", StringComparison.Ordinal) && !BundleResources.IsGroupResource(r.Key))
            .ToDictionary(r => r.Key, r => r.Value, StringComparer.Ordinal);

    /// <summary>
    /// Queued shapes. Those pinned to one node (a <c>node:&lt;ip&gt;</c> resource) wait for that node, and those asking
    /// for a group's resources wait for its bundles (the group is demand of its own while it waits): no launch helps them.
    /// </summary>
    private static List<Demand> Demands(IEnumerable<Rpc.Protocol.ResourceDemand> demands) =>
        demands.Where(d => !d.Shape.Keys.Any(k => k.StartsWith("node:", StringComparison.Ordinal) || BundleResources.IsGroupResource(k)) && d.Shape.Count > 0)
            .Select(d => new Demand(new Dictionary<string, double>(d.Shape, StringComparer.Ordinal), d.Count)).ToList();
}
