using RaySharp.Common;

// Well-formedness rules of the framed (hot-path) messages, as RequestValidation.cs has them for gRPC. FramedRequests
// applies them at dispatch, so a framed handler can trust the ids (some become file names), addresses and quantities.
namespace RaySharp.Rpc.Protocol;

public sealed partial class PushTaskRequest : IValidatedRequest
{
    /// <summary>Largest serialized function descriptor accepted (a few hundred bytes in practice).</summary>
    internal const int MaxFunctionBytes = 64 * 1024;

    string? IValidatedRequest.Validate()
    {
        if (Validation.Id(TaskId, "task_id") is { } task) return task;
        if (FramedValidation.JobId(JobId) is { } job) return job;
        if (ActorId.Length > 0 && Validation.Id(ActorId, "actor_id") is { } actor) return actor;
        if (FunctionBytes.Length > MaxFunctionBytes) return $"function_bytes has {FunctionBytes.Length} bytes, more than {MaxFunctionBytes}";
        return MaxConcurrency < 0 ? $"max_concurrency {MaxConcurrency} is negative" : null;
    }
}

public sealed partial class TaskOutput : IValidatedRequest
{
    string? IValidatedRequest.Validate() => TaskId.Length > 0 ? Validation.Id(TaskId, "task_id") : null;
}

public sealed partial class ActorKillRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate() => Validation.Id(ActorId, "actor_id");
}

public sealed partial class RegisterDriverRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate() => FramedValidation.JobId(JobId);
}

public sealed partial class ObjectStoreClientInfo : IValidatedRequest
{
    string? IValidatedRequest.Validate()
    {
        if (WorkerId.Length > 0 && Validation.Id(WorkerId, "worker_id") is { } worker) return worker;
        return Pid < 0 ? $"pid {Pid} is negative" : FramedValidation.JobId(JobId);
    }
}

public sealed partial class ObjectCreateRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate() =>
        Validation.Id(ObjectId, "object_id") ?? (Size < 0 ? $"size {Size} is negative" : FramedValidation.JobId(JobId));
}

public sealed partial class ObjectIdsRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate()
    {
        if (ObjectIds.Count > FramedValidation.MaxObjectsPerRequest) return $"object_ids has {ObjectIds.Count} ids, more than {FramedValidation.MaxObjectsPerRequest}";
        foreach (var id in ObjectIds)
        {
            if (Validation.Id(id, "object_ids[]") is { } problem) return problem;
        }
        return null;
    }
}

public sealed partial class StoredObject : IValidatedRequest
{
    string? IValidatedRequest.Validate()
    {
        if (Validation.Id(ObjectId, "object_id") is { } id) return id;
        if (Size < 0) return $"object {ObjectId}: size {Size} is negative";
        if (Validation.Id(NodeId, "node_id") is { } node) return node;
        if (!System.Net.IPAddress.TryParse(NodeIpAddress, out _)) return $"object {ObjectId}: node_ip_address '{NodeIpAddress}' is not an IP address";
        if (ObjectManagerPort is < 1 or > 65535) return $"object {ObjectId}: object_manager_port {ObjectManagerPort} is out of range";
        return FramedValidation.JobId(JobId);
    }
}

public sealed partial class ObjectGetRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate()
    {
        if (Object is null) return "object is missing";
        // Past this a CancellationTokenSource cannot count (about 24 days): no caller means it.
        if (TimeoutMs is < 0 or > int.MaxValue) return $"timeout_ms {TimeoutMs} is out of range";
        return ((IValidatedRequest)Object).Validate();
    }
}

public sealed partial class ObjectFreeRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate()
    {
        if (Objects.Count > FramedValidation.MaxObjectsPerRequest) return $"objects has {Objects.Count} entries, more than {FramedValidation.MaxObjectsPerRequest}";
        foreach (var obj in Objects)
        {
            if (((IValidatedRequest)obj).Validate() is { } problem) return problem;
        }
        return null;
    }
}

public sealed partial class ObjectChunkRequest : IValidatedRequest
{
    string? IValidatedRequest.Validate()
    {
        if (Validation.Id(ObjectId, "object_id") is { } id) return id;
        if (Offset < 0) return $"offset {Offset} is negative";
        if (Length is < 0 or > FramedValidation.MaxChunkLength) return $"length {Length} is outside 0..{FramedValidation.MaxChunkLength}";
        if (Requester.Length > 0 && !NodeAddress.TryParse(Requester, out _, out _, out var error)) return $"requester: {error}";
        return null;
    }
}

internal static class FramedValidation
{
    /// <summary>Most ids (or objects) in one seal, release, free or free-copies message. The code sends one per message today.</summary>
    public const int MaxObjectsPerRequest = 10_000;

    /// <summary>Largest chunk a node may ask for (the object manager asks for <c>ChunkSize</c>, 4 MiB by default).</summary>
    public const int MaxChunkLength = 256 * 1024 * 1024;

    /// <summary>Job ids are the GCS's counter in hex (<c>x8</c>); empty where a store client has no job.</summary>
    public static string? JobId(string id) =>
        id.Length <= 16 && id.All(char.IsAsciiHexDigitLower)
            ? null
            : $"job_id '{Shorten(id)}' is not a job id (up to 16 lowercase hex digits)";

    /// <summary>Peers' strings quoted in errors are cut: an error must not echo back a megabyte.</summary>
    public static string Shorten(string text) => text.Length <= 80 ? text : text[..80] + "…";
}
