namespace RaySharp.Gcs;

/// <summary>Settings of the GCS server. Each default is the value used when the option is not given.</summary>
internal sealed class GcsServerOptions
{
    /// <summary>TCP port the GCS listens on (all interfaces). Default 6379, Ray's; the CLI falls back to a free port when taken.</summary>
    public int Port { get; set; } = Common.NodeAddress.DefaultGcsPort;

    /// <summary>The head's session directory, where the GCS writes the port it bound.</summary>
    public string SessionDir { get; set; } = "";

    /// <summary>How often the GCS checks each raylet. Default 3 s (Ray's <c>health_check_period_ms</c>).</summary>
    public TimeSpan HealthCheckPeriod { get; set; } = TimeSpan.FromSeconds(3);

    /// <summary>How long one check may take before it counts as missed. Default: one period.</summary>
    public TimeSpan? HealthCheckTimeout { get; set; }

    /// <summary>Consecutive missed checks after which a node is marked dead. Default 5 (Ray's <c>health_check_failure_threshold</c>).</summary>
    public int HealthCheckFailureThreshold { get; set; } = 5;

    /// <summary>Delay before the first check of a newly registered node. Default: one period.</summary>
    public TimeSpan? HealthCheckInitialDelay { get; set; }

    /// <summary>
    /// Most lightweight actors one host worker process holds before the GCS starts another on that node. Default 10,000:
    /// an idle lightweight actor costs a few hundred bytes plus its own state, so the limit bounds the blast radius of
    /// one process dying rather than memory.
    /// </summary>
    public int LightweightActorsPerWorker { get; set; } = 10_000;

    /// <summary>
    /// Redis (<c>host:port</c>) holding every GCS table, so that a GCS started again on it loses nothing. Default none:
    /// the state lives in the GCS process and dies with it.
    /// </summary>
    public string? RedisAddress { get; set; }

    /// <summary>Password of that Redis. Default none.</summary>
    public string? RedisPassword { get; set; }

    /// <summary>Prefix of this cluster's keys in Redis. Default: the head's session name, which a restarted GCS keeps.</summary>
    public string? StorageNamespace { get; set; }

    /// <summary>
    /// After a restart on stored state, how long the drivers of running jobs have to reconnect before their jobs are
    /// ended (and their actors with them). Default 60 s, Ray's <c>gcs_rpc_server_reconnect_timeout_s</c>.
    /// </summary>
    public TimeSpan DriverReconnectTimeout { get; set; } = Rpc.Clients.GcsClient.DefaultReconnectTimeout;

    /// <summary>
    /// How long a driver whose registration connection dropped has to register again before its job is ended (and
    /// its actors with it). Default 5 s: the driver registers again at once, and a driver that died (even by SIGKILL,
    /// which also just drops the connection) has its job ended this much later. A driver that exits normally ends its
    /// job itself, at once.
    /// </summary>
    public TimeSpan DriverDisconnectGrace { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Most dead actors kept per job in the actor table (and its store), the oldest dropped first. Default 1,000:
    /// enough to see why recent actors died, while a job that creates actors forever does not grow the table forever.
    /// </summary>
    public int MaxDeadActorsPerJob { get; set; } = 1_000;

    /// <summary>
    /// Most removed placement groups kept in the table (and its store) to be listed, the oldest dropped first. Default
    /// 1,000, for the reason <see cref="MaxDeadActorsPerJob"/> has a bound: a driver that creates and removes groups in
    /// a loop must not grow the table, and the scheduler's and every listing's work, forever.
    /// </summary>
    public int MaxRemovedPlacementGroups { get; set; } = DefaultMaxRemovedPlacementGroups;

    public const int DefaultMaxRemovedPlacementGroups = 1_000;

    /// <summary>Environment variable carrying the Redis password to the GCS process (kept off its command line).</summary>
    public const string RedisPasswordEnv = "RAYSHARP_REDIS_PASSWORD";

    public TimeSpan EffectiveHealthCheckTimeout => HealthCheckTimeout ?? HealthCheckPeriod;
    public TimeSpan EffectiveInitialDelay => HealthCheckInitialDelay ?? HealthCheckPeriod;

    /// <summary>Environment variables that override the health-check settings for every GCS started on this host.</summary>
    public const string HealthCheckPeriodEnv = "RAYSHARP_health_check_period_ms";
    public const string HealthCheckFailureThresholdEnv = "RAYSHARP_health_check_failure_threshold";
    /// <summary>Overrides <see cref="DriverDisconnectGrace"/>, in milliseconds (0 or more).</summary>
    public const string DriverDisconnectGraceEnv = "RAYSHARP_driver_disconnect_grace_ms";
    /// <summary>Overrides <see cref="MaxDeadActorsPerJob"/> (0 or more).</summary>
    public const string MaxDeadActorsPerJobEnv = "RAYSHARP_max_dead_actors_per_job";
    /// <summary>Overrides <see cref="MaxRemovedPlacementGroups"/> (0 or more).</summary>
    public const string MaxRemovedPlacementGroupsEnv = "RAYSHARP_max_removed_placement_groups";

    public void ApplyEnvironment()
    {
        if (int.TryParse(Environment.GetEnvironmentVariable(HealthCheckPeriodEnv), out var ms) && ms > 0)
            HealthCheckPeriod = TimeSpan.FromMilliseconds(ms);
        if (int.TryParse(Environment.GetEnvironmentVariable(HealthCheckFailureThresholdEnv), out var n) && n > 0)
            HealthCheckFailureThreshold = n;
        if (int.TryParse(Environment.GetEnvironmentVariable(DriverDisconnectGraceEnv), out var grace) && grace >= 0)
            DriverDisconnectGrace = TimeSpan.FromMilliseconds(grace);
        if (int.TryParse(Environment.GetEnvironmentVariable(MaxDeadActorsPerJobEnv), out var dead) && dead >= 0)
            MaxDeadActorsPerJob = dead;
        if (int.TryParse(Environment.GetEnvironmentVariable(MaxRemovedPlacementGroupsEnv), out var removed) && removed >= 0)
            MaxRemovedPlacementGroups = removed;
        if (Rpc.Clients.GcsClient.ReconnectTimeoutOverride() is { } reconnect) DriverReconnectTimeout = reconnect;
        if (Environment.GetEnvironmentVariable(RedisPasswordEnv) is { Length: > 0 } password) RedisPassword = password;
    }
}
