namespace RaySharp.Autoscaler.Scaling;

/// <summary>What the scheduler plans with: the worker types it may launch and the cluster's limits.</summary>
/// <param name="WorkerTypes">Launchable types by name, each with the resources a node of it offers (empty when not yet known).</param>
internal sealed record SchedulerConfig(
    IReadOnlyDictionary<string, WorkerTypeLimits> WorkerTypes,
    int MaxWorkers,
    double UpscalingSpeed)
{
    /// <summary>Resources of types that are never launched (the head's): demand that fits only there is waiting, not infeasible.</summary>
    public IReadOnlyList<IReadOnlyDictionary<string, double>> OtherTypeResources { get; init; } = [];

    /// <summary>Ray's <c>AUTOSCALER_MAX_RESOURCE_DEMAND_VECTOR_SIZE</c>: demand beyond it is planned on a later tick.</summary>
    public int MaxDemandVectorSize { get; init; } = 1000;

    /// <summary>Ray's <c>UPSCALING_INITIAL_NUM_NODES</c>: pending launches a type may have however few of it run.</summary>
    public int UpscalingInitialNodes { get; init; } = 5;
}

internal sealed record WorkerTypeLimits(IReadOnlyDictionary<string, double> Resources, int MinWorkers, int MaxWorkers);

internal enum SchedulingNodeState
{
    /// <summary>Alive in the GCS: its available resources take demand.</summary>
    Running,

    /// <summary>Launched and not yet joined (being created, set up, or starting its raylet): its full resources take demand.</summary>
    Pending,
}

/// <summary>A node as the scheduler sees it. <paramref name="TypeName"/> is null for the head and for nodes not of a worker type.</summary>
internal sealed record SchedulingNode(
    string? TypeName,
    IReadOnlyDictionary<string, double> Total,
    IReadOnlyDictionary<string, double> Available,
    SchedulingNodeState State);

/// <param name="ToLaunch">Nodes to launch now, by type.</param>
/// <param name="Infeasible">Demand no node type can ever hold (it launches nothing).</param>
/// <param name="InfeasibleRequests">request_resources bundles no node type can ever hold.</param>
internal sealed record SchedulingResult(
    IReadOnlyDictionary<string, int> ToLaunch,
    IReadOnlyList<ResourceDemand> Infeasible,
    IReadOnlyList<ResourceDemand> InfeasibleRequests);

/// <summary>
/// Ray's <c>ResourceDemandScheduler.get_nodes_to_launch</c>, as a pure function: which nodes to launch so that the
/// demand fits. The order matters and is Ray's: min_workers first (they are owed whatever the demand), then
/// request_resources bundles against the cluster's total capacity (they are a floor on the cluster's size, not work
/// that uses it), then the queued demand against what is free now (available resources of running nodes, full
/// resources of pending ones, and every node planned above); what is left is given new nodes, one at a time, of the
/// type that the left demand fills best. Last the per-type upscaling limit cuts what launches now; the rest is
/// planned again on the next tick.
/// </summary>
internal static class ResourceDemandScheduler
{
    public static SchedulingResult GetNodesToLaunch(
        SchedulerConfig config,
        IReadOnlyList<SchedulingNode> nodes,
        IReadOnlyList<ResourceDemand> demands,
        IReadOnlyList<IReadOnlyDictionary<string, double>> resourceRequests)
    {
        var types = config.WorkerTypes;
        var counts = types.Keys.ToDictionary(t => t, t => nodes.Count(n => n.TypeName == t), StringComparer.Ordinal);
        var running = types.Keys.ToDictionary(t => t, t => nodes.Count(n => n.TypeName == t && n.State == SchedulingNodeState.Running), StringComparer.Ordinal);
        var workers = nodes.Count(n => n.TypeName is not null && types.ContainsKey(n.TypeName));

        // Step 1: min_workers, within each type's max_workers and the cluster's.
        var forMinimum = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (name, type) in types.OrderBy(t => t.Key, StringComparer.Ordinal))
        {
            var want = Math.Min(type.MinWorkers, type.MaxWorkers) - counts[name];
            want = Math.Min(want, config.MaxWorkers - workers);
            if (want <= 0) continue;
            forMinimum[name] = want;
            counts[name] += want;
            workers += want;
        }
        var planned = forMinimum.SelectMany(t => Enumerable.Repeat(types[t.Key].Resources, t.Value)).ToList();

        // Step 2: request_resources, sized against the total of every node (what runs on a node does not make the
        // cluster smaller for this purpose).
        var (requests, infeasibleRequests) = SplitInfeasible(config, resourceRequests.Select(r => new ResourceDemand(r, 1)));
        var totals = nodes.Select(n => n.Total).Concat(planned).ToList();
        var unmetRequests = BinPackResidual(totals, requests);
        var forRequests = NodesFor(types, counts, config.MaxWorkers - workers, unmetRequests);
        Add(counts, forRequests, ref workers);
        planned.AddRange(forRequests.SelectMany(t => Enumerable.Repeat(types[t.Key].Resources, t.Value)));

        // Step 3: queued demand, against what is free now and what is already on its way.
        var (queued, infeasible) = SplitInfeasible(config, demands);
        var free = nodes.Select(n => n.State == SchedulingNodeState.Running ? n.Available : n.Total).Concat(planned).ToList();
        var unmet = BinPackResidual(free, Limit(queued, config.MaxDemandVectorSize));
        var forDemand = NodesFor(types, counts, config.MaxWorkers - workers, unmet);

        // Step 4: upscaling_speed caps pending launches per type; what min_workers is owed is launched regardless.
        var toLaunch = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var name in types.Keys)
        {
            var total = forMinimum.GetValueOrDefault(name) + forRequests.GetValueOrDefault(name) + forDemand.GetValueOrDefault(name);
            if (total <= 0) continue;
            var allowedPending = Math.Max(config.UpscalingInitialNodes, (int)(config.UpscalingSpeed * Math.Max(running[name], 1)));
            var pending = nodes.Count(n => n.TypeName == name && n.State == SchedulingNodeState.Pending);
            var upper = Math.Max(allowedPending - pending, forMinimum.GetValueOrDefault(name));
            if (upper > 0) toLaunch[name] = Math.Min(upper, total);
        }
        return new SchedulingResult(toLaunch, ResourceShapes.Group(infeasible), ResourceShapes.Group(infeasibleRequests));
    }

    /// <summary>
    /// A shape is infeasible when no node type can hold it even when empty. Demand that is only waiting (for
    /// max_workers, for backoff, for nodes being set up) is not: it may fit later.
    /// </summary>
    private static (List<IReadOnlyDictionary<string, double>> Feasible, List<ResourceDemand> Infeasible) SplitInfeasible(
        SchedulerConfig config, IEnumerable<ResourceDemand> demands)
    {
        var shapes = config.WorkerTypes.Values.Select(t => t.Resources).Concat(config.OtherTypeResources).ToList();
        var feasible = new List<IReadOnlyDictionary<string, double>>();
        var infeasible = new List<ResourceDemand>();
        foreach (var d in demands)
        {
            if (d.Count <= 0) continue;
            if (shapes.Any(s => ResourceShapes.Fits(s, d.Shape))) feasible.AddRange(Enumerable.Repeat(d.Shape, d.Count));
            else infeasible.Add(d);
        }
        return (feasible, infeasible);
    }

    private static List<IReadOnlyDictionary<string, double>> Limit(List<IReadOnlyDictionary<string, double>> shapes, int max) =>
        shapes.Count <= max ? shapes : shapes.GetRange(0, max);

    private static void Add(Dictionary<string, int> counts, Dictionary<string, int> added, ref int workers)
    {
        foreach (var (name, n) in added)
        {
            counts[name] += n;
            workers += n;
        }
    }

    /// <summary>
    /// Ray's <c>get_bin_pack_residual</c>: first fit, the most complex and heaviest shapes first (they are the hardest
    /// to place, so they get the first choice of nodes). Returns the shapes that found no room.
    /// </summary>
    public static List<IReadOnlyDictionary<string, double>> BinPackResidual(
        IEnumerable<IReadOnlyDictionary<string, double>> nodes, IEnumerable<IReadOnlyDictionary<string, double>> shapes)
    {
        var room = nodes.Select(ResourceShapes.Copy).ToList();
        var unmet = new List<IReadOnlyDictionary<string, double>>();
        foreach (var shape in shapes.OrderByDescending(s => s.Count(r => r.Value > ResourceShapes.Epsilon))
                     .ThenByDescending(s => s.Values.Sum())
                     .ThenBy(ResourceShapes.Key, StringComparer.Ordinal))
        {
            var node = room.FirstOrDefault(r => ResourceShapes.Fits(r, shape));
            if (node is null) unmet.Add(shape);
            else ResourceShapes.Subtract(node, shape);
        }
        return unmet;
    }

    /// <summary>
    /// Ray's <c>get_nodes_for</c>: add the best-scoring type one node at a time, packing what it holds off the left
    /// demand, until the demand is met, no type can take more, or <paramref name="maxToAdd"/> is reached.
    /// </summary>
    private static Dictionary<string, int> NodesFor(
        IReadOnlyDictionary<string, WorkerTypeLimits> types, Dictionary<string, int> counts, int maxToAdd,
        List<IReadOnlyDictionary<string, double>> demand)
    {
        var added = new Dictionary<string, int>(StringComparer.Ordinal);
        var unmet = demand;
        while (unmet.Count > 0 && added.Values.Sum() < maxToAdd)
        {
            // A GPU type takes work that asks no GPU only when no other type could ever hold it, not merely when the
            // others are at their max_workers: CPU work then waits for CPU nodes rather than occupy a GPU node (where
            // Ray's autoscaler launches one).
            var fairTypeExists = types.Values.Any(t => UtilizationScore.Of(t.Resources, unmet) is { FairChoice: true });
            string? best = null;
            UtilizationScore? bestScore = null;
            foreach (var (name, type) in types.OrderBy(t => t.Key, StringComparer.Ordinal))
            {
                if (counts[name] + added.GetValueOrDefault(name) >= type.MaxWorkers) continue;
                var score = UtilizationScore.Of(type.Resources, unmet);
                if (score is null || (fairTypeExists && !score.Value.FairChoice)) continue;
                if (bestScore is not null && score.Value.CompareTo(bestScore.Value) <= 0) continue;
                (best, bestScore) = (name, score);
            }
            if (best is null) break;
            added[best] = added.GetValueOrDefault(best) + 1;
            unmet = BinPackResidual([types[best].Resources], unmet);
        }
        return added;
    }
}
