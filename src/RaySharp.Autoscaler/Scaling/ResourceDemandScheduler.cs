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
    SchedulingNodeState State)
{
    /// <summary>The raylet's node id of a running node (null for pending ones): what a group's placed bundles name.</summary>
    public string? NodeId { get; init; }
}

/// <param name="ToLaunch">Nodes to launch now, by type.</param>
/// <param name="Infeasible">Demand no node type can ever hold (it launches nothing).</param>
/// <param name="InfeasibleRequests">request_resources bundles no node type can ever hold.</param>
internal sealed record SchedulingResult(
    IReadOnlyDictionary<string, int> ToLaunch,
    IReadOnlyList<ResourceDemand> Infeasible,
    IReadOnlyList<ResourceDemand> InfeasibleRequests)
{
    /// <summary>Placement groups with a bundle (or a STRICT_PACK sum) no node type can hold: nothing is launched for them.</summary>
    public IReadOnlyList<PlacementGroupDemand> InfeasibleGroups { get; init; } = [];
}

/// <summary>
/// Ray's <c>ResourceDemandScheduler.get_nodes_to_launch</c>, as a pure function: which nodes to launch so that the
/// demand fits. The order matters and is Ray's: min_workers first (they are owed whatever the demand), then
/// request_resources bundles against the cluster's total capacity (they are a floor on the cluster's size, not work
/// that uses it), then the queued demand against what is free now (available resources of running nodes, full
/// resources of pending ones, and every node planned above); what is left is given new nodes, one at a time, of the
/// type that the left demand fills best. Pending placement groups are demand too, as Ray's: a STRICT_SPREAD group's
/// bundles are reserved before the queued demand, at most one of the group's per node; the other groups' shapes join
/// the queued demand. Last the per-type upscaling limit cuts what launches now; the rest is planned again on the next
/// tick.
/// </summary>
internal static class ResourceDemandScheduler
{
    public static SchedulingResult GetNodesToLaunch(
        SchedulerConfig config,
        IReadOnlyList<SchedulingNode> nodes,
        IReadOnlyList<ResourceDemand> demands,
        IReadOnlyList<IReadOnlyDictionary<string, double>> resourceRequests,
        IReadOnlyList<PlacementGroupDemand>? placementGroups = null)
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

        // Step 3: STRICT_SPREAD groups, against what is free now and what is already on its way, one bundle of a group
        // per node; what they take is not free for the queued demand after them (Ray's reserve_and_allocate_spread).
        var free = nodes.Select(n => (n.NodeId, Room: ResourceShapes.Copy(n.State == SchedulingNodeState.Running ? n.Available : n.Total)))
            .Concat(planned.Select(p => (NodeId: (string?)null, Room: ResourceShapes.Copy(p)))).ToList();
        var (groups, infeasibleGroups) = SplitInfeasible(config, placementGroups ?? []);
        var forDemand = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var group in groups.Where(g => g.Strategy == GroupStrategy.StrictSpread))
        {
            var rooms = free.Where(f => f.NodeId is null || !group.PlacedOn.Contains(f.NodeId)).Select(f => f.Room).ToList();
            var left = PackInto(rooms, group.Shapes, strictSpread: true);
            var added = NodesForStrictSpread(types, counts, config.MaxWorkers - workers, left, out var newRooms);
            Add(counts, added, ref workers);
            foreach (var (name, n) in added) forDemand[name] = forDemand.GetValueOrDefault(name) + n;
            free.AddRange(newRooms.Select(r => (NodeId: (string?)null, Room: r)));
        }

        // Step 4: queued demand and the other groups' shapes, against what is left free.
        var (queued, infeasible) = SplitInfeasible(config, demands);
        queued.AddRange(groups.Where(g => g.Strategy != GroupStrategy.StrictSpread).SelectMany(g => g.Shapes));
        var unmet = PackInto(free.Select(f => f.Room), Limit(queued, config.MaxDemandVectorSize), strictSpread: false);
        foreach (var (name, n) in NodesFor(types, counts, config.MaxWorkers - workers, unmet)) forDemand[name] = forDemand.GetValueOrDefault(name) + n;

        // Step 5: upscaling_speed caps pending launches per type; what min_workers is owed is launched regardless.
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
        return new SchedulingResult(toLaunch, ResourceShapes.Group(infeasible), ResourceShapes.Group(infeasibleRequests))
        {
            InfeasibleGroups = infeasibleGroups,
        };
    }

    /// <summary>
    /// A group is infeasible when one of its shapes fits no node type even when empty: it can never be placed, so
    /// nothing is launched for any of its bundles.
    /// </summary>
    private static (List<PlacementGroupDemand> Feasible, List<PlacementGroupDemand> Infeasible) SplitInfeasible(
        SchedulerConfig config, IReadOnlyList<PlacementGroupDemand> groups)
    {
        var types = config.WorkerTypes.Values.Select(t => t.Resources).Concat(config.OtherTypeResources).ToList();
        var feasible = new List<PlacementGroupDemand>();
        var infeasible = new List<PlacementGroupDemand>();
        foreach (var g in groups.Where(g => g.Bundles.Count > 0))
            (g.Shapes.All(shape => types.Any(t => ResourceShapes.Fits(t, shape))) ? feasible : infeasible).Add(g);
        return (feasible, infeasible);
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
        return PackInto(room, shapes, strictSpread: false);
    }

    /// <summary>
    /// The same first fit, taking what fits out of <paramref name="room"/> itself, so that later demand sees only what is left; with
    /// <paramref name="strictSpread"/> each node takes at most one of the shapes (one STRICT_SPREAD group's bundles).
    /// </summary>
    private static List<IReadOnlyDictionary<string, double>> PackInto(
        IEnumerable<Dictionary<string, double>> room, IEnumerable<IReadOnlyDictionary<string, double>> shapes, bool strictSpread)
    {
        var bins = room.ToList();
        var used = new HashSet<Dictionary<string, double>>(ReferenceEqualityComparer.Instance);
        var unmet = new List<IReadOnlyDictionary<string, double>>();
        foreach (var shape in HardestFirst(shapes))
        {
            var node = bins.FirstOrDefault(r => !used.Contains(r) && ResourceShapes.Fits(r, shape));
            if (node is null)
            {
                unmet.Add(shape);
                continue;
            }
            ResourceShapes.Subtract(node, shape);
            if (strictSpread) used.Add(node);
        }
        return unmet;
    }

    /// <summary>The most complex and heaviest shapes first: they are the hardest to place, so they get the first choice of nodes.</summary>
    private static IEnumerable<IReadOnlyDictionary<string, double>> HardestFirst(IEnumerable<IReadOnlyDictionary<string, double>> shapes) =>
        shapes.OrderByDescending(s => s.Count(r => r.Value > ResourceShapes.Epsilon))
            .ThenByDescending(s => s.Values.Sum())
            .ThenBy(ResourceShapes.Key, StringComparer.Ordinal);

    /// <summary>
    /// <see cref="NodesFor"/> for a STRICT_SPREAD group's bundles: each new node takes one bundle, the hardest first, of
    /// the type that bundle alone fills best. <paramref name="newRooms"/> is what the new nodes have left after their
    /// bundle, for the demand planned after the group.
    /// </summary>
    private static Dictionary<string, int> NodesForStrictSpread(
        IReadOnlyDictionary<string, WorkerTypeLimits> types, Dictionary<string, int> counts, int maxToAdd,
        List<IReadOnlyDictionary<string, double>> bundles, out List<Dictionary<string, double>> newRooms)
    {
        var added = new Dictionary<string, int>(StringComparer.Ordinal);
        newRooms = [];
        foreach (var bundle in HardestFirst(bundles))
        {
            if (added.Values.Sum() >= maxToAdd) break;
            var best = BestType(types, counts, added, [bundle]);
            if (best is null) continue;
            added[best] = added.GetValueOrDefault(best) + 1;
            var room = ResourceShapes.Copy(types[best].Resources);
            ResourceShapes.Subtract(room, bundle);
            newRooms.Add(room);
        }
        return added;
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
            var best = BestType(types, counts, added, unmet);
            if (best is null) break;
            added[best] = added.GetValueOrDefault(best) + 1;
            unmet = BinPackResidual([types[best].Resources], unmet);
        }
        return added;
    }

    /// <summary>The type below its max_workers that <paramref name="unmet"/> would use best; null when none holds any of it.</summary>
    private static string? BestType(
        IReadOnlyDictionary<string, WorkerTypeLimits> types, Dictionary<string, int> counts, Dictionary<string, int> added,
        List<IReadOnlyDictionary<string, double>> unmet)
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
        return best;
    }
}
