namespace RaySharp.Autoscaler.Scaling;

/// <summary>
/// What the monitor reads from the GCS each tick and hands to <see cref="StandardAutoscaler.UpdateAsync"/>. A plain
/// record so that the wiring only fills it. Demand counts only work that waits: a task that runs holds resources
/// (it shows as <see cref="NodeLoad.Available"/> below <see cref="NodeLoad.Total"/>) and must not also be listed here,
/// or the cluster would grow for work it already does.
/// </summary>
internal sealed record LoadSnapshot
{
    /// <summary>
    /// Every node the GCS knows, the dead ones included: a node listed dead is how a died raylet is noticed (one merely
    /// missing is not taken for dead).
    /// </summary>
    public IReadOnlyList<NodeLoad> Nodes { get; init; } = [];

    /// <summary>Tasks and actors queued for resources, by shape with counts (Ray's <c>resource_load_by_shape</c>).</summary>
    public IReadOnlyList<ResourceDemand> PendingDemands { get; init; } = [];

    /// <summary>
    /// Queued work no node of the cluster can hold now (the raylets' infeasible queue). Planned like the rest: it is
    /// infeasible for the autoscaler only when no node type could hold it either.
    /// </summary>
    public IReadOnlyList<ResourceDemand> InfeasibleDemands { get; init; } = [];

    /// <summary>
    /// The bundles of the last <c>request_resources</c> call (stored in the GCS, so they persist until the next call
    /// replaces them; an empty list withdraws them). Sized against the cluster's total capacity, not what is free.
    /// </summary>
    public IReadOnlyList<IReadOnlyDictionary<string, double>> ResourceRequests { get; init; } = [];

    /// <summary>
    /// Placement groups waiting for their bundles to be placed (Ray's <c>placement_group_load</c>), with only the bundles
    /// not placed yet. No raylet lists these bundles in its queue, so they are demand of their own, not counted twice.
    /// </summary>
    public IReadOnlyList<PlacementGroupDemand> PlacementGroups { get; init; } = [];
}

/// <summary>How a group's bundles must be spread over nodes (Ray's placement strategies).</summary>
internal enum GroupStrategy
{
    Pack,
    Spread,
    StrictPack,
    StrictSpread,
}

/// <summary>A placement group that waits for nodes, as the autoscaler plans for it.</summary>
/// <param name="Bundles">The bundles not yet placed on a node.</param>
internal sealed record PlacementGroupDemand(string GroupId, GroupStrategy Strategy, IReadOnlyList<IReadOnlyDictionary<string, double>> Bundles)
{
    /// <summary>
    /// Nodes that already hold one of the group's bundles (a group being placed again after a node died): a
    /// STRICT_SPREAD group's other bundles cannot go there.
    /// </summary>
    public IReadOnlySet<string> PlacedOn { get; init; } = new HashSet<string>(StringComparer.Ordinal);

    /// <summary>
    /// What must each fit one node: a STRICT_PACK group's bundles summed (they all go on one node), every other group's
    /// bundles one by one (a STRICT_SPREAD group's then also on distinct nodes).
    /// </summary>
    public IReadOnlyList<IReadOnlyDictionary<string, double>> Shapes =>
        Strategy != GroupStrategy.StrictPack || Bundles.Count <= 1 ? Bundles : [Sum(Bundles)];

    private static Dictionary<string, double> Sum(IEnumerable<IReadOnlyDictionary<string, double>> bundles)
    {
        var sum = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var b in bundles)
            foreach (var (name, quantity) in b)
                sum[name] = sum.GetValueOrDefault(name) + quantity;
        return sum;
    }

    /// <summary>As Ray's <c>ray status</c> lists a pending group: <c>{'CPU': 1.0} * 3 (STRICT_SPREAD)</c>.</summary>
    public string Describe() =>
        string.Join(", ", ResourceShapes.Group(Bundles.Select(b => new ResourceDemand(b, 1))).Select(d => $"{ResourceShapes.Format(d.Shape)} * {d.Count}"))
        + " (" + Strategy switch
        {
            GroupStrategy.Pack => "PACK",
            GroupStrategy.Spread => "SPREAD",
            GroupStrategy.StrictPack => "STRICT_PACK",
            _ => "STRICT_SPREAD",
        } + ")";
}

/// <summary>One node's load as the GCS reports it.</summary>
/// <param name="NodeId">The raylet's node id.</param>
/// <param name="Ip">The node's address: how it is matched to the provider's node.</param>
internal sealed record NodeLoad(string NodeId, string Ip)
{
    /// <summary>The key of available_node_types (the provider's <c>NodeTags.NodeType</c> tag, when the monitor knows it).</summary>
    public string? NodeType { get; init; }

    public IReadOnlyDictionary<string, double> Total { get; init; } = new Dictionary<string, double>();

    public IReadOnlyDictionary<string, double> Available { get; init; } = new Dictionary<string, double>();

    /// <summary>Since when the node has run nothing (no leases); null while it runs something.</summary>
    public DateTimeOffset? IdleSince { get; init; }

    /// <summary>The node holds the primary copy of an object still referenced: terminating it would lose the object.</summary>
    public bool HoldsPrimaryObjects { get; init; }

    /// <summary>False once the GCS marked the node dead.</summary>
    public bool Alive { get; init; } = true;

    public bool IsHead { get; init; }

    /// <summary>
    /// The node accepted a drain (its termination is under way, or failed and is tried again): what it has free takes
    /// no demand, since it grants no lease.
    /// </summary>
    public bool Draining { get; init; }

    /// <summary>
    /// The node holds a committed placement-group bundle (its group's resources are in its total). Such a node is
    /// reserved for the group even when nothing runs in the bundle, and its raylet would refuse to drain.
    /// </summary>
    public bool HoldsBundles { get; init; }

    /// <summary>Idle as the autoscaler means it: nothing runs, nothing is held, no object would be lost.</summary>
    public bool IsIdle => Alive && IdleSince is not null && !HoldsPrimaryObjects && !HoldsBundles && ResourceShapes.AllAvailable(Total, Available);
}
