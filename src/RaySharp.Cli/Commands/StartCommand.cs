using System.Diagnostics;
using System.Globalization;
using System.Net;
using RaySharp.Common;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;
using Spectre.Console;

namespace RaySharp.Cli.Commands;

/// <summary>
/// <c>raysharp start</c>: on the head, the GCS server and a raylet; on any other node, a raylet that joins the head.
/// Processes run in the background unless --block, and are recorded in the session directory for <c>raysharp stop</c>.
/// </summary>
internal static partial class StartCommand
{
    /// <summary>How long a new process may take to report it listens: 30 s, or the join timeout when that is longer.</summary>
    private static TimeSpan ReadyTimeout => JoinBudget > TimeSpan.FromSeconds(30) ? JoinBudget : TimeSpan.FromSeconds(30);

    /// <summary>
    /// How long joining waits for the head to answer (the whole command must fail within 10 s), unless
    /// <c>RAYSHARP_JOIN_TIMEOUT_S</c> says otherwise: the launcher gives its workers longer, as many nodes starting at
    /// once on a loaded machine can take more than 8 s to make their first call (and more than 30 s to start a raylet,
    /// so a longer join timeout is also the node's processes' time to become ready).
    /// </summary>
    private static TimeSpan JoinBudget =>
        double.TryParse(Environment.GetEnvironmentVariable(RaySharp.Autoscaler.ClusterLauncher.JoinTimeoutVariable), System.Globalization.NumberStyles.Float,
            CultureInfo.InvariantCulture, out var seconds) && seconds > 0 && double.IsFinite(seconds)
            ? TimeSpan.FromSeconds(seconds)
            : TimeSpan.FromSeconds(8);

    public static async Task<int> RunAsync(StartSettings s, CancellationToken cancellationToken)
    {
        s = WithResourceOverride(s);
        Validate(s, out var customResources);
        var root = SessionDirectory.ResolveRoot(s.TempDir);
        Directory.CreateDirectory(root);

        string gcsAddress;
        string nodeIp;
        int? gcsPort = null;
        if (s.Head && s.RedisAddress is not null && HeadWithDeadGcs(root, s.RedisAddress) is { } orphaned)
            return await RestartGcsAsync(orphaned, s, cancellationToken).ConfigureAwait(false);
        var tls = Tls(s);
        // The token every process of this node presents and requires; null only in a cluster without authentication.
        string? token;
        if (s.Head)
        {
            token = s.Auth == "none" ? null : GivenToken(s) ?? ClusterToken.Generate();
            nodeIp = s.NodeIpAddress ?? NodeAddress.DetectNodeIp();
            gcsPort = ChooseGcsPort(s.Port, root);
            gcsAddress = NodeAddress.Format(nodeIp, gcsPort.Value);
        }
        else
        {
            gcsAddress = await ResolveHeadAsync(s.Address!).ConfigureAwait(false);
            token = await JoinTokenAsync(gcsAddress, GivenToken(s), tls, cancellationToken).ConfigureAwait(false);
            NodeAddress.TryParse(gcsAddress, out var headHost, out _, out _);
            nodeIp = s.NodeIpAddress ?? NodeAddress.DetectNodeIp(headHost);
        }
        using var channels = new RpcChannelPool(new RpcSecurityOptions { ClusterToken = token, Tls = tls }, connectTimeout: TimeSpan.FromSeconds(3));
        var environment = ChildEnvironment(token, tls);

        var session = SessionDirectory.Create(root, TimeProvider.System);
        if (token is not null) ClusterToken.Write(session, token);
        tls?.WriteTo(session);
        var started = new List<(ProcessRecord Record, Process Process)>();
        try
        {
            if (s.Head)
            {
                var gcs = await LaunchAsync(session, Components.GcsServer, GcsArguments(session, gcsPort!.Value, s), s.Block, GcsEnvironment(s, environment)).ConfigureAwait(false);
                if (s.RedisAddress is not null) File.WriteAllText(session.RedisAddressFile, s.RedisAddress);
                started.Add(gcs);
                await GcsConnection.CheckReachableAsync(channels, gcsAddress, TimeSpan.FromSeconds(10), cancellationToken).ConfigureAwait(false);
            }

            var rayletArgs = new List<string>
            {
                "--session-dir", session.Path,
                "--gcs-address", gcsAddress,
                "--node-ip-address", nodeIp,
                "--num-cpus", (s.NumCpus ?? Environment.ProcessorCount).ToString(CultureInfo.InvariantCulture),
                "--num-gpus", (s.NumGpus ?? DetectGpus()).ToString(CultureInfo.InvariantCulture),
                "--node-manager-port", s.NodeManagerPort.ToString(CultureInfo.InvariantCulture),
                "--min-worker-port", s.MinWorkerPort.ToString(CultureInfo.InvariantCulture),
                "--max-worker-port", s.MaxWorkerPort.ToString(CultureInfo.InvariantCulture),
            };
            rayletArgs.AddRange(["--object-manager-port", s.ObjectManagerPort.ToString(CultureInfo.InvariantCulture)]);
            if (s.ObjectStoreMemory is { } storeBytes) rayletArgs.AddRange(["--object-store-memory", storeBytes.ToString(CultureInfo.InvariantCulture)]);
            if (s.PlasmaDirectory is { } plasma) rayletArgs.AddRange(["--plasma-directory", Path.GetFullPath(plasma)]);
            if (s.ObjectSpillingDirectory is { } spill) rayletArgs.AddRange(["--object-spilling-directory", Path.GetFullPath(spill)]);
            if (customResources.Count > 0)
                rayletArgs.AddRange(["--resources", System.Text.Json.JsonSerializer.Serialize(customResources)]);
            if (s.Head) rayletArgs.Add("--head");
            started.Add(await LaunchAsync(session, Components.Raylet, rayletArgs, s.Block, environment).ConfigureAwait(false));
            if (s.Head && s.AutoscalingConfig is { } yaml)
            {
                // After the head's raylet: the autoscaler's first tick then sees the head it runs on.
                var monitorArgs = new List<string>
                {
                    "--session-dir", session.Path, "--gcs-address", gcsAddress,
                    "--autoscaling-config", Path.GetFullPath(RaySharp.Autoscaler.Config.ClusterConfigLoader.ExpandHome(yaml)),
                };
                if (NonEmpty(Environment.GetEnvironmentVariable(RaySharp.Autoscaler.ClusterLauncher.LauncherTempDirVariable)) is { } launcherRoot)
                    monitorArgs.AddRange(["--launcher-temp-dir", launcherRoot]);
                started.Add(await LaunchAsync(session, Components.Monitor, monitorArgs, s.Block, environment).ConfigureAwait(false));
            }
        }
        catch
        {
            // A half-started node is worse than none: take down what did start, in reverse order.
            foreach (var (record, process) in Enumerable.Reverse(started))
            {
                Posix.Kill(process.Id, Posix.SIGKILL);
                session.ForgetProcess(record);
            }
            throw;
        }

        SessionDirectory.WriteCurrentCluster(root, gcsAddress, session);
        PrintStarted(s, nodeIp, gcsAddress, session, gcsPort, token);

        if (!s.Block) return 0;
        return await BlockAsync(session, started, cancellationToken).ConfigureAwait(false);
    }

    internal static string? NonEmpty(string? value) => string.IsNullOrEmpty(value) ? null : value;

    private static List<string> GcsArguments(SessionDirectory session, int port, StartSettings s)
    {
        var args = new List<string> { "--session-dir", session.Path, "--port", port.ToString(CultureInfo.InvariantCulture) };
        if (s.RedisAddress is not null) args.AddRange(["--redis-address", s.RedisAddress]);
        return args;
    }

    /// <summary>The Redis password travels in the environment with the token, never on a command line that `ps` shows.</summary>
    private static Dictionary<string, string> GcsEnvironment(StartSettings s, Dictionary<string, string> environment) =>
        s.RedisPassword is null ? environment : new(environment) { ["RAYSHARP_REDIS_PASSWORD"] = s.RedisPassword };

    /// <summary>What the node's processes get in their environment: the token and the TLS files, or nothing of either.</summary>
    private static Dictionary<string, string> ChildEnvironment(string? token, ClusterTls? tls)
    {
        var environment = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [ClusterToken.EnvironmentVariable] = token ?? "",
            [ClusterTls.CertEnvironmentVariable] = "",
            [ClusterTls.KeyEnvironmentVariable] = "",
            [ClusterTls.CaEnvironmentVariable] = "",
        };
        foreach (var (k, v) in tls?.ChildEnvironment() ?? []) environment[k] = v;
        return environment;
    }

    /// <summary>The node's TLS files: --tls-cert/--tls-key/--tls-ca, else RAYSHARP_TLS_*; null for plain TCP.</summary>
    private static ClusterTls? Tls(StartSettings s)
    {
        try
        {
            if (s.TlsCert is null && s.TlsKey is null && s.TlsCa is null) return ClusterTls.FromEnvironment();
            if (s.TlsCert is null || s.TlsKey is null || s.TlsCa is null)
                throw new CliException("TLS needs all three of --tls-cert, --tls-key and --tls-ca (this node's certificate, its private key, the cluster's CA); make them with `raysharp tls generate`.");
            return ClusterTls.Load(s.TlsCert, s.TlsKey, s.TlsCa);
        }
        catch (InvalidOperationException e)
        {
            throw new CliException("TLS: " + e.Message);
        }
    }

    /// <summary>The token the user gave: --token, else --token-file, else RAYSHARP_CLUSTER_TOKEN; null when none.</summary>
    private static string? GivenToken(StartSettings s)
    {
        try
        {
            if (s.TokenFile is { } file) return ClusterToken.ReadFile(Path.GetFullPath(file));
        }
        catch (InvalidOperationException e)
        {
            throw new CliException("--token-file: " + e.Message);
        }
        var (token, from) = s.Token is { } t ? (t, "--token")
            : Environment.GetEnvironmentVariable(ClusterToken.EnvironmentVariable) is { Length: > 0 } env ? (env, ClusterToken.EnvironmentVariable)
            : (null, null);
        if (token is not null && ClusterToken.Problem(token) is { } problem)
            throw new CliException($"The cluster token given by {from} is not one: {problem}. Give the token `raysharp start --head` printed, or the file it keeps (--token-file).");
        return token;
    }

    /// <summary>
    /// Checks that the head answers and takes <paramref name="given"/>, and says which token this node must use: the
    /// given one, or none when the cluster runs without authentication (its processes would not present one here).
    /// </summary>
    private static async Task<string?> JoinTokenAsync(string gcsAddress, string? given, ClusterTls? tls, CancellationToken cancellationToken)
    {
        using var probe = new RpcChannelPool(new RpcSecurityOptions { ClusterToken = given, Tls = tls }, connectTimeout: TimeSpan.FromSeconds(3));
        GetClusterInfoReply cluster;
        try
        {
            cluster = await GcsConnection.CheckReachableAsync(probe, gcsAddress, JoinBudget, cancellationToken).ConfigureAwait(false);
        }
        catch (ClusterTokenRefusedException)
        {
            throw new CliException(given is null
                ? $"The head at {gcsAddress} requires the cluster token, and none was given. On the head it is in the session directory " +
                  $"(<session>/{ClusterToken.FileName}, mode 0600; `raysharp start --head` printed it). Run\n" +
                  $"  {ClusterToken.EnvironmentVariable}=<token> raysharp start --address='{gcsAddress}'\n" +
                  $"or copy that file here and add --token-file=<copy>."
                : $"The head at {gcsAddress} refused the cluster token given: it is not that cluster's token. Use the one in the head's " +
                  $"<session>/{ClusterToken.FileName} (as `raysharp start --head` printed it); if the head was started again, it has a new one.");
        }
        if (cluster.AuthRequired) return given;
        WarnNoAuth($"The cluster at {gcsAddress} runs without authentication (its head was started with --auth none)" +
                   (given is null ? "" : "; the token given is not used") + ".");
        return null;
    }

    private static void WarnNoAuth(string what) =>
        AnsiConsole.MarkupLineInterpolated($"[red]WARNING: {what} Anyone who can reach its ports can run any code on every node. Use it only on a network you trust entirely.[/]");

    /// <summary>A session of this machine whose head raylet runs but whose GCS, kept in this Redis, has died.</summary>
    private static SessionDirectory? HeadWithDeadGcs(string root, string redisAddress)
    {
        foreach (var session in SessionDirectory.EnumerateAll(root))
        {
            if (!File.Exists(session.RedisAddressFile) || File.ReadAllText(session.RedisAddressFile).Trim() != redisAddress) continue;
            var gcs = session.ReadPorts(Components.GcsServer);
            var raylet = session.ReadPorts(Components.Raylet);
            if (gcs is null || raylet is null || !ProcessTable.IsOurs(raylet.Pid, session)) continue;
            if (!ProcessTable.IsOurs(gcs.Pid, session)) return session;
        }
        return null;
    }

    /// <summary>
    /// Starts the GCS of a running head again, on its port and its Redis: it takes the cluster over from the stored
    /// state, and the raylets and drivers, which kept running, reconnect to it.
    /// </summary>
    private static async Task<int> RestartGcsAsync(SessionDirectory session, StartSettings s, CancellationToken cancellationToken)
    {
        // The running raylets and workers keep the cluster's token and TLS files: the new GCS takes them from the session.
        var token = ClusterToken.ReadFrom(session);
        var tls = ClusterTls.ReadFrom(session);
        using var channels = new RpcChannelPool(new RpcSecurityOptions { ClusterToken = token, Tls = tls }, connectTimeout: TimeSpan.FromSeconds(3));
        var environment = ChildEnvironment(token, tls);
        var old = session.ReadPorts(Components.GcsServer)!;
        var raylet = session.ReadPorts(Components.Raylet)!;
        if (s.Port is { } p && p != old.Port)
            throw new CliException($"The head of session {session.Path} runs with its GCS on port {old.Port}, not {p}; restart its GCS with --port={old.Port} (or leave --port out).");
        session.ForgetProcess(new ProcessRecord(Components.GcsServer, old.Pid));
        session.ForgetPorts(Components.GcsServer);
        File.Delete(session.StopRequestedFile);
        var gcsAddress = NodeAddress.Format(raylet.NodeIpAddress ?? NodeAddress.DetectNodeIp(), old.Port);
        await LaunchAsync(session, Components.GcsServer, GcsArguments(session, old.Port, s), supervised: false, GcsEnvironment(s, environment)).ConfigureAwait(false);
        await GcsConnection.CheckReachableAsync(channels, gcsAddress, TimeSpan.FromSeconds(10), cancellationToken).ConfigureAwait(false);
        AnsiConsole.MarkupLineInterpolated($"The GCS of this head (session {session.Path}) had died; restarted it on [bold]{gcsAddress}[/] with the cluster's state from Redis at {s.RedisAddress}.");
        AnsiConsole.WriteLine("Nodes, jobs, actors and the key-value store are as they were; raylets and drivers reconnect by themselves.");
        return 0;
    }

    /// <summary>The GCS port: the one asked for (6379 by default), or a free one when it is taken by something else.</summary>
    private static int ChooseGcsPort(int? requested, string root)
    {
        var port = requested ?? NodeAddress.DefaultGcsPort;
        var running = RunningHead(root);
        if (running is { Port: var runningPort, Session: var runningSession } && runningPort == port)
        {
            throw new CliException(
                $"A RaySharp head is already running on this machine on port {port} (session {runningSession.Path}).\n" +
                "Stop it first with `raysharp stop`, or start another head with a different --port.");
        }
        if (NodeAddress.IsPortFree(port)) return port;
        var free = NodeAddress.FindFreePort();
        AnsiConsole.MarkupLineInterpolated($"[yellow]Port {port} is already in use; the GCS will listen on port {free} instead.[/]");
        return free;
    }

    /// <summary>A live GCS recorded under this root, if any.</summary>
    private static (int Port, SessionDirectory Session)? RunningHead(string root)
    {
        foreach (var session in SessionDirectory.EnumerateAll(root))
        {
            var ports = session.ReadPorts(Components.GcsServer);
            if (ports is not null && ProcessTable.IsOurs(ports.Pid, session)) return (ports.Port, session);
        }
        return null;
    }

    private static async Task<string> ResolveHeadAsync(string address)
    {
        NodeAddress.TryParse(address, out var host, out var port, out _);
        if (IPAddress.TryParse(host, out _)) return NodeAddress.Format(host, port);
        try
        {
            var addresses = await Dns.GetHostAddressesAsync(host).ConfigureAwait(false);
            var ip = addresses.FirstOrDefault(a => a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork) ?? addresses.FirstOrDefault();
            if (ip is not null) return NodeAddress.Format(ip.ToString(), port);
        }
        catch (System.Net.Sockets.SocketException) { }
        throw new CliException($"Cannot resolve the head's host name '{host}' in --address. Use the head's IP address, as `raysharp start --head` printed it.");
    }

    private static async Task<(ProcessRecord, Process)> LaunchAsync(SessionDirectory session, string component, IReadOnlyList<string> args, bool supervised,
        IReadOnlyDictionary<string, string>? environment = null)
    {
        try
        {
            return await NodeProcessLauncher.StartAndWaitReadyAsync(session, component, args, supervised, ReadyTimeout, environment).ConfigureAwait(false);
        }
        catch (NodeStartupException e)
        {
            throw new CliException(e.Message);
        }
    }

    /// <summary>GPUs on this machine: the number nvidia-smi lists, 0 when it is not installed.</summary>
    private static double DetectGpus()
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo("nvidia-smi", "--query-gpu=index --format=csv,noheader")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            });
            if (p is null) return 0;
            var output = p.StandardOutput.ReadToEnd();
            if (!p.WaitForExit(5000) || p.ExitCode != 0) return 0;
            return output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Length;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return 0;
        }
    }

    private static void PrintStarted(StartSettings s, string nodeIp, string gcsAddress, SessionDirectory session, int? gcsPort, string? token)
    {
        var console = AnsiConsole.Console;
        if (s.Head && token is null) WarnNoAuth("This cluster was started with --auth none: it checks no cluster token.");
        console.MarkupLineInterpolated($"Local node IP: [bold]{nodeIp}[/]");
        console.MarkupLineInterpolated($"Session directory: {session.Path}");
        console.WriteLine();
        console.WriteLine("--------------------");
        console.WriteLine("RaySharp runtime started.");
        console.WriteLine("--------------------");
        console.WriteLine();
        console.WriteLine("Next steps");
        if (s.Head)
        {
            if (token is null)
            {
                console.WriteLine("  To add another node to this RaySharp cluster, run");
                console.MarkupLineInterpolated($"    [bold]raysharp start --address='{gcsAddress}'[/]");
            }
            else
            {
                // The token in the environment of the command, not on its command line (which `ps` shows everyone).
                console.WriteLine("  To add another node to this RaySharp cluster, run on it");
                console.MarkupLineInterpolated($"    [bold]{ClusterToken.EnvironmentVariable}={token} raysharp start --address='{gcsAddress}'[/]");
                console.MarkupLineInterpolated($"  or copy {ClusterToken.PathIn(session)} (the cluster token, mode 0600) to it and add --token-file=<copy>.");
            }
            console.WriteLine();
            console.WriteLine("  To connect to this RaySharp cluster from C#, on any of its nodes (the token is found by itself):");
            console.WriteLine("    Ray.Init(\"auto\");");
            console.WriteLine();
            console.WriteLine("  Open TCP port " + gcsPort + " (GCS), the raylet and object-manager ports and the worker ports " +
                              $"{s.MinWorkerPort}-{s.MaxWorkerPort} between the nodes.");
        }
        else
        {
            console.MarkupLineInterpolated($"  This node joined the cluster whose head is at [bold]{gcsAddress}[/].");
        }
        console.WriteLine();
        console.WriteLine("  To see the status of the cluster, use");
        console.WriteLine("    raysharp status");
        console.WriteLine();
        console.WriteLine(s.Block
            ? "  --block is set: the processes stop when this command is interrupted (Ctrl-C) or when one of them dies."
            : "  To terminate the RaySharp runtime on this machine, run\n    raysharp stop");
    }

    /// <summary>--block: stay in the foreground; stop everything when interrupted or when a child dies.</summary>
    private static async Task<int> BlockAsync(SessionDirectory session, List<(ProcessRecord Record, Process Process)> started, CancellationToken cancellationToken)
    {
        var exited = started.Select(p => p.Process.WaitForExitAsync(CancellationToken.None)).ToList();
        var interrupted = Task.Delay(Timeout.Infinite, cancellationToken).ContinueWith(_ => { }, TaskScheduler.Default);
        var first = await Task.WhenAny(exited.Append(interrupted)).ConfigureAwait(false);
        var code = 0;
        if (first != interrupted)
        {
            var dead = started[exited.IndexOf(first)];
            AnsiConsole.MarkupLineInterpolated($"[red]The {dead.Record.Component} process (pid {dead.Process.Id}) exited with code {dead.Process.ExitCode}; stopping this node.[/]");
            code = 1;
        }
        var stopped = await StopCommand.StopSessionsAsync([session], force: false, TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        AnsiConsole.MarkupLineInterpolated($"Stopped all {stopped} RaySharp processes of this node.");
        return code;
    }
}
