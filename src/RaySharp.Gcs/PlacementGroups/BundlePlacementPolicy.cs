using RaySharp.Common;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs.PlacementGroups;

/// <summary>A node as the GCS sees it when it places a group: what it has, and what is free of it now.</summary>
internal sealed record CandidateNode(string NodeId, IReadOnlyDictionary<string, double> Total, IReadOnlyDictionary<string, double> Available);

internal enum PlacementOutcome
{
    /// <summary>Every bundle has a node with room for it now.</summary>
    Placed,

    /// <summary>The nodes could hold the group once what runs on them ends: it waits.</summary>
    Unavailable,

    /// <summary>Even empty, the nodes of the cluster could not hold the group: it waits for a node that fits (autoscaler demand).</summary>
    Infeasible,
}

/// <param name="Nodes">Placed: the node of each bundle that was to be placed, by bundle index.</param>
/// <param name="Reason">Not placed: why, in words for <c>raysharp status</c> and the group's state.</param>
internal sealed record BundlePlacement(PlacementOutcome Outcome, IReadOnlyDictionary<int, string> Nodes, string? Reason)
{
    public static BundlePlacement NotPlaced(PlacementOutcome outcome, string reason) => new(outcome, new Dictionary<int, string>(), reason);
}

/// <summary>
/// The first half of placing a group (Ray's bundle scheduling policy): a choice of node per bundle, simulated against
/// the GCS's view of the nodes, which prepare and commit on the raylets then make real. PACK: as few nodes as possible,
/// spanning several when one cannot hold them; SPREAD: distinct nodes where possible; STRICT_PACK: one node, or wait;
/// STRICT_SPREAD: a node per bundle, or wait. Pure, so every strategy's rules are unit-tested without a cluster. A group
/// being rescheduled keeps the bundles whose nodes live (<c>kept</c>), and its strict rules hold across kept and new
/// bundles alike.
/// </summary>
internal static class BundlePlacementPolicy
{
    private const double Epsilon = 1e-9;

    public static BundlePlacement Place(
        PlacementStrategy strategy,
        IReadOnlyList<IReadOnlyDictionary<string, double>> bundles,
        IReadOnlyList<CandidateNode> nodes,
        IReadOnlyDictionary<int, string>? kept = null)
    {
        if (bundles.Count == 0) throw new ArgumentException("a placement group needs at least one bundle", nameof(bundles));
        kept ??= new Dictionary<int, string>();
        var toPlace = Enumerable.Range(0, bundles.Count).Where(i => !kept.ContainsKey(i))
            // Largest first: the big bundles have the fewest nodes to choose from.
            .OrderByDescending(i => Size(bundles[i])).ThenBy(i => i).ToList();
        if (toPlace.Count == 0) return new BundlePlacement(PlacementOutcome.Placed, new Dictionary<int, string>(), null);

        var now = TryPlace(strategy, bundles, toPlace, nodes.Select(n => new Room(n, n.Available)).ToList(), kept);
        if (now is not null) return new BundlePlacement(PlacementOutcome.Placed, now, null);
        var empty = TryPlace(strategy, bundles, toPlace, nodes.Select(n => new Room(n, n.Total)).ToList(), kept);
        var what = Describe(strategy, bundles, toPlace);
        return empty is not null
            ? BundlePlacement.NotPlaced(PlacementOutcome.Unavailable, $"{what}: the nodes have the resources but not free now; the group waits for them")
            : BundlePlacement.NotPlaced(PlacementOutcome.Infeasible, $"{what}: no {(strategy is PlacementStrategy.StrictPack ? "node" : "set of the cluster's nodes")} could hold {(strategy is PlacementStrategy.StrictPack ? "them" : "it")} even empty; the group waits for nodes that fit");
    }

    private static Dictionary<int, string>? TryPlace(
        PlacementStrategy strategy,
        IReadOnlyList<IReadOnlyDictionary<string, double>> bundles,
        List<int> toPlace,
        List<Room> rooms,
        IReadOnlyDictionary<int, string> kept) => strategy switch
    {
        PlacementStrategy.StrictPack => StrictPack(bundles, toPlace, rooms, kept),
        PlacementStrategy.StrictSpread => StrictSpread(bundles, toPlace, rooms, kept),
        PlacementStrategy.Pack => StrictPack(bundles, toPlace, rooms, kept) ?? Greedy(bundles, toPlace, rooms, kept, spread: false),
        PlacementStrategy.Spread => Greedy(bundles, toPlace, rooms, kept, spread: true),
        _ => throw new ArgumentOutOfRangeException(nameof(strategy)),
    };

    /// <summary>All on one node: the kept bundles' node if there are any, else the one they fit tightest.</summary>
    private static Dictionary<int, string>? StrictPack(IReadOnlyList<IReadOnlyDictionary<string, double>> bundles, List<int> toPlace, List<Room> rooms, IReadOnlyDictionary<int, string> kept)
    {
        var sum = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var i in toPlace)
            foreach (var (name, q) in bundles[i]) sum[name] = sum.GetValueOrDefault(name) + q;
        var keptNodes = kept.Values.ToHashSet(StringComparer.Ordinal);
        var node = rooms
            .Where(r => (keptNodes.Count == 0 || keptNodes.Contains(r.Node.NodeId)) && ResourceSet.Fits(sum, r.Free))
            .OrderBy(r => Leftover(r, sum)).ThenBy(r => r.Node.NodeId, StringComparer.Ordinal)
            .FirstOrDefault();
        if (node is null || keptNodes.Count > 1) return null;
        return toPlace.ToDictionary(i => i, _ => node.Node.NodeId);
    }

    /// <summary>
    /// A node per bundle, none shared, none of the kept bundles' nodes: a bipartite matching of bundles to the nodes that
    /// can hold each (augmenting paths), so a bundle that could go on many nodes never takes the one another needed.
    /// </summary>
    private static Dictionary<int, string>? StrictSpread(IReadOnlyList<IReadOnlyDictionary<string, double>> bundles, List<int> toPlace, List<Room> rooms, IReadOnlyDictionary<int, string> kept)
    {
        var taken = kept.Values.ToHashSet(StringComparer.Ordinal);
        var free = rooms.Where(r => !taken.Contains(r.Node.NodeId)).ToList();
        if (free.Count < toPlace.Count) return null;
        // Each bundle's nodes, tightest fit first, so the matching leaves the roomiest nodes to the bundles after it.
        var options = toPlace.ToDictionary(i => i, i => free.Where(r => ResourceSet.Fits(bundles[i], r.Free))
            .OrderBy(r => Leftover(r, bundles[i])).ThenBy(r => r.Node.NodeId, StringComparer.Ordinal).ToList());
        var holder = new Dictionary<Room, int>();
        foreach (var i in toPlace)
            if (!Augment(i, options, holder, [])) return null;
        return holder.ToDictionary(h => h.Value, h => h.Key.Node.NodeId);
    }

    private static bool Augment(int bundle, Dictionary<int, List<Room>> options, Dictionary<Room, int> holder, HashSet<Room> visited)
    {
        foreach (var room in options[bundle])
        {
            if (!visited.Add(room)) continue;
            if (!holder.TryGetValue(room, out var other) || Augment(other, options, holder, visited))
            {
                holder[room] = bundle;
                return true;
            }
        }
        return false;
    }

    /// <summary>
    /// One bundle at a time. Pack: onto a node the group uses already where one has room, else the tightest fit.
    /// Spread: onto the node holding the fewest of the group's bundles, the roomiest among those.
    /// </summary>
    private static Dictionary<int, string>? Greedy(IReadOnlyList<IReadOnlyDictionary<string, double>> bundles, List<int> toPlace, List<Room> rooms, IReadOnlyDictionary<int, string> kept, bool spread)
    {
        var count = rooms.ToDictionary(r => r, r => kept.Values.Count(n => n == r.Node.NodeId));
        var placed = new Dictionary<int, string>();
        foreach (var i in toPlace)
        {
            var fits = rooms.Where(r => ResourceSet.Fits(bundles[i], r.Free));
            var best = (spread
                    ? fits.OrderBy(r => count[r]).ThenByDescending(r => Leftover(r, bundles[i]))
                    : fits.OrderBy(r => count[r] > 0 ? 0 : 1).ThenBy(r => Leftover(r, bundles[i])))
                .ThenBy(r => r.Node.NodeId, StringComparer.Ordinal).FirstOrDefault();
            if (best is null) return spread ? Greedy(bundles, toPlace, Fresh(rooms), kept, spread: false) : null;
            ResourceSet.Subtract(best.Free, bundles[i]);
            count[best]++;
            placed[i] = best.Node.NodeId;
        }
        return placed;
    }

    /// <summary>The rooms as they were before a greedy pass took from them.</summary>
    private static List<Room> Fresh(List<Room> rooms) => rooms.Select(r => new Room(r.Node, r.Start)).ToList();

    /// <summary>What is left of the node's room after the bundle, as fractions of its total, summed over the bundle's resources.</summary>
    private static double Leftover(Room room, IReadOnlyDictionary<string, double> bundle) =>
        bundle.Where(b => b.Value > 0).Sum(b => (room.Free.GetValueOrDefault(b.Key) - b.Value) / Math.Max(room.Node.Total.GetValueOrDefault(b.Key), Epsilon));

    private static double Size(IReadOnlyDictionary<string, double> bundle) => bundle.Values.Where(v => v > 0).Sum();

    private static string Describe(PlacementStrategy strategy, IReadOnlyList<IReadOnlyDictionary<string, double>> bundles, List<int> toPlace) =>
        $"{toPlace.Count} bundle(s) {string.Join(", ", toPlace.Order().Select(i => ResourceSet.Describe(bundles[i])))} with {strategy switch
        {
            PlacementStrategy.Pack => "PACK",
            PlacementStrategy.Spread => "SPREAD",
            PlacementStrategy.StrictPack => "STRICT_PACK",
            _ => "STRICT_SPREAD",
        }}";

    /// <summary>A node's room during one simulation (its free resources as bundles take them).</summary>
    private sealed class Room(CandidateNode node, IReadOnlyDictionary<string, double> start)
    {
        public CandidateNode Node { get; } = node;
        public IReadOnlyDictionary<string, double> Start { get; } = start;
        public Dictionary<string, double> Free { get; } = new(start, StringComparer.Ordinal);
    }
}
