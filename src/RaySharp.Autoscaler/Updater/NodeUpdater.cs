using RaySharp.Autoscaler.Config;
using RaySharp.Autoscaler.Providers;

namespace RaySharp.Autoscaler.Updater;

/// <summary>Hears of each node's updater state as it changes (the CLI draws one line per node from it).</summary>
internal interface IUpdateProgress
{
    void Report(string node, string status, string? detail = null);
}

/// <summary>A node's update failed: the message names the node, the step and the command's output.</summary>
internal sealed class NodeUpdateException(string message) : Exception(message);

/// <summary>What an update of one node does.</summary>
internal enum UpdateMode
{
    /// <summary>Files, initialization, setup and start commands.</summary>
    Full,
    /// <summary>Setup is current: only the start commands (the node is restarted).</summary>
    RestartOnly,
    /// <summary>Setup is current and the node is left running as it is.</summary>
    Nothing,
}

/// <summary>
/// Brings one node up to date, as Ray's NodeUpdater: wait until it answers (bounded), copy RaySharp and the file mounts
/// to it, run the initialization and setup commands, then the start commands, with the head's address and the cluster
/// token in their environment. Each step's commands and output go to the node's log; a failing command stops the
/// node's update with the command and its output's last lines.
/// </summary>
internal sealed class NodeUpdater(
    ClusterConfig config,
    ProviderNode node,
    ICommandRunner runner,
    IReadOnlyDictionary<string, string> environment,
    IUpdateProgress progress,
    TextWriter log,
    UpdaterOptions options)
{
    private string Name => node.Tag(NodeTags.Name) ?? node.Id;

    public async Task RunAsync(UpdateMode mode, CancellationToken cancellationToken)
    {
        if (mode == UpdateMode.Nothing)
        {
            progress.Report(Name, NodeStatus.UpToDate, "unchanged, left running");
            return;
        }
        progress.Report(Name, NodeStatus.WaitingForSsh);
        await WaitUntilReachableAsync(cancellationToken).ConfigureAwait(false);
        if (mode == UpdateMode.Full)
        {
            progress.Report(Name, NodeStatus.SyncingFiles);
            await SyncFilesAsync(cancellationToken).ConfigureAwait(false);
            progress.Report(Name, NodeStatus.SettingUp);
            foreach (var command in config.InitializationCommands) await RunStepAsync("initialization_commands", command, cancellationToken).ConfigureAwait(false);
            foreach (var command in SetupCommands()) await RunStepAsync(node.IsHead ? "head setup" : "worker setup", command, cancellationToken).ConfigureAwait(false);
        }
        else
        {
            progress.Report(Name, NodeStatus.SettingUp, "setup unchanged, restarting");
            Log("setup is current (nothing it depends on changed): skipped; running the start commands only");
            // The head's autoscaler starts with these: its config and node records as of this `up`, setup or not.
            if (node.IsHead)
                foreach (var (local, remote) in options.HeadFiles) await SyncAsync(local, remote, [], delete: false, cancellationToken).ConfigureAwait(false);
        }
        var start = node.IsHead ? config.HeadStartRayCommands : config.WorkerStartRayCommands;
        foreach (var command in start) await RunStepAsync(node.IsHead ? "head_start_ray_commands" : "worker_start_ray_commands", command, cancellationToken).ConfigureAwait(false);
        progress.Report(Name, NodeStatus.UpToDate);
    }

    /// <summary>The setup commands a node of this kind and type runs: the shared ones, then its kind's or its type's own.</summary>
    private IEnumerable<string> SetupCommands()
    {
        if (node.IsHead) return config.SetupCommands.Concat(config.HeadSetupCommands);
        var type = node.Tag(NodeTags.NodeType) is { } t && config.AvailableNodeTypes.TryGetValue(t, out var nodeType) ? nodeType : null;
        return config.SetupCommands.Concat(type?.WorkerSetupCommands ?? config.WorkerSetupCommands);
    }

    private async Task WaitUntilReachableAsync(CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + options.SshTimeout;
        CommandResult last;
        var attempts = 0;
        while (true)
        {
            attempts++;
            last = await runner.RunAsync("uptime", environment, null, cancellationToken).ConfigureAwait(false);
            if (last.Succeeded)
            {
                Log($"reachable as {runner.Describe} after {attempts} attempt(s)");
                return;
            }
            if (DateTime.UtcNow + options.SshRetryInterval >= deadline) break;
            await Task.Delay(options.SshRetryInterval, cancellationToken).ConfigureAwait(false);
        }
        Log(last.Output);
        throw Fail(NodeStatus.WaitingForSsh,
            $"{runner.Describe} did not answer over SSH within {options.SshTimeout.TotalSeconds:0} s ({attempts} attempts; last: {OneLine(last.Tail(3))}). " +
            $"Check that the machine is up and reachable from here, that sshd listens on its port 22, and that user {config.Auth.SshUser} accepts " +
            (config.Auth.SshPrivateKey is { } key ? $"the key {key} (its .pub in ~/.ssh/authorized_keys there)" : "your SSH key (no auth.ssh_private_key is set)"));
    }

    private async Task SyncFilesAsync(CancellationToken cancellationToken)
    {
        if (options.ShipRaySharp)
        {
            // The nodes run the very build of RaySharp that runs `up`: rsync sends only what changed.
            await SyncAsync(AppContext.BaseDirectory.TrimEnd('/') + "/", "~/" + CommandScripts.RemoteInstallDir + "/", [], delete: true, cancellationToken).ConfigureAwait(false);
            await RunStepAsync("install", $"mkdir -p ~/{CommandScripts.RemoteBinDir} && cat > ~/{CommandScripts.RemoteBinDir}/raysharp <<'RAYSHARP_WRAPPER'\n" +
                CommandScripts.Wrapper("$HOME/" + CommandScripts.RemoteInstallDir) + "RAYSHARP_WRAPPER\nchmod 755 ~/" + CommandScripts.RemoteBinDir + "/raysharp", cancellationToken).ConfigureAwait(false);
        }
        foreach (var (remote, local) in config.FileMounts)
        {
            var source = Path.GetFullPath(ClusterConfigLoader.ExpandHome(local), Path.GetDirectoryName(config.SourceFile)!);
            if (!File.Exists(source) && !Directory.Exists(source))
                throw Fail(NodeStatus.SyncingFiles, $"file_mounts '{remote}': the local path {source} does not exist");
            await SyncAsync(Directory.Exists(source) ? source.TrimEnd('/') + "/" : source, remote, config.RsyncExclude, delete: false, cancellationToken).ConfigureAwait(false);
        }
        if (node.IsHead)
        {
            foreach (var (local, remote) in options.HeadFiles) await SyncAsync(local, remote, [], delete: false, cancellationToken).ConfigureAwait(false);
        }
        else
        {
            foreach (var (local, remote) in options.SyncedFromHead) await SyncAsync(local, remote, [], delete: false, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task SyncAsync(string local, string remote, IReadOnlyList<string> exclude, bool delete, CancellationToken cancellationToken)
    {
        Log($"$ rsync {local} -> {remote}");
        var result = await runner.SyncUpAsync(local, remote, exclude, delete, log, cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
            throw Fail(NodeStatus.SyncingFiles, $"copying {local} to {remote} on {runner.Describe} failed (rsync exit {result.ExitCode}):\n{result.Tail()}");
    }

    private async Task RunStepAsync(string step, string command, CancellationToken cancellationToken)
    {
        Log($"$ {command}");
        var result = await runner.RunAsync(command, environment, log, cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
            throw Fail(NodeStatus.UpdateFailed, $"{step} command `{command}` failed on {runner.Describe} with exit code {result.ExitCode}:\n{result.Tail()}");
    }

    private NodeUpdateException Fail(string step, string message)
    {
        Log("update failed: " + message);
        progress.Report(Name, NodeStatus.UpdateFailed, step == NodeStatus.UpdateFailed ? null : $"at {step}");
        return new NodeUpdateException($"node {Name}: {message}");
    }

    private void Log(string line)
    {
        lock (log) log.WriteLine($"[{DateTime.Now:HH:mm:ss}] {line}");
    }

    private static string OneLine(string text) => string.Join(" | ", text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
}

/// <summary>How the node updater behaves.</summary>
internal sealed class UpdaterOptions
{
    /// <summary>How long a node may take to answer over SSH before its update fails. Default 120 s.</summary>
    public TimeSpan SshTimeout { get; init; } = TimeSpan.FromSeconds(120);

    /// <summary>Pause between SSH attempts. Default 2 s.</summary>
    public TimeSpan SshRetryInterval { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>Copy this RaySharp build to the node and put <c>raysharp</c> on its commands' PATH. Default true (process nodes run it in place).</summary>
    public bool ShipRaySharp { get; init; } = true;

    /// <summary>Files the head receives (local path → remote path): the resolved config, the SSH key, the launcher's state.</summary>
    public IReadOnlyList<(string Local, string Remote)> HeadFiles { get; init; } = [];

    /// <summary>cluster_synced_files fetched from the head (local copy → path on the worker).</summary>
    public IReadOnlyList<(string Local, string Remote)> SyncedFromHead { get; init; } = [];
}
