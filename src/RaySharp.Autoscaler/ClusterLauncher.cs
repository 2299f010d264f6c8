using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using RaySharp.Autoscaler.Config;
using RaySharp.Autoscaler.Providers;
using RaySharp.Autoscaler.Updater;
using RaySharp.Common;

namespace RaySharp.Autoscaler;

/// <summary>What <c>raysharp up</c> was asked to do besides bringing the cluster to its config.</summary>
internal sealed record UpOptions
{
    /// <summary>Leave nodes whose setup is current running as they are (<c>--no-restart</c>).</summary>
    public bool NoRestart { get; init; }

    /// <summary>Skip setup on every node and only run the start commands (<c>--restart-only</c>).</summary>
    public bool RestartOnly { get; init; }

    public UpdaterOptions Updater { get; init; } = new();
}

/// <summary>The outcome of <c>raysharp up</c>: the head, and each node that failed with why.</summary>
internal sealed record UpResult(ProviderNode Head, string HeadAddress, IReadOnlyList<ProviderNode> Workers, IReadOnlyList<string> Failures);

/// <summary>
/// <c>raysharp up</c> and <c>down</c>: brings a cluster to what its YAML says through a node provider and the node
/// updater, head first (the workers need its address), then the workers in parallel. Setup is skipped on a node
/// whose runtime hash (file mounts, setup commands, the RaySharp build) has not changed since its last update.
/// </summary>
internal sealed class ClusterLauncher
{
    /// <summary>Where the head keeps what the autoscaler on it needs: the resolved config, the SSH key and the launcher's state.</summary>
    public const string BootstrapConfig = "~/raysharp_bootstrap_config.yaml";
    public const string BootstrapKey = "~/raysharp_bootstrap_key.pem";
    public const string BootstrapState = "~/raysharp_bootstrap_state.json";

    /// <summary>
    /// How long a worker's <c>raysharp start --address</c> waits for the head to answer, in seconds (its default is 8,
    /// for a person who mistyped the address). The launcher gives its workers <see cref="WorkerJoinTimeoutSeconds"/>: it
    /// knows the head runs, and many nodes starting at once on a loaded machine take longer than 8 s to make one call.
    /// </summary>
    public const string JoinTimeoutVariable = "RAYSHARP_JOIN_TIMEOUT_S";

    /// <summary>The join timeout the launcher's workers get (<see cref="JoinTimeoutVariable"/>).</summary>
    public const int WorkerJoinTimeoutSeconds = 120;

    /// <summary>The cluster YAML the head's autoscaler runs with (<c>raysharp start --head --autoscaling-config</c> stands in).</summary>
    public const string AutoscalingConfigVariable = "RAYSHARP_AUTOSCALING_CONFIG";

    /// <summary>Where the launcher keeps the cluster's state, when the head shares this machine's files (the process provider).</summary>
    public const string LauncherTempDirVariable = "RAYSHARP_LAUNCHER_TEMP_DIR";

    /// <summary>Lets <c>raysharp start</c> take the node type's resources instead of detecting them (Ray's RAY_OVERRIDE_RESOURCES).</summary>
    public const string OverrideResourcesVariable = "RAYSHARP_OVERRIDE_RESOURCES";

    private readonly ClusterConfig _config;
    private readonly IUpdateProgress _progress;

    /// <param name="stateFile">The node records' file, when not the state folder's own (see <see cref="ClusterState"/>).</param>
    public ClusterLauncher(ClusterConfig config, IUpdateProgress progress, string? tempDir = null, string? stateFile = null)
    {
        _config = config;
        _progress = progress;
        State = new ClusterState(config.ClusterName, tempDir, stateFile);
        Provider = config.Provider.Type switch
        {
            "local" => new LocalNodeProvider(config, State),
            "process" => new ProcessNodeProvider(config, State),
            _ => throw new InvalidOperationException($"no provider '{config.Provider.Type}'"),
        };
    }

    public ClusterState State { get; }
    public INodeProvider Provider { get; }

    private bool ShipsRaySharp => _config.Provider.Type != "process";

    public async Task<ProviderNode?> HeadAsync(CancellationToken cancellationToken) =>
        (await Provider.NonTerminatedNodesAsync(cancellationToken).ConfigureAwait(false)).FirstOrDefault(n => n.IsHead);

    public async Task<IReadOnlyList<ProviderNode>> WorkersAsync(CancellationToken cancellationToken) =>
        (await Provider.NonTerminatedNodesAsync(cancellationToken).ConfigureAwait(false)).Where(n => !n.IsHead).ToList();

    public async Task<UpResult> UpAsync(UpOptions options, CancellationToken cancellationToken)
    {
        State.EnsureDir();
        Directory.CreateDirectory(State.LogsDir);
        var token = State.Token();
        var head = await HeadAsync(cancellationToken).ConfigureAwait(false);
        if (head is not null) await AdoptHeadStateAsync(head, cancellationToken).ConfigureAwait(false);
        head ??= (await Provider.CreateNodesAsync(_config.HeadType, NewTags(NodeTags.KindHead, _config.HeadNodeType), 1, cancellationToken).ConfigureAwait(false)).SingleOrDefault()
                 ?? throw new InvalidOperationException("the provider made no head node");
        var bootstrap = WriteBootstrapConfig();
        var environment = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [ClusterToken.EnvironmentVariable] = token,
            ["RAYSHARP_HEAD_IP"] = head.Ip,
            // `raysharp start --head` starts the autoscaler with this config (Ray's configs pass --autoscaling-config).
            [AutoscalingConfigVariable] = KeepsStateOnHead ? BootstrapConfig : bootstrap,
        };
        // A process head shares this machine's files, so its autoscaler works on the launcher's own state.
        if (!KeepsStateOnHead) environment[LauncherTempDirVariable] = Path.GetDirectoryName(Path.GetDirectoryName(State.Dir))!;

        // Workers: those of the cluster already, and each type's min_workers, within max_workers over all types. They
        // are made before the head (re)starts, so that the autoscaler starting with it counts them as pending instead
        // of launching min_workers of its own while this `up` sets these up.
        var workers = (await WorkersAsync(cancellationToken).ConfigureAwait(false)).ToList();
        foreach (var (typeName, type) in _config.WorkerTypes)
        {
            var have = workers.Count(w => w.Tag(NodeTags.NodeType) == typeName);
            var want = Math.Min(type.MinWorkers - have, _config.MaxWorkers - workers.Count);
            if (want <= 0) continue;
            var made = await Provider.CreateNodesAsync(type, NewTags(NodeTags.KindWorker, typeName), want, cancellationToken).ConfigureAwait(false);
            if (made.Count < want)
                _progress.Report("cluster", NodeStatus.UpdateFailed, $"the provider had {made.Count} of the {want} {typeName} nodes asked for");
            workers.AddRange(made);
        }

        List<(string, string)> headFiles = [(bootstrap, BootstrapConfig)];
        if (_config.Auth.SshPrivateKey is { } key) headFiles.Add((key, BootstrapKey));
        if (KeepsStateOnHead) headFiles.Add((State.StateFile, BootstrapState));
        var headOptions = new UpdaterOptions
        {
            SshTimeout = options.Updater.SshTimeout,
            SshRetryInterval = options.Updater.SshRetryInterval,
            ShipRaySharp = ShipsRaySharp,
            HeadFiles = headFiles,
        };
        var headMode = Mode(head, options, restartForced: false);
        var headRestarted = headMode != UpdateMode.Nothing;
        await UpdateAsync(head, headMode, WithResources(environment, _config.HeadType), headOptions, cancellationToken).ConfigureAwait(false);
        var headAddress = await HeadAddressAsync(head, cancellationToken).ConfigureAwait(false);
        environment["RAYSHARP_HEAD_ADDRESS"] = headAddress;
        environment[JoinTimeoutVariable] = WorkerJoinTimeoutSeconds.ToString(CultureInfo.InvariantCulture);
        environment.Remove(AutoscalingConfigVariable);
        environment.Remove(LauncherTempDirVariable);

        var syncedFromHead = await FetchSyncedFilesAsync(head, cancellationToken).ConfigureAwait(false);
        var workerOptions = new UpdaterOptions
        {
            SshTimeout = options.Updater.SshTimeout,
            SshRetryInterval = options.Updater.SshRetryInterval,
            ShipRaySharp = ShipsRaySharp,
            SyncedFromHead = syncedFromHead,
        };
        var failures = new List<string>();
        await Task.WhenAll(workers.Select(async w =>
        {
            var type = _config.AvailableNodeTypes.GetValueOrDefault(w.Tag(NodeTags.NodeType) ?? "") ?? new NodeTypeConfig();
            try
            {
                // A restarted head has a new GCS: raylets of the old one must join the new one.
                await UpdateAsync(w, Mode(w, options, restartForced: headRestarted), WithResources(environment, type), workerOptions, cancellationToken).ConfigureAwait(false);
            }
            catch (NodeUpdateException e)
            {
                lock (failures) failures.Add(e.Message);
            }
        })).ConfigureAwait(false);

        // The autoscaler on the head works on this copy from now on: the workers' tags as this `up` left them.
        if (KeepsStateOnHead)
            await Provider.CommandRunner(head).SyncUpAsync(State.StateFile, BootstrapState, [], delete: false, null, cancellationToken).ConfigureAwait(false);
        return new UpResult(head, headAddress, workers, failures);
    }

    /// <summary>
    /// A head that is a machine of its own (the local provider) keeps the node records its autoscaler works on in
    /// <see cref="BootstrapState"/>; a process head shares this machine's state file.
    /// </summary>
    private bool KeepsStateOnHead => _config.Provider.Type != "process";

    /// <summary>
    /// Reads back the workers the head's autoscaler launched and terminated since the last <c>up</c>, into this
    /// machine's state. A head that cannot be reached, or holds no copy, leaves the state as it is.
    /// </summary>
    private async Task AdoptHeadStateAsync(ProviderNode head, CancellationToken cancellationToken)
    {
        if (!KeepsStateOnHead) return;
        var fetched = Path.Combine(State.Dir, "head_state.json");
        File.Delete(fetched);
        var result = await Provider.CommandRunner(head).SyncDownAsync(BootstrapState, fetched, null, cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded || !File.Exists(fetched)) return;
        var records = ClusterState.Parse(File.ReadAllText(fetched));
        File.Delete(fetched);
        if (records.Count > 0) State.AdoptWorkers(records);
    }

    private static Dictionary<string, string> NewTags(string kind, string type) => new(StringComparer.Ordinal)
    {
        [NodeTags.Kind] = kind,
        [NodeTags.NodeType] = type,
        [NodeTags.Status] = NodeStatus.Uninitialized,
    };

    private UpdateMode Mode(ProviderNode node, UpOptions options, bool restartForced)
    {
        if (options.RestartOnly) return UpdateMode.RestartOnly;
        var current = node.Tag(NodeTags.Status) == NodeStatus.UpToDate && node.Tag(NodeTags.RuntimeConfig) == RuntimeHash(node);
        if (!current) return UpdateMode.Full;
        return options.NoRestart && !restartForced ? UpdateMode.Nothing : UpdateMode.RestartOnly;
    }

    private static IReadOnlyDictionary<string, string> WithResources(Dictionary<string, string> environment, NodeTypeConfig type)
    {
        var env = new Dictionary<string, string>(environment, StringComparer.Ordinal);
        if (type.Resources.Count > 0) env[OverrideResourcesVariable] = JsonSerializer.Serialize(type.Resources);
        return env;
    }

    private async Task UpdateAsync(ProviderNode node, UpdateMode mode, IReadOnlyDictionary<string, string> environment, UpdaterOptions options, CancellationToken cancellationToken)
    {
        var name = node.Tag(NodeTags.Name) ?? node.Id;
        await using var log = new StreamWriter(State.LogFile(name), append: true) { AutoFlush = true };
        await log.WriteLineAsync($"==== raysharp up, {DateTime.Now:yyyy-MM-dd HH:mm:ss}: {node.Ip}, mode {mode}").ConfigureAwait(false);
        await Provider.SetTagsAsync(node.Id, new Dictionary<string, string> { [NodeTags.Status] = NodeStatus.WaitingForSsh }, cancellationToken).ConfigureAwait(false);
        var updater = new NodeUpdater(_config, node, Provider.CommandRunner(node), environment, _progress, TextWriter.Synchronized(log), options);
        try
        {
            await updater.RunAsync(mode, cancellationToken).ConfigureAwait(false);
        }
        catch (NodeUpdateException)
        {
            await Provider.SetTagsAsync(node.Id, new Dictionary<string, string> { [NodeTags.Status] = NodeStatus.UpdateFailed }, cancellationToken).ConfigureAwait(false);
            throw;
        }
        await Provider.SetTagsAsync(node.Id, new Dictionary<string, string>
        {
            [NodeTags.Status] = NodeStatus.UpToDate,
            [NodeTags.RuntimeConfig] = RuntimeHash(node),
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The GCS address the head's start commands left (its first session line), else the head's IP and Ray's default port.</summary>
    private async Task<string> HeadAddressAsync(ProviderNode head, CancellationToken cancellationToken)
    {
        var result = await Provider.CommandRunner(head).RunAsync(
            $"head -n 1 \"${{{SessionDirectory.RootEnvironmentVariable}:-{SessionDirectory.DefaultRoot}}}/{SessionDirectory.CurrentClusterFileName}\" 2>/dev/null || true",
            new Dictionary<string, string>(), null, cancellationToken).ConfigureAwait(false);
        var line = result.Output.Trim();
        return NodeAddress.TryParse(line, out _, out _, out _) && line.Length > 0 ? line : NodeAddress.Format(head.Ip, 6379);
    }

    /// <summary>cluster_synced_files: fetched from the head into the cluster's folder here, to go to every worker.</summary>
    private async Task<IReadOnlyList<(string Local, string Remote)>> FetchSyncedFilesAsync(ProviderNode head, CancellationToken cancellationToken)
    {
        var list = new List<(string, string)>();
        var runner = Provider.CommandRunner(head);
        for (var i = 0; i < _config.ClusterSyncedFiles.Count; i++)
        {
            var remote = _config.ClusterSyncedFiles[i];
            var local = Path.Combine(State.Dir, "synced", i.ToString(CultureInfo.InvariantCulture), Path.GetFileName(remote.TrimEnd('/')));
            var result = await runner.SyncDownAsync(remote.TrimEnd('/'), local, null, cancellationToken).ConfigureAwait(false);
            if (!result.Succeeded)
                throw new NodeUpdateException($"cluster_synced_files '{remote}' could not be copied from the head: {result.Tail(5)}");
            var parent = remote.TrimEnd('/');
            var slash = parent.LastIndexOf('/');
            list.Add((local, slash > 0 ? parent[..(slash + 1)] : "~/"));
        }
        return list;
    }

    /// <summary>The resolved config as JSON (which is YAML): every default filled in, the key at its place on the head.</summary>
    private string WriteBootstrapConfig()
    {
        var c = _config;
        var provider = new Dictionary<string, object?> { ["type"] = c.Provider.Type };
        if (c.Provider.HeadIp is not null) provider["head_ip"] = c.Provider.HeadIp;
        if (c.Provider.Type == "local") provider["worker_ips"] = c.Provider.WorkerIps;
        if (c.Provider.UseNetworkNamespaces is { } ns) provider["use_network_namespaces"] = ns;
        if (c.Provider.Subnet is not null) provider["subnet"] = c.Provider.Subnet;
        var auth = new Dictionary<string, object?> { ["ssh_user"] = c.Auth.SshUser };
        if (c.Auth.SshPrivateKey is not null) auth["ssh_private_key"] = BootstrapKey;
        var document = new Dictionary<string, object?>
        {
            ["cluster_name"] = c.ClusterName,
            ["max_workers"] = c.MaxWorkers,
            ["upscaling_speed"] = c.UpscalingSpeed,
            ["idle_timeout_minutes"] = c.IdleTimeoutMinutes,
            ["provider"] = provider,
            ["auth"] = auth,
            ["available_node_types"] = c.AvailableNodeTypes.ToDictionary(t => t.Key, t =>
            {
                var type = new Dictionary<string, object?>
                {
                    ["resources"] = t.Value.Resources,
                    ["min_workers"] = t.Value.MinWorkers,
                    ["max_workers"] = t.Value.MaxWorkers,
                    ["node_config"] = t.Value.NodeConfig,
                };
                if (t.Value.WorkerSetupCommands is { } own) type["worker_setup_commands"] = own;
                return (object?)type;
            }),
            ["head_node_type"] = c.HeadNodeType,
            // For the workers the autoscaler launches: a process head reads the mounts where `up` does (this machine's
            // files), a head of its own from where `up` put them on it.
            ["file_mounts"] = c.Provider.Type == "process"
                ? c.FileMounts.ToDictionary(m => m.Key, m => Path.GetFullPath(ClusterConfigLoader.ExpandHome(m.Value), Path.GetDirectoryName(c.SourceFile)!), StringComparer.Ordinal)
                : c.FileMounts.ToDictionary(m => m.Key, m => m.Key, StringComparer.Ordinal),
            ["cluster_synced_files"] = c.ClusterSyncedFiles,
            ["rsync_exclude"] = c.RsyncExclude,
            ["initialization_commands"] = c.InitializationCommands,
            ["setup_commands"] = c.SetupCommands,
            ["head_setup_commands"] = c.HeadSetupCommands,
            ["worker_setup_commands"] = c.WorkerSetupCommands,
            ["head_start_ray_commands"] = c.HeadStartRayCommands,
            ["worker_start_ray_commands"] = c.WorkerStartRayCommands,
        };
        var file = Path.Combine(State.Dir, "bootstrap_config.yaml");
        File.WriteAllText(file, JsonSerializer.Serialize(document, new JsonSerializerOptions { WriteIndented = true, DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull }));
        return file;
    }

    /// <summary>
    /// What a node's setup depends on, hashed: its kind and type, the initialization and setup commands it runs, the
    /// file mounts (paths, sizes and times of every file) and the RaySharp build it gets.
    /// </summary>
    internal string RuntimeHash(ProviderNode node)
    {
        var text = new StringBuilder();
        var typeName = node.Tag(NodeTags.NodeType) ?? "";
        text.Append(node.IsHead ? "head\n" : "worker\n").Append(typeName).Append('\n');
        foreach (var c in _config.InitializationCommands.Concat(_config.SetupCommands)) text.Append("cmd ").Append(c).Append('\n');
        var own = node.IsHead ? _config.HeadSetupCommands
            : _config.AvailableNodeTypes.GetValueOrDefault(typeName)?.WorkerSetupCommands ?? _config.WorkerSetupCommands;
        foreach (var c in own) text.Append("own ").Append(c).Append('\n');
        foreach (var (remote, local) in _config.FileMounts.OrderBy(m => m.Key, StringComparer.Ordinal))
        {
            text.Append("mount ").Append(remote).Append(" <- ").Append(local).Append('\n');
            Fingerprint(Path.GetFullPath(ClusterConfigLoader.ExpandHome(local), Path.GetDirectoryName(_config.SourceFile)!), text);
        }
        if (!node.IsHead) foreach (var f in _config.ClusterSyncedFiles) text.Append("synced ").Append(f).Append('\n');
        Fingerprint(AppContext.BaseDirectory, text);
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())))[..16];
    }

    private static void Fingerprint(string path, StringBuilder text)
    {
        IEnumerable<string> files = File.Exists(path) ? [path]
            : Directory.Exists(path) ? Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal)
            : [];
        foreach (var f in files)
        {
            var info = new FileInfo(f);
            text.Append(f).Append(' ').Append(info.Length).Append(' ').Append(info.LastWriteTimeUtc.Ticks).Append('\n');
        }
    }

    /// <summary>
    /// <c>raysharp down</c>: stops RaySharp on the workers (all at once), then on the head, and gives the nodes back to
    /// the provider. A node that cannot be reached is given back all the same, and named in the result.
    /// </summary>
    public async Task<IReadOnlyList<string>> DownAsync(bool workersOnly, bool keepMinWorkers, CancellationToken cancellationToken)
    {
        var head = await HeadAsync(cancellationToken).ConfigureAwait(false);
        // The head first stops what runs there, its autoscaler included: one still running would launch nodes again
        // (min_workers) while the workers go. The workers are listed after, with any it launched (on a local head,
        // read back from its copy of the state).
        if (head is not null)
        {
            if (!workersOnly)
                await Provider.CommandRunner(head).RunAsync("raysharp stop", new Dictionary<string, string>(), null, cancellationToken).ConfigureAwait(false);
            await AdoptHeadStateAsync(head, cancellationToken).ConfigureAwait(false);
        }
        var workers = (await WorkersAsync(cancellationToken).ConfigureAwait(false)).ToList();
        if (keepMinWorkers)
        {
            var kept = _config.WorkerTypes.SelectMany(t => workers.Where(w => w.Tag(NodeTags.NodeType) == t.Key).Take(t.Value.MinWorkers)).ToHashSet();
            workers.RemoveAll(kept.Contains);
        }
        var problems = new List<string>();
        await Task.WhenAll(workers.Select(w => StopAndTerminateAsync(w, problems, cancellationToken))).ConfigureAwait(false);
        if (head is null) return problems;
        if (!workersOnly) await StopAndTerminateAsync(head, problems, cancellationToken).ConfigureAwait(false);
        // The head stays: its autoscaler must see the workers gone (and brings min_workers back, as after any loss).
        else if (KeepsStateOnHead)
            await Provider.CommandRunner(head).SyncUpAsync(State.StateFile, BootstrapState, [], delete: false, null, cancellationToken).ConfigureAwait(false);
        return problems;
    }

    /// <summary>
    /// Sets up a worker the autoscaler launched as <c>up</c> sets up its own: the updater's full run, with the type's
    /// resources, joining the head at <paramref name="headAddress"/>.
    /// </summary>
    public Task SetUpWorkerAsync(ProviderNode node, string headAddress, string token, CancellationToken cancellationToken)
    {
        State.EnsureDir();
        Directory.CreateDirectory(State.LogsDir);
        NodeAddress.TryParse(headAddress, out var headIp, out _, out _);
        var environment = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [ClusterToken.EnvironmentVariable] = token,
            ["RAYSHARP_HEAD_IP"] = headIp,
            ["RAYSHARP_HEAD_ADDRESS"] = headAddress,
            [JoinTimeoutVariable] = WorkerJoinTimeoutSeconds.ToString(CultureInfo.InvariantCulture),
        };
        var type = _config.AvailableNodeTypes.GetValueOrDefault(node.Tag(NodeTags.NodeType) ?? "") ?? new NodeTypeConfig();
        return UpdateAsync(node, UpdateMode.Full, WithResources(environment, type), new UpdaterOptions { ShipRaySharp = ShipsRaySharp }, cancellationToken);
    }

    /// <summary>Stops what runs on a node (<c>raysharp stop</c>), then gives it back, as <c>down</c> does; what went wrong, if anything.</summary>
    public async Task<IReadOnlyList<string>> StopAndTerminateAsync(ProviderNode node, CancellationToken cancellationToken)
    {
        var problems = new List<string>();
        await StopAndTerminateAsync(node, problems, cancellationToken).ConfigureAwait(false);
        return problems;
    }

    private async Task StopAndTerminateAsync(ProviderNode node, List<string> problems, CancellationToken cancellationToken)
    {
        var name = node.Tag(NodeTags.Name) ?? node.Id;
        _progress.Report(name, "stopping");
        State.EnsureDir();
        Directory.CreateDirectory(State.LogsDir);
        await using (var log = new StreamWriter(State.LogFile(name), append: true) { AutoFlush = true })
        {
            await log.WriteLineAsync($"==== raysharp down, {DateTime.Now:yyyy-MM-dd HH:mm:ss}").ConfigureAwait(false);
            var result = await Provider.CommandRunner(node).RunAsync("raysharp stop", new Dictionary<string, string>(), log, cancellationToken).ConfigureAwait(false);
            if (!result.Succeeded)
                lock (problems) problems.Add($"node {name}: `raysharp stop` failed with exit code {result.ExitCode}: {result.Tail(3)}");
        }
        await Provider.TerminateNodeAsync(node.Id, cancellationToken).ConfigureAwait(false);
        _progress.Report(name, "terminated");
    }
}
