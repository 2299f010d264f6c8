using System.CommandLine;
using RaySharp.Cli;
using RaySharp.Cli.Commands;
using Spectre.Console;

// Wide output when piped (logs, tests): Spectre would otherwise wrap tables at 80 columns.
if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 200;

var tempDir = new Option<string?>("--temp-dir") { Description = "Root of the session directories (default: $RAYSHARP_TEMP_DIR, else /tmp/raysharp)." };

// ---- start ----
var head = new Option<bool>("--head") { Description = "Start the head node: the GCS server and a raylet." };
var address = new Option<string?>("--address") { Description = "Join the cluster whose head (GCS) is at <ip>:<port>." };
var port = WholeNumber("--port", "GCS port on the head (default 6379; a free port is chosen when it is taken).");
var numCpus = WholeNumber("--num-cpus", "CPUs this node offers (default: the machine's CPU count).");
var numGpus = new Option<double?>("--num-gpus")
{
    Description = "GPUs this node offers (default: as many as nvidia-smi lists, else 0).",
    CustomParser = r =>
    {
        var text = r.Tokens.Count == 1 ? r.Tokens[0].Value : "";
        if (double.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var v)) return v;
        r.AddError($"--num-gpus expects a number, got '{text}'.");
        return null;
    },
};
var resources = new Option<string?>("--resources") { Description = "Custom resources as a JSON object, for example '{\"accelerator\": 2}'." };
var nodeIp = new Option<string?>("--node-ip-address") { Description = "This node's IP as other nodes reach it (default: detected)." };
var block = new Option<bool>("--block") { Description = "Stay in the foreground; stop everything when interrupted or when a process dies." };
var nodeManagerPort = new Option<int>("--node-manager-port") { Description = "Raylet port (default 0: any free port).", DefaultValueFactory = _ => 0 };
var minWorkerPort = new Option<int>("--min-worker-port") { Description = "Lowest port a worker may listen on (default 10002).", DefaultValueFactory = _ => 10002 };
var maxWorkerPort = new Option<int>("--max-worker-port") { Description = "Highest port a worker may listen on (default 19999).", DefaultValueFactory = _ => 19999 };
var objectManagerPort = new Option<int>("--object-manager-port") { Description = "Object manager port, for object transfer between nodes (default 0: any free port).", DefaultValueFactory = _ => 0 };
var objectStoreMemory = new Option<long?>("--object-store-memory")
{
    Description = "Bytes of shared memory for the node's object store (default: 30% of the machine's memory, at most what the plasma directory has free).",
    CustomParser = r =>
    {
        var text = r.Tokens.Count == 1 ? r.Tokens[0].Value : "";
        if (long.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var v)) return v;
        r.AddError($"--object-store-memory expects a number of bytes, got '{text}' (for example 2000000000 for 2 GB).");
        return null;
    },
};
var plasmaDirectory = new Option<string?>("--plasma-directory") { Description = "Directory of the object store's shared-memory file (default /dev/shm)." };
var spillDirectory = new Option<string?>("--object-spilling-directory") { Description = "Where objects are spilled when the store is full (default: the session directory)." };
var redisAddress = new Option<string?>("--redis-address")
{
    Description = "Head only: keep the GCS's state in this Redis (host:port), so the GCS can be killed and started again with nothing lost. " +
                  "Run the same command again on the head to restart a GCS that died.",
};
var autoscalingConfig = new Option<string?>("--autoscaling-config")
{
    Description = "Head only: run the autoscaler with this cluster YAML (`raysharp up` passes it; default $RAYSHARP_AUTOSCALING_CONFIG).",
};
var redisPassword = new Option<string?>("--redis-password") { Description = "Password of the Redis given with --redis-address." };
var token = new Option<string?>("--token")
{
    Description = "The cluster token: on the head, use this one instead of a new one; when joining, the head's. " +
                  "Prefer RAYSHARP_CLUSTER_TOKEN or --token-file, which `ps` does not show.",
};
var tokenFile = new Option<string?>("--token-file") { Description = "A file holding the cluster token (a copy of the head's <session>/cluster_token)." };
var auth = new Option<string?>("--auth")
{
    Description = "Head only: 'token' (default: every connection must carry the cluster token) or 'none' (no authentication; " +
                  "anyone who can reach the ports can run code; for a trusted network only).",
};
var tlsCert = new Option<string?>("--tls-cert") { Description = "This node's TLS certificate (PEM): with --tls-key and --tls-ca, every connection of the cluster is mutual TLS. Default: $RAYSHARP_TLS_CERT." };
var tlsKey = new Option<string?>("--tls-key") { Description = "The private key of --tls-cert (PEM). Default: $RAYSHARP_TLS_KEY." };
var tlsCa = new Option<string?>("--tls-ca") { Description = "The cluster's CA certificate (PEM): peers must present a certificate it signed. Default: $RAYSHARP_TLS_CA." };
var start = new Command("start", "Start RaySharp on this machine: `--head` for the head node, `--address=<head-ip>:<port>` to join a cluster.")
{
    head, address, port, numCpus, numGpus, resources, nodeIp, tempDir, block, nodeManagerPort, minWorkerPort, maxWorkerPort,
    objectManagerPort, objectStoreMemory, plasmaDirectory, spillDirectory, redisAddress, redisPassword, autoscalingConfig, token, tokenFile, auth, tlsCert, tlsKey, tlsCa,
};
start.SetAction((parse, ct) => Run(() => StartCommand.RunAsync(new StartSettings
{
    Head = parse.GetValue(head),
    Address = parse.GetValue(address),
    Port = parse.GetValue(port),
    NumCpus = parse.GetValue(numCpus),
    NumGpus = parse.GetValue(numGpus),
    Resources = parse.GetValue(resources),
    NodeIpAddress = parse.GetValue(nodeIp),
    TempDir = parse.GetValue(tempDir),
    Block = parse.GetValue(block),
    NodeManagerPort = parse.GetValue(nodeManagerPort),
    MinWorkerPort = parse.GetValue(minWorkerPort),
    MaxWorkerPort = parse.GetValue(maxWorkerPort),
    ObjectManagerPort = parse.GetValue(objectManagerPort),
    ObjectStoreMemory = parse.GetValue(objectStoreMemory),
    PlasmaDirectory = parse.GetValue(plasmaDirectory),
    ObjectSpillingDirectory = parse.GetValue(spillDirectory),
    RedisAddress = parse.GetValue(redisAddress),
    RedisPassword = parse.GetValue(redisPassword),
    // The variable is for a head (nodes the autoscaler starts inherit the environment of the head's processes).
    AutoscalingConfig = parse.GetValue(autoscalingConfig)
        ?? (parse.GetValue(head) ? StartCommand.NonEmpty(Environment.GetEnvironmentVariable(RaySharp.Autoscaler.ClusterLauncher.AutoscalingConfigVariable)) : null),
    Token = parse.GetValue(token),
    TokenFile = parse.GetValue(tokenFile),
    Auth = parse.GetValue(auth),
    TlsCert = parse.GetValue(tlsCert),
    TlsKey = parse.GetValue(tlsKey),
    TlsCa = parse.GetValue(tlsCa),
}, ct)));

// ---- stop ----
var force = new Option<bool>("--force", "-f") { Description = "Send SIGKILL at once instead of SIGTERM first." };
var grace = new Option<int>("--grace-period", "-g") { Description = "Seconds to wait after SIGTERM before SIGKILL (default 10).", DefaultValueFactory = _ => 10 };
var stop = new Command("stop", "Stop every RaySharp process started on this machine (by the pids recorded in its session directories).")
{
    force, grace, tempDir,
};
stop.SetAction((parse, _) => Run(() =>
{
    var g = parse.GetValue(grace);
    if (g < 0) throw new CliException($"--grace-period must be zero or more seconds, got {g}.");
    return StopCommand.RunAsync(parse.GetValue(tempDir), parse.GetValue(force), TimeSpan.FromSeconds(g));
}));

// ---- status ----
var statusAddress = new Option<string?>("--address") { Description = "The GCS to ask (default: $RAYSHARP_ADDRESS, else the cluster started on this machine)." };
var format = new Option<string>("--format") { Description = "Output format: text or json.", DefaultValueFactory = _ => "text" };
format.AcceptOnlyFromAmong("text", "json");
var status = new Command("status", "Show the cluster's nodes and resource usage.") { statusAddress, format, tempDir };
status.SetAction((parse, ct) => Run(() => StatusCommand.RunAsync(parse.GetValue(statusAddress), parse.GetValue(tempDir), parse.GetValue(format)!, ct)));

// ---- list ----
var listAddress = new Option<string?>("--address") { Description = "The GCS to ask (default: $RAYSHARP_ADDRESS, else the cluster started on this machine)." };
var listFormat = new Option<string>("--format") { Description = "Output format: text or json.", DefaultValueFactory = _ => "text" };
listFormat.AcceptOnlyFromAmong("text", "json");
var aliveOnly = new Option<bool>("--alive-only") { Description = "Leave out dead actors." };
var limit = new Option<int>("--limit") { Description = "Most rows in the text table (default 100); the counts cover every actor.", DefaultValueFactory = _ => 100 };
var listActors = new Command("actors", "List the cluster's actors and their states (PENDING_CREATION, ALIVE, RESTARTING, DEAD).") { listAddress, listFormat, aliveOnly, limit, tempDir };
listActors.SetAction((parse, ct) => Run(() => ListCommand.RunActorsAsync(parse.GetValue(listAddress), parse.GetValue(tempDir), parse.GetValue(listFormat)!, !parse.GetValue(aliveOnly), parse.GetValue(limit), ct)));
var pgLimit = new Option<int>("--limit") { Description = "Most rows in the text table (default 100); the counts cover every group.", DefaultValueFactory = _ => 100 };
var listPlacementGroups = new Command("placement-groups", "List the cluster's placement groups: strategy, state (PENDING, PREPARED, CREATED, RESCHEDULING, REMOVED), each bundle's resources and node, and why one is not created.") { listAddress, listFormat, pgLimit, tempDir };
listPlacementGroups.SetAction((parse, ct) => Run(() => ListPlacementGroupsCommand.RunAsync(parse.GetValue(listAddress), parse.GetValue(tempDir), parse.GetValue(listFormat)!, parse.GetValue(pgLimit), ct)));
var list = new Command("list", "List the cluster's state: `raysharp list actors`, `raysharp list placement-groups`.") { listActors, listPlacementGroups };

// ---- memory ----
var memoryAddress = new Option<string?>("--address") { Description = "The GCS to ask (default: $RAYSHARP_ADDRESS, else the cluster started on this machine)." };
var memoryFormat = new Option<string>("--format") { Description = "Output format: text or json.", DefaultValueFactory = _ => "text" };
memoryFormat.AcceptOnlyFromAmong("text", "json");
var memory = new Command("memory", "Show every node's object store: memory used, spilled and pulled, and the largest objects.") { memoryAddress, memoryFormat, tempDir };
memory.SetAction((parse, ct) => Run(() => MemoryCommand.RunAsync(parse.GetValue(memoryAddress), parse.GetValue(tempDir), parse.GetValue(memoryFormat)!, ct)));

// ---- microbenchmark ----
var benchFilter = new Argument<string?>("filter") { Description = "Run only the rows whose name contains this text.", Arity = ArgumentArity.ZeroOrOne };
var benchQuick = new Option<bool>("--quick") { Description = "One trial of 1 s per row instead of four of 2 s." };
var microbenchmark = new Command("microbenchmark", "Run Ray's core microbenchmarks against an embedded cluster of this machine (as `ray microbenchmark`).") { benchFilter, benchQuick };
microbenchmark.SetAction((parse, ct) => Run(() => MicrobenchmarkCommand.RunAsync(parse.GetValue(benchFilter), parse.GetValue(benchQuick), ct)));

// ---- tls ----
var tlsOut = new Option<string>("--out") { Description = "Directory of the files (default ./raysharp-tls); a CA already there (ca.crt, ca.key) signs the new certificate.", DefaultValueFactory = _ => "raysharp-tls" };
var tlsName = new Option<string>("--name") { Description = "Name of the node certificate's files, <name>.crt and <name>.key (default node).", DefaultValueFactory = _ => "node" };
var tlsAddresses = new Option<string[]>("--ip-address") { Description = "Addresses to name in the certificate (optional: RaySharp checks the CA, not names).", AllowMultipleArgumentsPerToken = true };
var tlsGenerate = new Command("generate", "Make a CA and a node certificate it signs (PEM), for `raysharp start --tls-cert --tls-key --tls-ca`.") { tlsOut, tlsName, tlsAddresses };
tlsGenerate.SetAction(parse => Run(() => Task.FromResult(TlsCommand.Generate(parse.GetValue(tlsOut)!, parse.GetValue(tlsName)!, parse.GetValue(tlsAddresses) ?? []))).GetAwaiter().GetResult());
var tlsCommand = new Command("tls", "Certificates for mutual TLS between the processes of a cluster: `raysharp tls generate`.") { tlsGenerate };

// ---- cluster launcher: up, down, exec, attach, submit, rsync-up, rsync-down, get-head-ip, get-worker-ips, monitor ----
Argument<string> ClusterConfigArgument() => new("cluster_config_file") { Description = "The cluster YAML (Ray's keys; see docs/launcher.md)." };
Option<string?> ClusterNameOption() => new("--cluster-name", "-n") { Description = "Use this cluster name instead of the YAML's cluster_name." };
Option<bool> YesOption() => new("--yes", "-y") { Description = "Do not ask for confirmation." };
Option<bool> StartOption() => new("--start") { Description = "Start the cluster first if it is not running." };
Option<bool> StopOption() => new("--stop") { Description = "Take the cluster down once the command finished." };
Option<bool> TmuxOption() => new("--tmux") { Description = "Run in a detached tmux session on the head." };
Option<bool> ScreenOption() => new("--screen") { Description = "Run in a detached screen session on the head." };
Option<int[]> PortForwardOption() => new("--port-forward", "-p") { Description = "Forward this port of the head to localhost here (repeatable)." };
static string? Session(bool tmux, bool screen) => tmux && screen ? throw new CliException("--tmux and --screen: give one of them.") : tmux ? "tmux" : screen ? "screen" : null;

var upConfig = ClusterConfigArgument();
var upName = ClusterNameOption();
var upYes = YesOption();
var noRestart = new Option<bool>("--no-restart") { Description = "Leave RaySharp running on nodes whose setup is current (default: restart it everywhere)." };
var restartOnly = new Option<bool>("--restart-only") { Description = "Skip the setup commands on every node and only restart RaySharp." };
var sshTimeout = new Option<int>("--ssh-timeout") { Description = "Seconds a node may take to answer over SSH before its update fails (default 120).", DefaultValueFactory = _ => 120 };
var up = new Command("up", "Start or update a cluster from a cluster YAML: provision the nodes, set them up and start RaySharp on them.") { upConfig, upName, upYes, noRestart, restartOnly, sshTimeout };
up.SetAction((parse, ct) => Run(() => LauncherCommands.UpAsync(new UpSettings(parse.GetValue(upConfig)!, parse.GetValue(upName), parse.GetValue(upYes),
    parse.GetValue(noRestart), parse.GetValue(restartOnly), parse.GetValue(sshTimeout)), ct)));

var downConfig = ClusterConfigArgument();
var downName = ClusterNameOption();
var downYes = YesOption();
var workersOnly = new Option<bool>("--workers-only") { Description = "Take down the worker nodes only and keep the head." };
var keepMinWorkers = new Option<bool>("--keep-min-workers") { Description = "Keep each node type's min_workers running." };
var down = new Command("down", "Stop RaySharp on every node of a cluster (workers first, then the head) and release the nodes.") { downConfig, downName, downYes, workersOnly, keepMinWorkers };
down.SetAction((parse, ct) => Run(() => LauncherCommands.DownAsync(parse.GetValue(downConfig)!, parse.GetValue(downName), parse.GetValue(downYes),
    parse.GetValue(workersOnly), parse.GetValue(keepMinWorkers), ct)));

var execConfig = ClusterConfigArgument();
var execCommand = new Argument<string>("cmd") { Description = "The shell command to run on the head." };
var execName = ClusterNameOption();
var execStart = StartOption();
var execStop = StopOption();
var execTmux = TmuxOption();
var execScreen = ScreenOption();
var execPorts = PortForwardOption();
var exec = new Command("exec", "Run a shell command on the cluster's head node.") { execConfig, execCommand, execName, execStart, execStop, execTmux, execScreen, execPorts };
exec.SetAction((parse, ct) => Run(() => LauncherCommands.ExecAsync(parse.GetValue(execConfig)!, parse.GetValue(execName), parse.GetValue(execCommand)!,
    Session(parse.GetValue(execTmux), parse.GetValue(execScreen)), parse.GetValue(execStart), parse.GetValue(execStop), parse.GetValue(execPorts) ?? [], ct)));

var attachConfig = ClusterConfigArgument();
var attachName = ClusterNameOption();
var attachStart = StartOption();
var attachTmux = new Option<bool>("--tmux") { Description = "Attach to the head's tmux session (made by exec --tmux), or a new one." };
var attachScreen = new Option<bool>("--screen") { Description = "Attach to the head's screen session (made by exec --screen), or a new one." };
var attachPorts = PortForwardOption();
var attach = new Command("attach", "Open an SSH shell on the cluster's head node.") { attachConfig, attachName, attachStart, attachTmux, attachScreen, attachPorts };
attach.SetAction((parse, ct) => Run(() => LauncherCommands.AttachAsync(parse.GetValue(attachConfig)!, parse.GetValue(attachName),
    Session(parse.GetValue(attachTmux), parse.GetValue(attachScreen)), parse.GetValue(attachStart), parse.GetValue(attachPorts) ?? [], ct)));

var submitConfig = ClusterConfigArgument();
var submitProgram = new Argument<string>("program") { Description = "A built .NET program (its output folder or .dll) or a project (.csproj or its folder, built here first)." };
var submitArgs = new Argument<string[]>("args") { Description = "Arguments for the program (after --).", Arity = ArgumentArity.ZeroOrMore };
var submitName = ClusterNameOption();
var submitStart = StartOption();
var submitStop = StopOption();
var submitTmux = TmuxOption();
var submitScreen = ScreenOption();
var submit = new Command("submit", "Copy a .NET program to the head node and run it there as a driver: `raysharp submit cluster.yaml ./MyApp -- arg1 arg2`.")
{
    submitConfig, submitProgram, submitArgs, submitName, submitStart, submitStop, submitTmux, submitScreen,
};
submit.SetAction((parse, ct) => Run(() => LauncherCommands.SubmitAsync(parse.GetValue(submitConfig)!, parse.GetValue(submitName), parse.GetValue(submitProgram)!,
    parse.GetValue(submitArgs) ?? [], parse.GetValue(submitStart), parse.GetValue(submitStop), Session(parse.GetValue(submitTmux), parse.GetValue(submitScreen)), ct)));

Command RsyncCommand(string name, bool toCluster)
{
    var config = ClusterConfigArgument();
    var source = new Argument<string>("source") { Description = toCluster ? "The local file or folder." : "The file or folder on the head." };
    var target = new Argument<string>("target") { Description = toCluster ? "Where it goes on the head." : "Where it goes here." };
    var clusterName = ClusterNameOption();
    var command = new Command(name, toCluster ? "Copy files to the head node (rsync over SSH)." : "Copy files from the head node (rsync over SSH).") { config, source, target, clusterName };
    Option<bool>? allNodes = null;
    if (toCluster)
    {
        allNodes = new Option<bool>("--all-nodes", "-A") { Description = "Copy to every node of the cluster, not only the head." };
        command.Add(allNodes);
    }
    command.SetAction((parse, ct) => Run(() => LauncherCommands.RsyncAsync(parse.GetValue(config)!, parse.GetValue(clusterName), parse.GetValue(source)!, parse.GetValue(target)!,
        toCluster, allNodes is not null && parse.GetValue(allNodes), ct)));
    return command;
}

Command IpsCommand(string name, bool head)
{
    var config = ClusterConfigArgument();
    var clusterName = ClusterNameOption();
    var command = new Command(name, head ? "Print the head node's IP address." : "Print the worker nodes' IP addresses, one per line.") { config, clusterName };
    command.SetAction((parse, ct) => Run(() => LauncherCommands.GetIpsAsync(parse.GetValue(config)!, parse.GetValue(clusterName), head, ct)));
    return command;
}

var monitorConfig = ClusterConfigArgument();
var monitorName = ClusterNameOption();
var monitorLines = new Option<int>("--lines") { Description = "Lines of the log to show first (default 100).", DefaultValueFactory = _ => 100 };
var monitor = new Command("monitor", "Follow the autoscaler's log on the head node.") { monitorConfig, monitorName, monitorLines };
monitor.SetAction((parse, ct) => Run(() => LauncherCommands.MonitorAsync(parse.GetValue(monitorConfig)!, parse.GetValue(monitorName), parse.GetValue(monitorLines), ct)));

var root = new RootCommand("raysharp: start, stop and inspect RaySharp clusters.") 
{
    start, stop, status, list, memory, microbenchmark, tlsCommand,
    up, down, exec, attach, submit, RsyncCommand("rsync-up", toCluster: true), RsyncCommand("rsync-down", toCluster: false),
    IpsCommand("get-head-ip", head: true), IpsCommand("get-worker-ips", head: false), monitor,
};
return await root.Parse(args).InvokeAsync();

// Parse errors that name the flag and what it expects, instead of a .NET type name.
static Option<int?> WholeNumber(string name, string description) => new(name)
{
    Description = description,
    CustomParser = r =>
    {
        var text = r.Tokens.Count == 1 ? r.Tokens[0].Value : "";
        if (int.TryParse(text, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out var v)) return v;
        r.AddError($"{name} expects a whole number, got '{text}'.");
        return null;
    },
};

static async Task<int> Run(Func<Task<int>> body)
{
    try
    {
        return await body();
    }
    catch (CliException e)
    {
        Console.Error.WriteLine("Error: " + e.Message);
        return e.ExitCode;
    }
}
