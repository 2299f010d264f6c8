namespace RaySharp.Autoscaler.Scaling;

/// <summary>
/// Ray's <c>_resource_based_utilization_scorer</c>: how well a node of a type would be used by the demand still
/// unmet. Compared in order: whether the type is a fair choice at all (a GPU type for demand that asks no GPU is
/// the last resort: GPUs are scarce and dear, and a CPU task on a GPU node keeps the node from GPU work), how many
/// of the node's resource kinds the demand asks for, then the least used resource, then the mean use. Use is cubed
/// and weighted by the quantity, as Ray's, so a well-filled large resource outweighs a small one.
/// </summary>
internal readonly record struct UtilizationScore(bool FairChoice, int MatchingKinds, double MinUtilization, double MeanUtilization)
    : IComparable<UtilizationScore>
{
    public int CompareTo(UtilizationScore other)
    {
        var c = FairChoice.CompareTo(other.FairChoice);
        if (c == 0) c = MatchingKinds.CompareTo(other.MatchingKinds);
        if (c == 0) c = MinUtilization.CompareTo(other.MinUtilization);
        if (c == 0) c = MeanUtilization.CompareTo(other.MeanUtilization);
        return c;
    }

    /// <summary>Null when a node of the type would hold none of the demand.</summary>
    public static UtilizationScore? Of(IReadOnlyDictionary<string, double> node, IReadOnlyList<IReadOnlyDictionary<string, double>> demand)
    {
        var remaining = ResourceShapes.Copy(node);
        var kinds = new HashSet<string>(StringComparer.Ordinal);
        var fitted = 0;
        foreach (var shape in demand)
        {
            foreach (var (name, q) in shape)
                if (q > ResourceShapes.Epsilon) kinds.Add(name);
            if (!ResourceShapes.Fits(remaining, shape)) continue;
            ResourceShapes.Subtract(remaining, shape);
            fitted++;
        }
        if (fitted == 0) return null;

        var matching = 0;
        var weighted = new List<double>();
        foreach (var (name, total) in node)
        {
            // As Ray: resources under one unit (a fraction of an accelerator label, say) would dominate the minimum.
            if (total < 1) continue;
            if (kinds.Contains(name)) matching++;
            var utilization = (total - remaining.GetValueOrDefault(name)) / total;
            weighted.Add(total * utilization * utilization * utilization);
        }
        if (weighted.Count == 0) return null;
        var gpuNode = node.GetValueOrDefault(Common.ResourceSet.Gpu) > ResourceShapes.Epsilon;
        var fair = !gpuNode || kinds.Contains(Common.ResourceSet.Gpu);
        return new UtilizationScore(fair, matching, weighted.Min(), weighted.Average());
    }
}
