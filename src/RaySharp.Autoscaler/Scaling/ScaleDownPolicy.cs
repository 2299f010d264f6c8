namespace RaySharp.Autoscaler.Scaling;

/// <summary>A joined worker node the autoscaler launched (or the launcher did): one it may remove.</summary>
/// <param name="ProviderNodeId">The provider's id, what <see cref="Providers.INodeProvider.TerminateNodeAsync"/> takes.</param>
internal sealed record WorkerNode(string ProviderNodeId, string? TypeName, NodeLoad Load);

/// <summary>
/// Which idle workers to remove, as Ray's <c>StandardAutoscaler._get_nodes_to_terminate</c>. A node qualifies when it
/// has been idle (<see cref="NodeLoad.IsIdle"/>: nothing running, nothing held, no primary copy of a referenced object)
/// for the idle timeout. It is kept all the same when request_resources needs its capacity, or when removing it would
/// leave its type under min_workers. Busy nodes and the head never reach this list.
/// </summary>
internal static class ScaleDownPolicy
{
    public static IReadOnlyList<WorkerNode> NodesToDrain(
        IReadOnlyList<WorkerNode> workers,
        IReadOnlyDictionary<string, int> minWorkers,
        IReadOnlyList<IReadOnlyDictionary<string, double>> otherNodeTotals,
        IReadOnlyList<IReadOnlyDictionary<string, double>> resourceRequests,
        TimeSpan idleTimeout,
        DateTimeOffset now)
    {
        var expired = workers.Where(w => w.Load.IsIdle && now - w.Load.IdleSince!.Value >= idleTimeout).ToList();
        if (expired.Count == 0) return [];
        var keep = NeededForRequests(workers, expired, otherNodeTotals, resourceRequests);

        var left = workers.GroupBy(w => w.TypeName ?? "").ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        var drain = new List<WorkerNode>();
        // The longest idle go first: they are the least likely to be wanted again soon.
        foreach (var w in expired.OrderBy(w => w.Load.IdleSince).ThenBy(w => w.ProviderNodeId, StringComparer.Ordinal))
        {
            if (keep.Contains(w)) continue;
            var type = w.TypeName ?? "";
            if (left[type] <= minWorkers.GetValueOrDefault(type)) continue;
            left[type]--;
            drain.Add(w);
        }
        return drain;
    }

    /// <summary>
    /// Idle workers beyond a type's max_workers or the cluster's (the config was changed while the cluster ran), on top
    /// of <paramref name="chosen"/> (those already leaving as idle): the longest idle first, any idle time will do, and
    /// never a type below its min_workers. Unlike Ray, which terminates busy surplus nodes too, a busy one stays until it
    /// is idle: work a node runs is never cut short by a scale-down.
    /// </summary>
    /// <param name="allWorkers">Every worker the provider has by type, pending ones included: a pending node takes a
    /// place under max_workers as much as a joined one.</param>
    public static IReadOnlyList<WorkerNode> SurplusToDrain(
        IReadOnlyList<WorkerNode> workers,
        IReadOnlyList<WorkerNode> chosen,
        IReadOnlyDictionary<string, int> allWorkers,
        IReadOnlyDictionary<string, (int Min, int Max)> limits,
        int clusterMaxWorkers)
    {
        var left = new Dictionary<string, int>(allWorkers, StringComparer.Ordinal);
        foreach (var w in chosen) left[w.TypeName ?? ""] = left.GetValueOrDefault(w.TypeName ?? "") - 1;
        var total = left.Values.Sum();
        var chosenIds = chosen.Select(w => w.ProviderNodeId).ToHashSet(StringComparer.Ordinal);
        var candidates = workers.Where(w => w.Load.IsIdle && !chosenIds.Contains(w.ProviderNodeId))
            .OrderBy(w => w.Load.IdleSince).ThenBy(w => w.ProviderNodeId, StringComparer.Ordinal).ToList();
        var surplus = new List<WorkerNode>();
        // The type's limit first, then the cluster's: a node that leaves for its type also makes room under the cluster's.
        foreach (var w in candidates)
        {
            var type = w.TypeName ?? "";
            var (min, max) = limits.TryGetValue(type, out var l) ? l : (0, int.MaxValue);
            if (left[type] <= min || left[type] <= max) continue;
            left[type]--;
            total--;
            surplus.Add(w);
        }
        foreach (var w in candidates.Where(w => !surplus.Contains(w)).ToList())
        {
            if (total <= clusterMaxWorkers) break;
            var type = w.TypeName ?? "";
            var min = limits.TryGetValue(type, out var l) ? l.Min : 0;
            if (left[type] <= min) continue;
            left[type]--;
            total--;
            surplus.Add(w);
        }
        return surplus;
    }

    /// <summary>
    /// Packs the request_resources bundles onto the cluster's total capacity, filling the nodes that stay anyway first
    /// (the head, busy nodes, idle ones not yet expired) and expired ones last, the most recently idle of them first:
    /// an expired node that receives a bundle is needed for the cluster to keep the requested size.
    /// </summary>
    private static HashSet<WorkerNode> NeededForRequests(
        IReadOnlyList<WorkerNode> workers, List<WorkerNode> expired,
        IReadOnlyList<IReadOnlyDictionary<string, double>> otherNodeTotals,
        IReadOnlyList<IReadOnlyDictionary<string, double>> requests)
    {
        var needed = new HashSet<WorkerNode>();
        if (requests.Count == 0) return needed;
        var expiredSet = expired.ToHashSet();
        var bins = otherNodeTotals.Select(t => (Node: (WorkerNode?)null, Room: ResourceShapes.Copy(t)))
            .Concat(workers.Where(w => !expiredSet.Contains(w)).Select(w => (Node: (WorkerNode?)w, Room: ResourceShapes.Copy(w.Load.Total))))
            .Concat(expired.OrderByDescending(w => w.Load.IdleSince).Select(w => (Node: (WorkerNode?)w, Room: ResourceShapes.Copy(w.Load.Total))))
            .ToList();
        foreach (var bundle in requests.OrderByDescending(r => r.Count(q => q.Value > ResourceShapes.Epsilon)).ThenByDescending(r => r.Values.Sum()))
        {
            var bin = bins.FirstOrDefault(b => ResourceShapes.Fits(b.Room, bundle));
            if (bin.Room is null) continue;
            ResourceShapes.Subtract(bin.Room, bundle);
            if (bin.Node is not null && expiredSet.Contains(bin.Node)) needed.Add(bin.Node);
        }
        return needed;
    }
}
