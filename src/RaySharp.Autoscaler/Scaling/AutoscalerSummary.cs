using System.Globalization;
using System.Text;

namespace RaySharp.Autoscaler.Scaling;

/// <summary>A node launched and not yet joined: <paramref name="Ip"/> is null while the provider is still making it.</summary>
internal sealed record PendingNode(string? Ip, string NodeType, string State);

/// <summary>A launch, setup or termination that went wrong, or a node that died: kept so that it is shown, not lost in a log.</summary>
internal sealed record AutoscalerFailure(DateTimeOffset Time, string NodeType, string? Ip, string Message);

/// <summary>
/// What the autoscaler knows after a tick, as <c>raysharp status</c> prints it (Ray's <c>ray status</c> blocks
/// "Node status" and "Resources").
/// </summary>
internal sealed record AutoscalerSummary
{
    public required DateTimeOffset Time { get; init; }

    /// <summary>Joined nodes by type, the head included.</summary>
    public IReadOnlyDictionary<string, int> ActiveNodes { get; init; } = new Dictionary<string, int>();

    /// <summary>Of <see cref="ActiveNodes"/>, those idle now.</summary>
    public IReadOnlyDictionary<string, int> IdleNodes { get; init; } = new Dictionary<string, int>();

    public IReadOnlyList<PendingNode> PendingNodes { get; init; } = [];

    /// <summary>The newest last.</summary>
    public IReadOnlyList<AutoscalerFailure> RecentFailures { get; init; } = [];

    /// <summary>Used and total of each resource over the joined nodes.</summary>
    public IReadOnlyDictionary<string, (double Used, double Total)> Usage { get; init; } = new Dictionary<string, (double, double)>();

    /// <summary>Queued tasks and actors by shape.</summary>
    public IReadOnlyList<ResourceDemand> Demands { get; init; } = [];

    /// <summary>request_resources bundles by shape.</summary>
    public IReadOnlyList<ResourceDemand> Constraints { get; init; } = [];

    /// <summary>Demand (and requested bundles) no node type can hold.</summary>
    public IReadOnlyList<ResourceDemand> Infeasible { get; init; } = [];

    /// <summary>Placement groups waiting for nodes, as <see cref="PlacementGroupDemand.Describe"/> prints them, with counts.</summary>
    public IReadOnlyList<(string Description, int Count)> PlacementGroups { get; init; } = [];

    /// <summary>Placement groups with a bundle no node type can hold.</summary>
    public IReadOnlyList<(string Description, int Count)> InfeasiblePlacementGroups { get; init; } = [];

    private const string Rule = "---------------------------------------------------------------";

    /// <summary>The text of Ray's <c>ray status</c>, with the same blocks and wording.</summary>
    public string Format()
    {
        var sb = new StringBuilder();
        sb.Append("======== Autoscaler status: ").Append(Time.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss.ffffff", CultureInfo.InvariantCulture)).AppendLine(" ========");
        sb.AppendLine("Node status").AppendLine(Rule);
        sb.AppendLine("Active:");
        if (ActiveNodes.Count == 0) sb.AppendLine(" (no active nodes)");
        foreach (var (type, n) in ActiveNodes.OrderBy(t => t.Key, StringComparer.Ordinal)) sb.Append(' ').Append(n).Append(' ').AppendLine(type);
        sb.AppendLine("Idle:");
        if (IdleNodes.Count == 0) sb.AppendLine(" (no idle nodes)");
        foreach (var (type, n) in IdleNodes.OrderBy(t => t.Key, StringComparer.Ordinal)) sb.Append(' ').Append(n).Append(' ').AppendLine(type);
        sb.AppendLine("Pending:");
        if (PendingNodes.Count == 0) sb.AppendLine(" (no pending nodes)");
        // As Ray: nodes still being made are counted per type, those with an address listed one by one.
        foreach (var g in PendingNodes.Where(p => p.Ip is null).GroupBy(p => (p.NodeType, p.State)))
            sb.Append(' ').Append(g.Key.NodeType).Append(", ").Append(g.Count()).Append(' ').AppendLine(g.Key.State);
        foreach (var p in PendingNodes.Where(p => p.Ip is not null))
            sb.Append(' ').Append(p.Ip).Append(": ").Append(p.NodeType).Append(", ").AppendLine(p.State);
        sb.AppendLine("Recent failures:");
        if (RecentFailures.Count == 0) sb.AppendLine(" (no failures)");
        foreach (var f in RecentFailures)
        {
            sb.Append(' ').Append(f.Time.UtcDateTime.ToString("HH:mm:ss", CultureInfo.InvariantCulture)).Append(' ').Append(f.NodeType).Append(": ").Append(f.Message);
            if (f.Ip is not null) sb.Append(" (ip: ").Append(f.Ip).Append(')');
            sb.AppendLine();
        }
        sb.AppendLine().AppendLine("Resources").AppendLine(Rule);
        sb.AppendLine("Usage:");
        if (Usage.Count == 0) sb.AppendLine(" (no resources)");
        foreach (var (name, (used, total)) in Usage.OrderBy(u => UsageOrder(u.Key)).ThenBy(u => u.Key, StringComparer.Ordinal))
            sb.Append(' ').Append(ResourceShapes.Number(used)).Append('/').Append(ResourceShapes.Number(total)).Append(' ').AppendLine(name);
        sb.AppendLine().AppendLine("Constraints:");
        if (Constraints.Count == 0) sb.AppendLine(" (no request_resources() constraints)");
        foreach (var c in Constraints) sb.Append(' ').Append(ResourceShapes.Format(c.Shape)).Append(": ").Append(c.Count).AppendLine(" from request_resources()");
        sb.AppendLine("Demands:");
        if (Demands.Count == 0 && PlacementGroups.Count == 0) sb.AppendLine(" (no resource demands)");
        foreach (var d in Demands) sb.Append(' ').Append(ResourceShapes.Format(d.Shape)).Append(": ").Append(d.Count).AppendLine("+ pending tasks/actors");
        foreach (var (description, count) in PlacementGroups) sb.Append(' ').Append(description).Append(": ").Append(count).AppendLine("+ pending placement groups");
        if (Infeasible.Count > 0 || InfeasiblePlacementGroups.Count > 0)
        {
            sb.AppendLine("Infeasible (no node type can hold these; they launch nothing):");
            foreach (var d in Infeasible) sb.Append(' ').Append(ResourceShapes.Format(d.Shape)).Append(": ").Append(d.Count).AppendLine();
            foreach (var (description, count) in InfeasiblePlacementGroups) sb.Append(' ').Append(description).Append(": ").Append(count).AppendLine(" placement groups");
        }
        return sb.ToString();
    }

    // Ray lists CPU, then GPU, then the rest.
    private static int UsageOrder(string name) => name switch { Common.ResourceSet.Cpu => 0, Common.ResourceSet.Gpu => 1, _ => 2 };
}
