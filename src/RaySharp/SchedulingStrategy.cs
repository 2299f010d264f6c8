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

    internal Rpc.Protocol.SchedulingStrategyKind Kind { get; }

    /// <summary>For node affinity: the node.</summary>
    public string? NodeId { get; }

    /// <summary>For node affinity: may run elsewhere when that node is gone or cannot fit the task.</summary>
    public bool Soft { get; }

    /// <summary>Pack onto the local node while it is lightly used (under 50%), then spread: Ray's hybrid policy.</summary>
    public static SchedulingStrategy Default { get; } = new(Rpc.Protocol.SchedulingStrategyKind.SchedulingDefault);

    /// <summary>Spread tasks over the nodes that can run them, least used first.</summary>
    public static SchedulingStrategy Spread { get; } = new(Rpc.Protocol.SchedulingStrategyKind.SchedulingSpread);

    /// <summary>Run on the given node (see <see cref="Ray.Nodes"/>); unless <paramref name="soft"/>, fail when it cannot.</summary>
    public static SchedulingStrategy NodeAffinity(string nodeId, bool soft = false) =>
        UniqueId.IsValid(nodeId)
            ? new(Rpc.Protocol.SchedulingStrategyKind.SchedulingNodeAffinity, nodeId, soft)
            : throw new ArgumentException($"'{nodeId}' is not a node id; take one from Ray.Nodes()", nameof(nodeId));

    internal Rpc.Protocol.SchedulingStrategy ToProto() => new() { Kind = Kind, NodeId = NodeId ?? "", Soft = Soft };

    public override string ToString() => Kind switch
    {
        Rpc.Protocol.SchedulingStrategyKind.SchedulingSpread => "Spread",
        Rpc.Protocol.SchedulingStrategyKind.SchedulingNodeAffinity => $"NodeAffinity({NodeId}{(Soft ? ", soft" : "")})",
        _ => "Default",
    };
}
