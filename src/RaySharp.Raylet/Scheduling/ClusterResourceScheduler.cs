using RaySharp.Common;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Raylet.Scheduling;

/// <summary>What the raylet knows of one node (itself included) when it decides where a lease should go.</summary>
internal sealed record NodeView(
    string NodeId,
    string IpAddress,
    int Port,
    IReadOnlyDictionary<string, double> Total,
    IReadOnlyDictionary<string, double> Available);

internal enum PlacementKind { Local, Remote, Infeasible, Rejected }

internal readonly record struct Placement(PlacementKind Kind, NodeView? Node = null, string? Reason = null);

/// <summary>
/// Chooses the node for a resource shape, as Ray's cluster resource scheduler does. Pure: given the same view it gives
/// the same answer, so every policy is unit-tested without processes.
/// </summary>
internal static class ClusterResourceScheduler
{
    /// <summary>Below this utilisation the hybrid policy packs work onto the local node; above it, it spreads (Ray's 0.5).</summary>
    public const double SpreadThreshold = 0.5;

    public static Placement Decide(
        IReadOnlyDictionary<string, double> shape,
        SchedulingStrategy? strategy,
        bool grantOrReject,
        NodeView local,
        IReadOnlyList<NodeView> remotes)
    {
        strategy ??= new SchedulingStrategy();
        var localFeasible = ResourceSet.Fits(shape, local.Total);

        if (strategy.Kind == SchedulingStrategyKind.SchedulingNodeAffinity)
        {
            if (strategy.NodeId == local.NodeId)
            {
                if (localFeasible) return new(PlacementKind.Local);
                if (!strategy.Soft) return new(PlacementKind.Rejected, Reason: $"node {strategy.NodeId} can never satisfy {ResourceSet.Describe(shape)}");
            }
            else if (remotes.FirstOrDefault(n => n.NodeId == strategy.NodeId) is { } target && ResourceSet.Fits(shape, target.Total))
            {
                if (!grantOrReject) return new(PlacementKind.Remote, target);
            }
            else if (!strategy.Soft)
            {
                return new(PlacementKind.Rejected, Reason: $"node {strategy.NodeId} is not alive or can never satisfy {ResourceSet.Describe(shape)}");
            }
            // Soft affinity whose node is gone or unsuitable: schedule as DEFAULT.
        }

        if (grantOrReject) return localFeasible ? new(PlacementKind.Local) : new(PlacementKind.Infeasible);

        var localAvailable = ResourceSet.Fits(shape, local.Available);
        if (strategy.Kind == SchedulingStrategyKind.SchedulingSpread)
        {
            // Least-utilised node that can run it now; the local node wins ties so a lone node never spills to itself.
            var best = Candidates(local, remotes).Where(n => ResourceSet.Fits(shape, n.Available))
                .OrderBy(n => Utilisation(n, shape)).ThenBy(n => n.NodeId == local.NodeId ? 0 : 1).FirstOrDefault();
            if (best is not null) return best.NodeId == local.NodeId ? new(PlacementKind.Local) : new(PlacementKind.Remote, best);
        }
        else
        {
            // Hybrid: pack locally while the local node is lightly used, then prefer lightly used nodes elsewhere.
            if (localAvailable && Utilisation(local, shape) < SpreadThreshold) return new(PlacementKind.Local);
            var light = remotes.Where(n => ResourceSet.Fits(shape, n.Available) && Utilisation(n, shape) < SpreadThreshold)
                .OrderBy(n => Utilisation(n, shape)).FirstOrDefault();
            if (light is not null) return new(PlacementKind.Remote, light);
            if (localAvailable) return new(PlacementKind.Local);
            var any = remotes.Where(n => ResourceSet.Fits(shape, n.Available)).OrderBy(n => Utilisation(n, shape)).FirstOrDefault();
            if (any is not null) return new(PlacementKind.Remote, any);
        }

        // Nobody can run it now: wait locally if this node could ever run it, else queue at a node that could.
        if (localFeasible) return new(PlacementKind.Local);
        var feasible = remotes.FirstOrDefault(n => ResourceSet.Fits(shape, n.Total));
        return feasible is not null ? new(PlacementKind.Remote, feasible) : new(PlacementKind.Infeasible);
    }

    /// <summary>
    /// The choice of a draining node, which grants nothing itself: the request goes to another node as if this one
    /// could never hold it (a hard affinity to this node is rejected: the node is leaving). Infeasible when no other
    /// node could ever run it; the lease manager then keeps a request made here and sends one spilled here back.
    /// </summary>
    public static Placement DecideWhileDraining(
        IReadOnlyDictionary<string, double> shape,
        SchedulingStrategy? strategy,
        NodeView local,
        IReadOnlyList<NodeView> remotes)
    {
        if (strategy is { Kind: SchedulingStrategyKind.SchedulingNodeAffinity, Soft: false } s && s.NodeId == local.NodeId)
            return new(PlacementKind.Rejected, Reason: $"node {s.NodeId} is draining and about to be terminated");
        var empty = new Dictionary<string, double>();
        var placement = Decide(shape, strategy, grantOrReject: false, local with { Total = empty, Available = empty }, remotes);
        if (placement.Kind != PlacementKind.Local) return placement;
        // A shape that asks for nothing fits even a node with nothing: any other node will do.
        var any = remotes.Where(n => ResourceSet.Fits(shape, n.Available)).OrderBy(n => Utilisation(n, shape)).FirstOrDefault();
        return any is not null ? new(PlacementKind.Remote, any) : new(PlacementKind.Infeasible);
    }

    private static IEnumerable<NodeView> Candidates(NodeView local, IReadOnlyList<NodeView> remotes) => remotes.Prepend(local);

    /// <summary>Fraction of the node in use for the resources the shape asks for (CPU when it asks for none).</summary>
    public static double Utilisation(NodeView node, IReadOnlyDictionary<string, double> shape)
    {
        var names = shape.Where(kv => kv.Value > 0).Select(kv => kv.Key).DefaultIfEmpty(ResourceSet.Cpu);
        var worst = 0.0;
        foreach (var name in names)
        {
            if (!node.Total.TryGetValue(name, out var total) || total <= 0) continue;
            var used = total - node.Available.GetValueOrDefault(name);
            worst = Math.Max(worst, used / total);
        }
        return worst;
    }
}
