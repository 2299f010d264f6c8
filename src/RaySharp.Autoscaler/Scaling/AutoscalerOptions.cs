namespace RaySharp.Autoscaler.Scaling;

/// <summary>
/// The autoscaler's own settings (the cluster's, such as max_workers and idle_timeout_minutes, come from the cluster
/// YAML). Every default is Ray's where Ray has one; docs/autoscaler.md lists them.
/// </summary>
internal sealed class AutoscalerOptions
{
    /// <summary>How often the monitor calls <see cref="StandardAutoscaler.UpdateAsync"/>. Default 5 s (Ray's <c>AUTOSCALER_UPDATE_INTERVAL_S</c>).</summary>
    public TimeSpan UpdateInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>The wait before a node type is launched again after a launch or setup of it failed. Default 5 s.</summary>
    public TimeSpan InitialBackoff { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>The backoff doubles with each failure in a row, up to this. Default 5 min.</summary>
    public TimeSpan MaxBackoff { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>Failures kept for <c>raysharp status</c> ("Recent failures"), the newest last. Default 20.</summary>
    public int MaxRecentFailures { get; init; } = 20;

    /// <summary>Pending launches a type may have however few of it run (Ray's <c>UPSCALING_INITIAL_NUM_NODES</c>). Default 5.</summary>
    public int UpscalingInitialNodes { get; init; } = 5;

    /// <summary>
    /// How long a node whose setup finished (or one found pending after the monitor restarted, counted from then) may
    /// take for its raylet to join before it is terminated and counted as a failed launch (with backoff). Default 5 min.
    /// Ray's <c>AUTOSCALER_NODE_START_WAIT_S</c> (900 s) counts from the launch, setup included; this counts from the
    /// end of the setup, when a raylet that started joins within seconds.
    /// </summary>
    public TimeSpan NodeJoinTimeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>Demand shapes planned per tick, the rest on later ticks (Ray's <c>AUTOSCALER_MAX_RESOURCE_DEMAND_VECTOR_SIZE</c>). Default 1000.</summary>
    public int MaxDemandVectorSize { get; init; } = 1000;
}
