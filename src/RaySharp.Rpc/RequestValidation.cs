using RaySharp.Common;

// Well-formedness rules of the requests that carry data from other processes. The RpcGatekeeper applies them to every
// call, so a service handler can trust ids, ports and quantities it receives.
namespace RaySharp.Rpc.Protocol;

public sealed partial class RegisterNodeRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate()
    {
        if (NodeInfo is null) return "node_info is missing";
        if (!UniqueId.IsValid(NodeInfo.NodeId)) return $"node_id '{NodeInfo.NodeId}' is not a {UniqueId.Length * 2}-character hex id";
        if (!System.Net.IPAddress.TryParse(NodeInfo.NodeIpAddress, out _)) return $"node_ip_address '{NodeInfo.NodeIpAddress}' is not an IP address";
        if (NodeInfo.NodeManagerPort is < 1 or > 65535) return $"node_manager_port {NodeInfo.NodeManagerPort} is out of range";
        return Validation.Resources(NodeInfo.ResourcesTotal, "resources_total");
    }
}

public sealed partial class UnregisterNodeRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate() => Validation.Id(NodeId, "node_id");
}

public sealed partial class DrainNodeRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate() =>
        Validation.Id(NodeId, "node_id") ?? DrainReason.Validate(Reason, ReasonMessage);
}

public sealed partial class DrainRayletRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate() => DrainReason.Validate(Reason, ReasonMessage);
}

internal static class DrainReason
{
    /// <summary>A reason message is for logs and status: a line, not a payload.</summary>
    public const int MaxMessageLength = 1024;

    public static string? Validate(DrainNodeReason reason, string message)
    {
        if (reason != DrainNodeReason.IdleTermination) return $"drain reason {reason} is not supported (only DRAIN_NODE_REASON_IDLE_TERMINATION)";
        return message.Length > MaxMessageLength ? $"reason_message has {message.Length} characters, more than {MaxMessageLength}" : null;
    }
}

public sealed partial class ReportResourceUsageRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate() =>
        Validation.Id(NodeId, "node_id") ?? Validation.Resources(ResourcesAvailable, "resources_available")
        ?? Validation.Resources(ResourcesTotal, "resources_total")
        ?? (IdleDurationMs < 0 || PrimaryObjectCount < 0 ? "idle_duration_ms and primary_object_count must not be negative" : null);
}

public sealed partial class RequestWorkerLeaseRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate()
    {
        if (Strategy is { Kind: SchedulingStrategyKind.SchedulingNodeAffinity } s && !UniqueId.IsValid(s.NodeId))
            return $"node affinity names node '{s.NodeId}', which is not a node id";
        if (Strategy is { Kind: SchedulingStrategyKind.SchedulingPlacementGroup } g && (!UniqueId.IsValid(g.PlacementGroupId) || g.BundleIndex < -1))
            return $"the placement group strategy names group '{g.PlacementGroupId}' bundle {g.BundleIndex}: give a group id and a bundle index of -1 or more";
        return Validation.Resources(Resources, "resources");
    }
}

public sealed partial class PrepareBundleResourcesRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate() => Validation.Bundles(Bundles, "bundles", allowEmpty: false);
}

public sealed partial class CreatePlacementGroupRequest : IValidatedRequest
{
    /// <summary>A group's name is for people and lookups: a line, not a payload.</summary>
    public const int MaxNameLength = 256;

    string? IValidatedRequest.Validate()
    {
        if (Spec is null) return "spec is missing";
        if (Validation.Id(Spec.PlacementGroupId, "spec.placement_group_id") is { } id) return id;
        if (!Enum.IsDefined(Spec.Strategy)) return $"spec.strategy {(int)Spec.Strategy} is not a placement strategy";
        if (Spec.Name.Length > MaxNameLength || Spec.RayNamespace.Length > MaxNameLength) return $"spec.name and spec.ray_namespace may have at most {MaxNameLength} characters";
        if (Spec.Bundles.Count == 0) return "spec.bundles is empty: a placement group has at least one bundle";
        for (var i = 0; i < Spec.Bundles.Count; i++)
        {
            var bundle = Spec.Bundles[i];
            if (bundle.BundleIndex != i) return $"spec.bundles[{i}].bundle_index is {bundle.BundleIndex}, not its position {i}";
            if (bundle.PlacementGroupId.Length > 0 && bundle.PlacementGroupId != Spec.PlacementGroupId) return $"spec.bundles[{i}] names another placement group";
            var own = bundle.Clone();
            own.PlacementGroupId = Spec.PlacementGroupId;
            own.NodeId = "";
            if (Validation.Bundle(own, $"spec.bundles[{i}]") is { } error) return error;
        }
        return Spec.Bundles.Count > Validation.MaxBundles ? $"spec.bundles has more than {Validation.MaxBundles} bundles" : null;
    }
}

public sealed partial class RemovePlacementGroupRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate() => Validation.Id(PlacementGroupId, "placement_group_id");
}

public sealed partial class GetPlacementGroupRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate() => Validation.Id(PlacementGroupId, "placement_group_id");
}

public sealed partial class WaitPlacementGroupUntilReadyRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate() =>
        Validation.Id(PlacementGroupId, "placement_group_id") ?? (TimeoutMs < 0 ? "timeout_ms must not be negative" : null);
}

public sealed partial class CommitBundleResourcesRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate() => Validation.Bundles(Bundles, "bundles", allowEmpty: false);
}

public sealed partial class CancelResourceReserveRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate() => Bundle is null ? "bundle is missing" : Validation.Bundle(Bundle, "bundle");
}

public sealed partial class ReleaseUnusedBundlesRequest : IValidatedRequest
{
    // Empty is meaningful: the GCS knows no bundle, so every one held here goes.
    string? IValidatedRequest.Validate() => Validation.Bundles(BundlesInUse, "bundles_in_use", allowEmpty: true);
}

public sealed partial class RegisterWorkerRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate()
    {
        if (!UniqueId.IsValid(WorkerId)) return $"worker_id '{WorkerId}' is not a worker id";
        if (Pid <= 0) return "pid must be positive";
        return Port is < 1 or > 65535 ? $"port {Port} is out of range" : null;
    }
}

public sealed partial class KvPutRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate() => Key.IsEmpty ? "key is empty" : null;
}

public sealed partial class KvGetRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate() => Key.IsEmpty ? "key is empty" : null;
}

internal static class Validation
{
    public static string? Id(string id, string field) =>
        UniqueId.IsValid(id) ? null : $"{field} '{id}' is not a {UniqueId.Length * 2}-character hex id";

    /// <summary>More bundles than any group has in one call is not a request but a flood.</summary>
    public const int MaxBundles = 10_000;

    public static string? Bundles(IList<BundleSpec> bundles, string field, bool allowEmpty)
    {
        if (bundles.Count == 0 && !allowEmpty) return $"{field} is empty";
        if (bundles.Count > MaxBundles) return $"{field} has {bundles.Count} bundles, more than {MaxBundles}";
        for (var i = 0; i < bundles.Count; i++)
        {
            if (Bundle(bundles[i], $"{field}[{i}]") is { } error) return error;
        }
        return null;
    }

    public static string? Bundle(BundleSpec bundle, string field)
    {
        if (!UniqueId.IsValid(bundle.PlacementGroupId))
            return $"{field}.placement_group_id '{bundle.PlacementGroupId}' is not a {UniqueId.Length * 2}-character hex id";
        if (bundle.BundleIndex < 0) return $"{field}.bundle_index {bundle.BundleIndex} is negative";
        if (bundle.NodeId.Length > 0 && !UniqueId.IsValid(bundle.NodeId)) return $"{field}.node_id '{bundle.NodeId}' is not a node id";
        if (bundle.Resources.Count == 0) return $"{field}.resources is empty: a bundle reserves something";
        foreach (var (name, quantity) in bundle.Resources)
        {
            if (!ResourceSet.IsValidName(name)) return $"{field}.resources has an invalid resource name '{name}'";
            // The group's names are made from it; they must be valid names too (the length limit).
            if (!ResourceSet.IsValidName(BundleResources.Indexed(name, bundle.PlacementGroupId, bundle.BundleIndex)))
                return $"{field}.resources name '{name}' is too long to name a bundle resource";
            if (!double.IsFinite(quantity) || quantity <= 0) return $"{field}.resources[{name}] = {quantity} is not a positive number";
        }
        return null;
    }

    public static string? Resources(IDictionary<string, double> resources, string field)
    {
        foreach (var (name, quantity) in resources)
        {
            if (!ResourceSet.IsValidName(name)) return $"{field} has an invalid resource name '{name}'";
            if (!double.IsFinite(quantity) || quantity < 0) return $"{field}[{name}] = {quantity} is not a non-negative number";
        }
        return null;
    }
}
