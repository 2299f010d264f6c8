namespace RaySharp.Autoscaler.Config;

/// <summary>
/// A cluster YAML, with Ray's keys (so Ray's cluster configs port by changing commands only) and every default filled
/// in by <see cref="ClusterConfigLoader"/>. The defaults are documented in docs/launcher.md.
/// </summary>
internal sealed class ClusterConfig
{
    /// <summary>The file the config came from (absolute), for messages and relative paths.</summary>
    public required string SourceFile { get; init; }

    /// <summary><c>cluster_name</c>: names the cluster's state and its nodes' tags. Default "default".</summary>
    public string ClusterName { get; set; } = "default";

    /// <summary><c>max_workers</c>: worker nodes at most, over all types. Default 2 (for <c>local</c>: the number of worker_ips).</summary>
    public int MaxWorkers { get; set; } = 2;

    /// <summary><c>upscaling_speed</c>: how many nodes the autoscaler may add at once, as a multiple of those running. Default 1.0.</summary>
    public double UpscalingSpeed { get; set; } = 1.0;

    /// <summary><c>idle_timeout_minutes</c>: how long a worker node may stay idle before the autoscaler removes it. Default 5.</summary>
    public double IdleTimeoutMinutes { get; set; } = 5;

    public required ProviderConfig Provider { get; set; }

    public AuthConfig Auth { get; set; } = new();

    /// <summary><c>available_node_types</c>, by name. Default: one head type and one worker type, with no resources declared (detected on the node).</summary>
    public Dictionary<string, NodeTypeConfig> AvailableNodeTypes { get; set; } = new(StringComparer.Ordinal);

    /// <summary><c>head_node_type</c>: the key of <see cref="AvailableNodeTypes"/> the head is.</summary>
    public string HeadNodeType { get; set; } = "";

    /// <summary><c>file_mounts</c>: remote path → local path, copied to every node before its setup commands.</summary>
    public Dictionary<string, string> FileMounts { get; set; } = new(StringComparer.Ordinal);

    /// <summary><c>cluster_synced_files</c>: paths on the head copied to every worker.</summary>
    public List<string> ClusterSyncedFiles { get; set; } = [];

    /// <summary><c>rsync_exclude</c>: patterns rsync leaves out of file mounts.</summary>
    public List<string> RsyncExclude { get; set; } = [];

    /// <summary><c>rsync_filter</c>: files (for example .gitignore) whose patterns rsync leaves out of file mounts.</summary>
    public List<string> RsyncFilter { get; set; } = [];

    /// <summary><c>initialization_commands</c>: run first on every node, once per node (before setup).</summary>
    public List<string> InitializationCommands { get; set; } = [];

    /// <summary><c>setup_commands</c>: run on every node, before the head's or worker's own.</summary>
    public List<string> SetupCommands { get; set; } = [];

    public List<string> HeadSetupCommands { get; set; } = [];

    public List<string> WorkerSetupCommands { get; set; } = [];

    /// <summary><c>head_start_ray_commands</c>. Default: stop what runs, then <c>raysharp start --head --port=6379</c>.</summary>
    public List<string> HeadStartRayCommands { get; set; } = [.. DefaultHeadStartCommands];

    /// <summary>
    /// <c>worker_start_ray_commands</c>. Default: stop what runs, then join the head at the address its GCS bound
    /// (<c>$RAYSHARP_HEAD_IP:6379</c> as Ray's configs write it works too, when the head got that port).
    /// </summary>
    public List<string> WorkerStartRayCommands { get; set; } = [.. DefaultWorkerStartCommands];

    public static readonly IReadOnlyList<string> DefaultHeadStartCommands =
    [
        "raysharp stop",
        "raysharp start --head --port=6379",
    ];

    public static readonly IReadOnlyList<string> DefaultWorkerStartCommands =
    [
        "raysharp stop",
        "raysharp start --address=$RAYSHARP_HEAD_ADDRESS",
    ];

    public NodeTypeConfig HeadType => AvailableNodeTypes[HeadNodeType];

    public IEnumerable<KeyValuePair<string, NodeTypeConfig>> WorkerTypes => AvailableNodeTypes.Where(t => t.Key != HeadNodeType);
}

internal sealed class ProviderConfig
{
    /// <summary><c>type</c>: <c>local</c> (machines reached over SSH) or <c>process</c> (processes on this machine).</summary>
    public required string Type { get; set; }

    /// <summary><c>local</c>: the head's address.</summary>
    public string? HeadIp { get; set; }

    /// <summary><c>local</c>: the worker machines' addresses.</summary>
    public List<string> WorkerIps { get; set; } = [];

    /// <summary>
    /// <c>process</c>: give each node a network namespace and IP of its own (needs root). Default: when running as root.
    /// </summary>
    public bool? UseNetworkNamespaces { get; set; }

    /// <summary><c>process</c>: the private /24 the node namespaces get addresses in, as its first three parts. Default: one chosen from the cluster's name.</summary>
    public string? Subnet { get; set; }
}

internal sealed class AuthConfig
{
    /// <summary><c>ssh_user</c>: the user on every node. Default: this user.</summary>
    public string SshUser { get; set; } = Environment.UserName;

    /// <summary><c>ssh_private_key</c>: the key <c>ssh</c> presents (absolute, <c>~</c> expanded). Default: ssh's own choice.</summary>
    public string? SshPrivateKey { get; set; }
}

internal sealed class NodeTypeConfig
{
    /// <summary><c>resources</c>: what a node of this type offers (CPU, GPU, custom); empty means detected on the node.</summary>
    public Dictionary<string, double> Resources { get; set; } = new(StringComparer.Ordinal);

    /// <summary><c>min_workers</c>: nodes of this type kept running. Default 0.</summary>
    public int MinWorkers { get; set; }

    /// <summary><c>max_workers</c>: nodes of this type at most. Default: the cluster's max_workers.</summary>
    public int MaxWorkers { get; set; }

    /// <summary><c>node_config</c>: handed to the provider as it is (the process and local providers use none of it).</summary>
    public Dictionary<string, object?> NodeConfig { get; set; } = new(StringComparer.Ordinal);

    /// <summary><c>worker_setup_commands</c> of this type, instead of the cluster's; null when the type has none.</summary>
    public List<string>? WorkerSetupCommands { get; set; }
}
