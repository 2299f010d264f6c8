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

    /// <summary>Idle as the autoscaler means it: nothing runs, nothing is held, no object would be lost.</summary>
    public bool IsIdle => Alive && IdleSince is not null && !HoldsPrimaryObjects && ResourceShapes.AllAvailable(Total, Available);
}
