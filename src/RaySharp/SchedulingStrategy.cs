using RaySharp.Common;

namespace RaySharp;

/// <summary>Where a task may run, as Ray's scheduling strategies.</summary>
public sealed record SchedulingStrategy
{
    private SchedulingStrategy(Rpc.Protocol.SchedulingStrategyKind kind, string? nodeId = null, bool soft = false)
    {
        Kind = kind;
        NodeId = nodeId;
        Soft = soft;
    }

    private SchedulingStrategy(RaySharp.PlacementGroup group, int bundleIndex, bool captureChildTasks)
        : this(Rpc.Protocol.SchedulingStrategyKind.SchedulingPlacementGroup)
    {
        Group = group;
        BundleIndex = bundleIndex;
        CaptureChildTasks = captureChildTasks;
    }

    internal Rpc.Protocol.SchedulingStrategyKind Kind { get; }

    /// <summary>For node affinity: the node.</summary>
    public string? NodeId { get; }

    /// <summary>For node affinity: may run elsewhere when that node is gone or cannot fit the task.</summary>
    public bool Soft { get; }

    /// <summary>For a placement group: the group.</summary>
    public RaySharp.PlacementGroup? Group { get; }

    /// <summary>For a placement group: the bundle, or -1 for any of the group's bundles.</summary>
    public int BundleIndex { get; } = -1;

    /// <summary>For a placement group: what the task or actor submits with the default strategy goes in the group too.</summary>
    public bool CaptureChildTasks { get; }

    /// <summary>Pack onto the local node while it is lightly used (under 50%), then spread: Ray's hybrid policy.</summary>
    public static SchedulingStrategy Default { get; } = new(Rpc.Protocol.SchedulingStrategyKind.SchedulingDefault);

    /// <summary>Spread tasks over the nodes that can run them, least used first.</summary>
    public static SchedulingStrategy Spread { get; } = new(Rpc.Protocol.SchedulingStrategyKind.SchedulingSpread);

    /// <summary>Run on the given node (see <see cref="Ray.Nodes"/>); unless <paramref name="soft"/>, fail when it cannot.</summary>
    public static SchedulingStrategy NodeAffinity(string nodeId, bool soft = false) =>
        UniqueId.IsValid(nodeId)
            ? new(Rpc.Protocol.SchedulingStrategyKind.SchedulingNodeAffinity, nodeId, soft)
            : throw new ArgumentException($"'{nodeId}' is not a node id; take one from Ray.Nodes()", nameof(nodeId));

    /// <summary>
    /// Run in the bundles of <paramref name="placementGroup"/>: bundle <paramref name="bundleIndex"/>, or any of them
    /// with -1 (Ray's <c>PlacementGroupSchedulingStrategy</c>). The task or actor holds its resources out of the
    /// bundle's, so it must fit the bundle; it waits while the group is not created yet. With
    /// <paramref name="captureChildTasks"/>, the tasks and actors it submits with the default strategy run in the group
    /// too (any bundle).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The group has no bundle <paramref name="bundleIndex"/>.</exception>
    public static SchedulingStrategy PlacementGroup(RaySharp.PlacementGroup placementGroup, int bundleIndex = -1, bool captureChildTasks = false)
    {
        ArgumentNullException.ThrowIfNull(placementGroup);
        if (bundleIndex < -1 || (placementGroup.BundleCount > 0 && bundleIndex >= placementGroup.BundleCount))
            throw new ArgumentOutOfRangeException(nameof(bundleIndex), bundleIndex,
                $"placement group {placementGroup.Id} has bundles 0 to {placementGroup.BundleCount - 1}; give one of them, or -1 for any");
        return new(placementGroup, bundleIndex, captureChildTasks);
    }

    /// <summary>The strategy a child submitted with the default strategy gets inside a group that captures it.</summary>
    internal static SchedulingStrategy Captured(string placementGroupId) => new(new RaySharp.PlacementGroup(placementGroupId, []), -1, true);

    internal Rpc.Protocol.SchedulingStrategy ToProto() => new()
    {
        Kind = Kind, NodeId = NodeId ?? "", Soft = Soft,
        PlacementGroupId = Group?.Id ?? "", BundleIndex = Group is null ? 0 : BundleIndex, CaptureChildTasks = CaptureChildTasks,
    };

    /// <summary>
    /// The resources a task or actor asks for, renamed to the group's when it runs in one (<c>CPU</c> of bundle 1 is
    /// <c>CPU_group_1_&lt;group&gt;</c>), with a sliver of the bundle's marker so that one asking for nothing still lands
    /// on the bundle's node, as Ray does. Unchanged for every other strategy.
    /// </summary>
    internal Dictionary<string, double> Resources(Dictionary<string, double> shape)
    {
        if (Group is not { } group) return shape;
        var renamed = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var (name, amount) in shape)
            renamed[BundleIndex < 0 ? BundleResources.Wildcard(name, group.Id) : BundleResources.Indexed(name, group.Id, BundleIndex)] = amount;
        var marker = BundleIndex < 0 ? BundleResources.Wildcard(BundleResources.Marker, group.Id) : BundleResources.Indexed(BundleResources.Marker, group.Id, BundleIndex);
        renamed[marker] = renamed.GetValueOrDefault(marker) + BundleResources.MarkerShare;
        return renamed;
    }

    public override string ToString() => Kind switch
    {
        Rpc.Protocol.SchedulingStrategyKind.SchedulingSpread => "Spread",
        Rpc.Protocol.SchedulingStrategyKind.SchedulingNodeAffinity => $"NodeAffinity({NodeId}{(Soft ? ", soft" : "")})",
        Rpc.Protocol.SchedulingStrategyKind.SchedulingPlacementGroup => $"PlacementGroup({Group?.Id}, bundle {BundleIndex}{(CaptureChildTasks ? ", capture" : "")})",
        _ => "Default",
    };
}
