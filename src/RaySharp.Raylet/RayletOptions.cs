namespace RaySharp.Raylet;

/// <summary>Settings of one raylet. Each default is the value used when the option is not given.</summary>
internal sealed class RayletOptions
{
    /// <summary>Id of this node; a new one on every start, so a node that comes back is a new node.</summary>
    public string NodeId { get; set; } = Common.UniqueId.New();

    /// <summary>The head's GCS address, <c>ip:port</c>. Required.</summary>
    public string GcsAddress { get; set; } = "";

    /// <summary>This node's IP as the cluster sees it. Default: detected from the route to the GCS.</summary>
    public string NodeIpAddress { get; set; } = "127.0.0.1";

    /// <summary>Port of the raylet's RPC server. Default 0: any free port, reported to the GCS.</summary>
    public int NodeManagerPort { get; set; }

    /// <summary>What this node offers: CPU, GPU, memory and custom resources.</summary>
    public Dictionary<string, double> Resources { get; set; } = new(StringComparer.Ordinal);

    public bool IsHead { get; set; }

    public string SessionDir { get; set; } = "";

    /// <summary>Port of the object manager (object transfer between nodes). Default 0: any free port, reported to the GCS.</summary>
    public int ObjectManagerPort { get; set; }

    /// <summary>The node's shared-memory object store: where, how large, where it spills.</summary>
    public ObjectStore.ObjectStoreOptions ObjectStore { get; set; } = new();

    /// <summary>Lowest port a worker may listen on. Default 10002, as Ray.</summary>
    public int MinWorkerPort { get; set; } = 10002;

    /// <summary>Highest port a worker may listen on. Default 19999, as Ray.</summary>
    public int MaxWorkerPort { get; set; } = 19999;

    /// <summary>Workers started when the raylet starts. Default: the node's CPU count.</summary>
    public int? PrestartWorkers { get; set; }

    /// <summary>Most workers starting at once. Default: the node's CPU count, at least 1 (Ray's maximum_startup_concurrency).</summary>
    public int? MaxStartingWorkers { get; set; }

    /// <summary>A worker that has not registered within this time is killed. Default 60 s.</summary>
    public TimeSpan WorkerRegisterTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>How often the raylet reports its available resources and refreshes its view of other nodes. Default 1 s.</summary>
    public TimeSpan ResourceReportPeriod { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Time given to workers between SIGTERM and SIGKILL when the raylet stops. Default 3 s.</summary>
    public TimeSpan WorkerKillGracePeriod { get; set; } = TimeSpan.FromSeconds(3);

    /// <summary>How long the raylet keeps trying to register with the GCS before it gives up. Default 10 s.</summary>
    public TimeSpan GcsConnectTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// How long the raylet keeps running without reaching the GCS before it stops itself (and its workers), so that a
    /// dead head leaves no orphan nodes behind. Default 60 s (Ray's <c>gcs_rpc_server_reconnect_timeout_s</c>).
    /// </summary>
    public TimeSpan GcsReconnectTimeout { get; set; } = Rpc.Clients.GcsClient.DefaultReconnectTimeout;

    /// <summary>
    /// Most jobs a worker runs tasks or actors of: an idle worker that has served this many is stopped rather than
    /// leased to yet another job (a fresh worker is started instead). Each job's code is loaded into the worker for good (its load context cannot be unloaded, see
    /// <c>JobAssemblyLoadContext</c>), so without a bound a long-lived worker of a busy cluster grows with every job
    /// it ever served. Default 8; <c>RAYSHARP_max_jobs_per_worker</c> overrides it.
    /// </summary>
    public int MaxJobsPerWorker { get; set; } = 8;

    public const string MaxJobsPerWorkerEnv = "RAYSHARP_max_jobs_per_worker";

    /// <summary>Overrides <see cref="ObjectStore.ObjectStoreOptions.ChunkTimeout"/>, in milliseconds (more than 0).</summary>
    public const string ObjectChunkTimeoutEnv = "RAYSHARP_object_chunk_timeout_ms";

    /// <summary>
    /// Applies <c>RAYSHARP_gcs_rpc_server_reconnect_timeout_s</c> (<see cref="Rpc.Clients.GcsClient.ReconnectTimeoutEnv"/>),
    /// <see cref="MaxJobsPerWorkerEnv"/> and <see cref="ObjectChunkTimeoutEnv"/> when set.
    /// </summary>
    public void ApplyEnvironment()
    {
        if (Rpc.Clients.GcsClient.ReconnectTimeoutOverride() is { } reconnect) GcsReconnectTimeout = reconnect;
        if (int.TryParse(Environment.GetEnvironmentVariable(MaxJobsPerWorkerEnv), out var jobs) && jobs > 0) MaxJobsPerWorker = jobs;
        if (int.TryParse(Environment.GetEnvironmentVariable(ObjectChunkTimeoutEnv), out var chunkMs) && chunkMs > 0)
            ObjectStore.ChunkTimeout = TimeSpan.FromMilliseconds(chunkMs);
    }

    public int CpuCount => (int)Math.Floor(Resources.GetValueOrDefault(Common.ResourceSet.Cpu));
}
