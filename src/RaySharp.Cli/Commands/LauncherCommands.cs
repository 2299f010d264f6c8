using System.Diagnostics;
using RaySharp.Autoscaler;
using RaySharp.Autoscaler.Config;
using RaySharp.Autoscaler.Providers;
using RaySharp.Autoscaler.Updater;
using RaySharp.Common;
using Spectre.Console;

namespace RaySharp.Cli.Commands;

/// <summary>The settings of <c>raysharp up</c>.</summary>
internal sealed record UpSettings(string ConfigFile, string? ClusterName, bool Yes, bool NoRestart, bool RestartOnly, int SshTimeoutSeconds);

/// <summary>
/// The cluster launcher's commands (<c>up</c>, <c>down</c>, <c>exec</c>, <c>attach</c>, <c>submit</c>, <c>rsync-up</c>,
/// <c>rsync-down</c>, <c>get-head-ip</c>, <c>get-worker-ips</c>, <c>monitor</c>), on top of
/// <see cref="ClusterLauncher"/> in RaySharp.Autoscaler.
/// </summary>
internal static class LauncherCommands
{
    /// <summary>The autoscaler's log on the head, in its latest session.</summary>
    private static readonly string s_monitorLog = $"${{{SessionDirectory.RootEnvironmentVariable}:-{SessionDirectory.DefaultRoot}}}/session_latest/logs/monitor.out";

    public static ClusterConfig Load(string file, string? clusterName)
    {
        try
        {
            var config = ClusterConfigLoader.LoadFile(file);
            if (clusterName is not null)
            {
                if (clusterName.Length == 0 || clusterName.Length > 64 || !clusterName.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
                    throw new CliException($"--cluster-name '{clusterName}' may hold only letters, digits, '-', '_' and '.' (1 to 64 of them).");
                config.ClusterName = clusterName;
            }
            return config;
        }
        catch (ClusterConfigException e)
        {
            throw new CliException(e.Message);
        }
    }

    private static ClusterLauncher Launcher(ClusterConfig config, IUpdateProgress progress)
    {
        try
        {
            return new ClusterLauncher(config, progress);
        }
        catch (InvalidOperationException e)
        {
            throw new CliException(e.Message);
        }
    }

    private static void Confirm(bool yes, string question)
    {
        if (yes) return;
        if (Console.IsInputRedirected)
            throw new CliException($"{question} Confirm with -y (there is no terminal to ask on).");
        if (!AnsiConsole.Confirm(question, defaultValue: false)) throw new CliException("Cancelled.", exitCode: 1);
    }

    public static async Task<int> UpAsync(UpSettings s, CancellationToken cancellationToken)
    {
        var config = Load(s.ConfigFile, s.ClusterName);
        if (s.NoRestart && s.RestartOnly) throw new CliException("--no-restart and --restart-only contradict each other; give one of them.");
        if (s.SshTimeoutSeconds < 1) throw new CliException($"--ssh-timeout must be 1 second or more, got {s.SshTimeoutSeconds}.");
        var workers = config.WorkerTypes.Sum(t => t.Value.MinWorkers);
        var progress = new UpdateProgressDisplay();
        var launcher = Launcher(config, progress);
        var existing = await launcher.HeadAsync(cancellationToken).ConfigureAwait(false);
        Confirm(s.Yes, existing is null
            ? $"This will start cluster '{config.ClusterName}' ({config.Provider.Type} provider): a head and {workers} worker node(s). Continue?"
            : $"This will update cluster '{config.ClusterName}' (head {existing.Ip}){(s.NoRestart ? "" : " and restart RaySharp on its nodes")}. Continue?");
        var options = new UpOptions
        {
            NoRestart = s.NoRestart,
            RestartOnly = s.RestartOnly,
            Updater = new UpdaterOptions { SshTimeout = TimeSpan.FromSeconds(s.SshTimeoutSeconds) },
        };
        UpResult result;
        try
        {
            result = await progress.ShowAsync(() => launcher.UpAsync(options, cancellationToken)).ConfigureAwait(false);
        }
        catch (NodeUpdateException e)
        {
            throw new CliException($"{e.Message}\nThe node's log: {launcher.State.LogsDir}. Fix the cause and run `raysharp up` again: it picks up where it stopped.");
        }
        Console.WriteLine();
        Console.WriteLine($"Cluster '{config.ClusterName}' is up: head {result.Head.Ip} (GCS {result.HeadAddress}), {result.Workers.Count - result.Failures.Count} worker node(s) up to date.");
        Console.WriteLine($"  Status:       raysharp exec {s.ConfigFile} 'raysharp status'");
        Console.WriteLine($"  A shell:      raysharp attach {s.ConfigFile}");
        Console.WriteLine($"  Run a driver: raysharp submit {s.ConfigFile} <program folder or project> [-- args]");
        Console.WriteLine($"  From here:    RAYSHARP_CLUSTER_TOKEN=$(cat {launcher.State.TokenFile}) and Ray.Init(\"{result.HeadAddress}\")");
        Console.WriteLine($"  Node logs:    {launcher.State.LogsDir}");
        if (result.Failures.Count == 0) return 0;
        Console.Error.WriteLine();
        Console.Error.WriteLine($"Error: {result.Failures.Count} worker node(s) failed to update (the others are up):");
        foreach (var f in result.Failures) Console.Error.WriteLine("  " + f.Replace("\n", "\n    ", StringComparison.Ordinal));
        Console.Error.WriteLine($"Their logs are in {launcher.State.LogsDir}; fix the cause and run `raysharp up` again.");
        return 1;
    }

    public static async Task<int> DownAsync(string file, string? clusterName, bool yes, bool workersOnly, bool keepMinWorkers, CancellationToken cancellationToken)
    {
        var config = Load(file, clusterName);
        var progress = new UpdateProgressDisplay();
        var launcher = Launcher(config, progress);
        var nodes = await launcher.Provider.NonTerminatedNodesAsync(cancellationToken).ConfigureAwait(false);
        if (nodes.Count == 0)
        {
            Console.WriteLine($"Cluster '{config.ClusterName}' has no nodes running (according to {launcher.State.StateFile}).");
            return 0;
        }
        Confirm(yes, $"This will stop RaySharp on {(workersOnly ? "the worker nodes" : "every node")} of cluster '{config.ClusterName}' and release them. Continue?");
        var problems = await progress.ShowAsync(() => launcher.DownAsync(workersOnly, keepMinWorkers, cancellationToken)).ConfigureAwait(false);
        if (problems.Count == 0)
        {
            Console.WriteLine($"Cluster '{config.ClusterName}': {(workersOnly ? "worker nodes" : "every node")} stopped and released.");
            return 0;
        }
        Console.Error.WriteLine("Error: some nodes were released without a clean stop (stop RaySharp there by hand with `raysharp stop`):");
        foreach (var p in problems) Console.Error.WriteLine("  " + p);
        return 1;
    }

    private static async Task<(ClusterLauncher Launcher, ProviderNode Head)> HeadAsync(ClusterConfig config, bool start, CancellationToken cancellationToken)
    {
        var progress = new UpdateProgressDisplay();
        var launcher = Launcher(config, progress);
        var head = await launcher.HeadAsync(cancellationToken).ConfigureAwait(false);
        if (head is null && start)
        {
            await progress.ShowAsync(() => launcher.UpAsync(new UpOptions(), cancellationToken)).ConfigureAwait(false);
            head = await launcher.HeadAsync(cancellationToken).ConfigureAwait(false);
        }
        if (head is null)
            throw new CliException($"Cluster '{config.ClusterName}' has no head node running; start it with `raysharp up {config.SourceFile}` (or add --start).");
        return (launcher, head);
    }

    /// <summary><c>exec</c>: runs a command on the head, its output here, its exit code the command's.</summary>
    public static async Task<int> ExecAsync(string file, string? clusterName, string command, string? session, bool start, bool stop, IReadOnlyList<int> ports, CancellationToken cancellationToken)
    {
        var config = Load(file, clusterName);
        var (launcher, head) = await HeadAsync(config, start, cancellationToken).ConfigureAwait(false);
        var runner = launcher.Provider.CommandRunner(head);
        int code;
        if (session is not null)
        {
            // Detached: the command goes on after this returns; `attach --tmux`/`--screen` reaches it.
            var wrapped = session == "tmux"
                ? $"tmux new-session -d {CommandScripts.Quote(command + "; exec bash")}"
                : $"screen -dmS raysharp bash -c {CommandScripts.Quote(command + "; exec bash")}";
            var result = await runner.RunAsync(wrapped, new Dictionary<string, string>(), null, cancellationToken).ConfigureAwait(false);
            if (!result.Succeeded) throw new CliException($"starting a {session} session on the head failed (exit {result.ExitCode}): {result.Tail(5)} (is {session} installed there?)");
            Console.WriteLine($"Running in a detached {session} session on the head; `raysharp attach {file} --{session}` reaches it.");
            code = 0;
        }
        else if (ports.Count > 0)
        {
            code = await RunAttachedAsync(runner.Interactive(command, ports), cancellationToken).ConfigureAwait(false);
        }
        else
        {
            using var stdout = Console.OpenStandardOutput();
            await using var writer = new StreamWriter(stdout) { AutoFlush = true };
            var result = await runner.RunAsync(command, new Dictionary<string, string>(), writer, cancellationToken).ConfigureAwait(false);
            code = result.ExitCode;
        }
        if (stop) await DownAsync(file, clusterName, yes: true, workersOnly: false, keepMinWorkers: false, cancellationToken).ConfigureAwait(false);
        return code;
    }

    /// <summary><c>attach</c>: an SSH shell on the head (or its tmux/screen session).</summary>
    public static async Task<int> AttachAsync(string file, string? clusterName, string? session, bool start, IReadOnlyList<int> ports, CancellationToken cancellationToken)
    {
        var config = Load(file, clusterName);
        var (launcher, head) = await HeadAsync(config, start, cancellationToken).ConfigureAwait(false);
        var command = session switch
        {
            "tmux" => "tmux attach || tmux new",
            "screen" => "screen -r raysharp || screen -S raysharp",
            _ => null,
        };
        return await RunAttachedAsync(launcher.Provider.CommandRunner(head).Interactive(command, ports), cancellationToken).ConfigureAwait(false);
    }

    private static async Task<int> RunAttachedAsync(ProcessStartInfo psi, CancellationToken cancellationToken)
    {
        using var process = Process.Start(psi) ?? throw new CliException($"cannot start {psi.FileName}");
        await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
        return process.ExitCode;
    }

    /// <summary>
    /// <c>submit</c>: copies a .NET program to the head and runs it there as a driver. The program is a built folder
    /// (with its .runtimeconfig.json), a .dll, or a project (built here first), so the head needs only the runtime.
    /// </summary>
    public static async Task<int> SubmitAsync(string file, string? clusterName, string program, IReadOnlyList<string> args, bool start, bool stop, string? session, CancellationToken cancellationToken)
    {
        var config = Load(file, clusterName);
        var (folder, dll) = await ResolveProgramAsync(program, cancellationToken).ConfigureAwait(false);
        var (launcher, head) = await HeadAsync(config, start, cancellationToken).ConfigureAwait(false);
        var runner = launcher.Provider.CommandRunner(head);
        var name = Path.GetFileNameWithoutExtension(dll);
        var remote = $"~/raysharp_submit/{name}/";
        var copy = await runner.SyncUpAsync(folder.TrimEnd('/') + "/", remote, [], delete: true, null, cancellationToken).ConfigureAwait(false);
        if (!copy.Succeeded) throw new CliException($"copying {folder} to the head ({runner.Describe}) failed (rsync exit {copy.ExitCode}): {copy.Tail(5)}");
        var command = $"cd {remote} && dotnet {CommandScripts.Quote(Path.GetFileName(dll))}" + string.Concat(args.Select(a => " " + CommandScripts.Quote(a)));
        return await ExecAsync(file, clusterName, command, session, start: false, stop, [], cancellationToken).ConfigureAwait(false);
    }

    private static async Task<(string Folder, string Dll)> ResolveProgramAsync(string program, CancellationToken cancellationToken)
    {
        var full = Path.GetFullPath(program);
        if (File.Exists(full) && full.EndsWith(".dll", StringComparison.OrdinalIgnoreCase)) return (Path.GetDirectoryName(full)!, full);
        if (Directory.Exists(full))
        {
            // raysharp-node is RaySharp's own process host, which a program's output carries for its workers.
            var configs = Directory.GetFiles(full, "*.runtimeconfig.json").Where(c => Path.GetFileName(c) != "raysharp-node.runtimeconfig.json").ToArray();
            if (configs.Length == 1) return (full, configs[0][..^".runtimeconfig.json".Length] + ".dll");
            if (configs.Length > 1)
                throw new CliException($"{program} holds {configs.Length} programs ({string.Join(", ", configs.Select(c => Path.GetFileName(c)[..^".runtimeconfig.json".Length]))}); name the one to run by its .dll");
            var projects = Directory.GetFiles(full, "*.csproj");
            if (projects.Length == 1) full = projects[0];
            else throw new CliException($"{program} is neither a built .NET program (no .runtimeconfig.json) nor a project folder (no single .csproj); give the program's output folder, its .dll or its .csproj");
        }
        if (File.Exists(full) && full.EndsWith("proj", StringComparison.OrdinalIgnoreCase))
        {
            var output = Path.Combine(Path.GetTempPath(), "raysharp-submit", Path.GetFileNameWithoutExtension(full));
            Console.WriteLine($"Building {full}...");
            var psi = new ProcessStartInfo("dotnet");
            foreach (var a in new[] { "build", full, "-c", "Release", "-o", output, "-v", "quiet", "-nologo" }) psi.ArgumentList.Add(a);
            var build = await CommandScripts.RunProcessAsync(psi, null, null, cancellationToken).ConfigureAwait(false);
            if (!build.Succeeded) throw new CliException($"building {full} failed:\n{build.Tail()}");
            var dll = Path.Combine(output, Path.GetFileNameWithoutExtension(full) + ".dll");
            if (!File.Exists(dll)) throw new CliException($"building {full} made no {Path.GetFileName(dll)} in {output}; is it a program (OutputType Exe)?");
            return (output, dll);
        }
        throw new CliException($"{program} does not exist; give a built program's folder or .dll, or a project (.csproj)");
    }

    public static async Task<int> RsyncAsync(string file, string? clusterName, string source, string target, bool up, bool allNodes, CancellationToken cancellationToken)
    {
        var config = Load(file, clusterName);
        var (launcher, head) = await HeadAsync(config, start: false, cancellationToken).ConfigureAwait(false);
        var nodes = up && allNodes ? await launcher.Provider.NonTerminatedNodesAsync(cancellationToken).ConfigureAwait(false) : [head];
        foreach (var node in nodes)
        {
            var runner = launcher.Provider.CommandRunner(node);
            var result = up
                ? await runner.SyncUpAsync(source, target, config.RsyncExclude, delete: false, null, cancellationToken).ConfigureAwait(false)
                : await runner.SyncDownAsync(source, target, null, cancellationToken).ConfigureAwait(false);
            if (!result.Succeeded) throw new CliException($"rsync with {runner.Describe} failed (exit {result.ExitCode}): {result.Tail(5)}");
            Console.WriteLine(up ? $"{source} -> {runner.Describe}:{target}" : $"{runner.Describe}:{source} -> {target}");
        }
        return 0;
    }

    public static async Task<int> GetIpsAsync(string file, string? clusterName, bool head, CancellationToken cancellationToken)
    {
        var config = Load(file, clusterName);
        var launcher = Launcher(config, new UpdateProgressDisplay());
        if (head)
        {
            var node = await launcher.HeadAsync(cancellationToken).ConfigureAwait(false)
                       ?? throw new CliException($"Cluster '{config.ClusterName}' has no head node running; start it with `raysharp up {file}`.");
            Console.WriteLine(node.Ip);
            return 0;
        }
        foreach (var w in await launcher.WorkersAsync(cancellationToken).ConfigureAwait(false)) Console.WriteLine(w.Ip);
        return 0;
    }

    /// <summary><c>monitor</c>: follows the autoscaler's log on the head.</summary>
    public static Task<int> MonitorAsync(string file, string? clusterName, int lines, CancellationToken cancellationToken) =>
        ExecAsync(file, clusterName, $"tail -n {lines} -F \"{s_monitorLog}\"", null, start: false, stop: false, [], cancellationToken);
}

/// <summary>
/// One line per node with its updater state: a live table on a terminal, else a line per change (logs, tests).
/// </summary>
internal sealed class UpdateProgressDisplay : IUpdateProgress
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, (string Status, string? Detail)> _nodes = new(StringComparer.Ordinal);
    private Action? _changed;

    public void Report(string node, string status, string? detail = null)
    {
        Action? changed;
        lock (_gate)
        {
            _nodes[node] = (status, detail);
            changed = _changed;
            if (changed is null) Console.WriteLine($"  {node}: {status}{(detail is null ? "" : $" ({detail})")}");
        }
        changed?.Invoke();
    }

    public async Task<T> ShowAsync<T>(Func<Task<T>> work)
    {
        if (Console.IsOutputRedirected || !AnsiConsole.Profile.Capabilities.Interactive) return await work().ConfigureAwait(false);
        var table = new Table().AddColumn("node").AddColumn("state").AddColumn("detail");
        return await AnsiConsole.Live(table).StartAsync(async context =>
        {
            lock (_gate)
            {
                _changed = () =>
                {
                    lock (_gate)
                    {
                        table.Rows.Clear();
                        foreach (var (node, (status, detail)) in _nodes.OrderBy(n => n.Key, StringComparer.Ordinal))
                            table.AddRow(Markup.Escape(node), Colour(status), Markup.Escape(detail ?? ""));
                    }
                    context.Refresh();
                };
            }
            try
            {
                return await work().ConfigureAwait(false);
            }
            finally
            {
                lock (_gate) _changed = null;
            }
        }).ConfigureAwait(false);
    }

    private static string Colour(string status) => status switch
    {
        NodeStatus.UpToDate or "terminated" => $"[green]{status}[/]",
        NodeStatus.UpdateFailed => $"[red]{status}[/]",
        _ => $"[yellow]{status}[/]",
    };
}
