using RaySharp.Autoscaler.Config;
using RaySharp.Autoscaler.Providers;

namespace RaySharp.Autoscaler.Scaling;

/// <summary>The summary's node and resource blocks from one tick (the failures are the autoscaler's to add: they change between ticks).</summary>
internal static class AutoscalerSummaryBuilder
{
    public static AutoscalerSummary Build(
        DateTimeOffset now,
        ClusterConfig config,
        IReadOnlyList<ProviderNode> providerNodes,
        LoadSnapshot snapshot,
        IReadOnlyList<PendingNode> pending,
        SchedulingResult plan)
    {
        var typeByIp = providerNodes.GroupBy(n => n.Ip, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => g.First().IsHead ? config.HeadNodeType : g.First().Tag(NodeTags.NodeType), StringComparer.Ordinal);
        var active = new Dictionary<string, int>(StringComparer.Ordinal);
        var idle = new Dictionary<string, int>(StringComparer.Ordinal);
        var usage = new Dictionary<string, (double Used, double Total)>(StringComparer.Ordinal);
        foreach (var load in snapshot.Nodes.Where(n => n.Alive))
        {
            var type = typeByIp.GetValueOrDefault(load.Ip) ?? load.NodeType ?? (load.IsHead ? config.HeadNodeType : "unknown");
            active[type] = active.GetValueOrDefault(type) + 1;
            if (load.IsIdle) idle[type] = idle.GetValueOrDefault(type) + 1;
            foreach (var (name, total) in load.Total)
            {
                var (u, t) = usage.GetValueOrDefault(name);
                usage[name] = (u + Math.Max(0, total - load.Available.GetValueOrDefault(name)), t + total);
            }
        }
        var infeasible = plan.Infeasible.Select(d => ResourceShapes.Key(d.Shape)).ToHashSet(StringComparer.Ordinal);
        return new AutoscalerSummary
        {
            Time = now,
            ActiveNodes = active,
            IdleNodes = idle,
            PendingNodes = pending,
            Usage = usage,
            Demands = [.. ResourceShapes.Group(snapshot.PendingDemands.Concat(snapshot.InfeasibleDemands)).Where(d => !infeasible.Contains(ResourceShapes.Key(d.Shape)))],
            Constraints = ResourceShapes.Group(snapshot.ResourceRequests.Select(r => new ResourceDemand(r, 1))),
            Infeasible = [.. plan.Infeasible, .. plan.InfeasibleRequests],
            PlacementGroups = CountByDescription(snapshot.PlacementGroups.Except(plan.InfeasibleGroups)),
            InfeasiblePlacementGroups = CountByDescription(plan.InfeasibleGroups),
        };
    }

    /// <summary>Groups that would print alike, counted (Ray's <c>ray status</c> lists them so).</summary>
    private static IReadOnlyList<(string Description, int Count)> CountByDescription(IEnumerable<PlacementGroupDemand> groups) =>
        [.. groups.Where(g => g.Bundles.Count > 0).GroupBy(g => g.Describe(), StringComparer.Ordinal).Select(g => (g.Key, g.Count()))];
}
