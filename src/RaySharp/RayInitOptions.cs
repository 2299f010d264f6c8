namespace RaySharp;

/// <summary>Options of <see cref="Ray.Init(string?, RayInitOptions?)"/>. Every default is the value used when unset.</summary>
public sealed record RayInitOptions
{
    /// <summary>CPUs of an embedded cluster's node. Default: the machine's CPU count. Ignored when joining a cluster.</summary>
    public int? NumCpus { get; init; }

    /// <summary>GPUs of an embedded cluster's node. Default 0. Ignored when joining a cluster.</summary>
    public double? NumGpus { get; init; }

    /// <summary>Custom resources of an embedded cluster's node. Default none. Ignored when joining a cluster.</summary>
    public IReadOnlyDictionary<string, double>? Resources { get; init; }

    /// <summary>Session root. Default: <c>RAYSHARP_TEMP_DIR</c>, else <c>/tmp/raysharp</c>.</summary>
    public string? TempDir { get; init; }

    /// <summary>
    /// Namespace of the actors this driver names and looks up. Default: a namespace of this job alone, so two drivers
    /// share named actors only when both give the same namespace (as in Ray).
    /// </summary>
    public string? Namespace { get; init; }

    /// <summary>
    /// The cluster token, for a driver on a machine that is not a node of the cluster. Default: <c>RAYSHARP_CLUSTER_TOKEN</c>,
    /// else the token of this machine's node of the cluster (its session directory), found by itself. An embedded
    /// cluster uses it (or <c>RAYSHARP_CLUSTER_TOKEN</c>) when given, so that other nodes can join it; else it makes its own.
    /// </summary>
    public string? Token { get; init; }

    /// <summary>How long joining waits for the head to answer. Default 10 s.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// How long the driver keeps trying to register with a GCS that went away (a head restarted on Redis) before it
    /// reports the cluster lost. Default 60 s, or <c>RAYSHARP_gcs_rpc_server_reconnect_timeout_s</c> when set, as for
    /// the raylets; the GCS waits as long for the driver.
    /// </summary>
    public TimeSpan? GcsReconnectTimeout { get; init; }
}

/// <summary>One node of the cluster, as <see cref="Ray.Nodes"/> reports it.</summary>
public sealed record NodeDescription(
    string NodeId,
    string NodeIpAddress,
    bool Alive,
    bool IsHeadNode,
    IReadOnlyDictionary<string, double> Resources,
    IReadOnlyDictionary<string, double> AvailableResources,
    string? DeathReason);

/// <summary>A RaySharp failure with a message that names the problem and the fix.</summary>
public class RayException : Exception
{
    public RayException(string message) : base(message) { }
    public RayException(string message, Exception inner) : base(message, inner) { }
}
