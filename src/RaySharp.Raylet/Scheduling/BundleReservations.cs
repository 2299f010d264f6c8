using RaySharp.Common;

namespace RaySharp.Raylet.Scheduling;

internal enum BundleState { Prepared, Committed }

/// <summary>One placement-group bundle this node holds: <see cref="Resources"/> are what it took from the node.</summary>
internal sealed record HeldBundle(string GroupId, int Index, IReadOnlyDictionary<string, double> Resources, BundleState State);

/// <summary>A bundle as the GCS names it in a prepare, commit or cancel.</summary>
internal readonly record struct BundleRequest(string GroupId, int Index, IReadOnlyDictionary<string, double> Resources);

/// <summary>
/// The node's placement-group bundles and their effect on its resource maps, Ray's two phases: a prepared bundle's
/// resources are gone from the available map and usable by nobody; committed, they come back under the group's names
/// (<see cref="BundleResources"/>) in both maps, for the group's leases only; cancelled, the group's names go and the
/// original resources are free again. Not thread-safe: the lease manager calls it under its lock, on its own maps, so
/// a grant never sees a half-applied bundle.
/// </summary>
internal sealed class BundleReservations(Dictionary<string, double> total, Dictionary<string, double> available)
{
    // Below this a wildcard total is gone (the last of the group's bundles here was cancelled), not a rounding residue.
    private const double Epsilon = 1e-9;
    private readonly Dictionary<(string GroupId, int Index), HeldBundle> _bundles = [];

    public int Count => _bundles.Count;

    public IReadOnlyList<HeldBundle> Held() => _bundles.Values.OrderBy(b => b.GroupId, StringComparer.Ordinal).ThenBy(b => b.Index).ToList();

    public HeldBundle? Find(string groupId, int index) => _bundles.GetValueOrDefault((groupId, index));

    /// <summary>
    /// Takes every new bundle's resources from the available map, or none of them. Bundles held already (prepared or
    /// committed: the GCS retried) are skipped, so nothing is taken twice.
    /// </summary>
    /// <returns>Null when all are held now; else which bundle did not fit and what it lacked.</returns>
    public string? Prepare(IReadOnlyList<BundleRequest> bundles)
    {
        var scratch = new Dictionary<string, double>(available, StringComparer.Ordinal);
        var taken = new List<BundleRequest>();
        foreach (var b in bundles)
        {
            if (_bundles.ContainsKey((b.GroupId, b.Index)) || taken.Any(t => t.GroupId == b.GroupId && t.Index == b.Index)) continue;
            if (!ResourceSet.Fits(b.Resources, scratch))
            {
                var missing = b.Resources.Where(r => r.Value > 0 && scratch.GetValueOrDefault(r.Key) + Epsilon < r.Value)
                    .OrderBy(r => r.Key, StringComparer.Ordinal)
                    .Select(r => $"{r.Key}: {r.Value:0.###} wanted, {scratch.GetValueOrDefault(r.Key):0.###} free");
                var earlier = taken.Count > 0 ? $" after the request's {taken.Count} earlier bundle(s)" : "";
                return $"bundle {b.Index} of placement group {b.GroupId} ({ResourceSet.Describe(b.Resources)}) does not fit on this node{earlier}: {string.Join(", ", missing)}";
            }
            ResourceSet.Subtract(scratch, b.Resources);
            taken.Add(b);
        }
        foreach (var b in taken)
        {
            ResourceSet.Subtract(available, b.Resources);
            _bundles[(b.GroupId, b.Index)] = new HeldBundle(b.GroupId, b.Index, new Dictionary<string, double>(b.Resources, StringComparer.Ordinal), BundleState.Prepared);
        }
        return null;
    }

    /// <summary>Turns prepared bundles into the group's resources; all or none. A committed bundle is left as it is.</summary>
    /// <returns>Null when all are committed now; else the first bundle that was never prepared here.</returns>
    public string? Commit(IEnumerable<(string GroupId, int Index)> bundles)
    {
        var keys = bundles.Distinct().ToList();
        foreach (var key in keys)
        {
            if (!_bundles.ContainsKey(key))
                return $"bundle {key.Index} of placement group {key.GroupId} was not prepared on this node (or was cancelled since)";
        }
        foreach (var key in keys)
        {
            var held = _bundles[key];
            if (held.State == BundleState.Committed) continue;
            var added = BundleResources.Committed(held.GroupId, held.Index, held.Resources);
            // Wildcards of several bundles of one group on this node add up; the originals stay taken from available.
            foreach (var (name, quantity) in added)
            {
                total[name] = total.GetValueOrDefault(name) + quantity;
                available[name] = available.GetValueOrDefault(name) + quantity;
            }
            _bundles[key] = held with { State = BundleState.Committed };
        }
        return null;
    }

    /// <summary>
    /// Gives a bundle back: a committed one's group resources leave both maps (wildcards by this bundle's share), and
    /// its original resources are available again. The caller has released the group's leases first, so what they held
    /// of the group is back in the available map.
    /// </summary>
    /// <returns>The bundle, or null when this node did not hold it (nothing to do).</returns>
    public HeldBundle? Cancel(string groupId, int index)
    {
        if (!_bundles.Remove((groupId, index), out var held)) return null;
        if (held.State == BundleState.Committed)
        {
            foreach (var (name, quantity) in BundleResources.Committed(groupId, index, held.Resources))
            {
                var left = total.GetValueOrDefault(name) - quantity;
                if (left <= Epsilon)
                {
                    total.Remove(name);
                    available.Remove(name);
                }
                else
                {
                    total[name] = left;
                    available[name] = Math.Clamp(available.GetValueOrDefault(name) - quantity, 0, left);
                }
            }
        }
        ResourceSet.Add(available, held.Resources, total);
        return held;
    }
}
