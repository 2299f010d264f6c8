using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;
using RaySharp.Common;
using RaySharp.CoreWorker;
using RaySharp.Gcs;
using RaySharp.Node;
using RaySharp.Raylet;

NodeArguments arguments;
try
{
    arguments = new NodeArguments(args);
}
catch (ArgumentException e)
{
    Console.Error.WriteLine("raysharp-node: " + e.Message);
    return 2;
}

if (arguments.Optional(NodeProcessLauncher.LogFileFlag) is { } logFile) Posix.RedirectStdoutAndStderr(logFile);
// Every node process leads its own session and process group: a terminal's Ctrl-C or hang-up never reaches it, and
// its supervisor can signal the whole group.
Posix.DetachIntoNewSession();
if (arguments.Flag(NodeProcessLauncher.DetachFlag)) Posix.DetachStdin();

using var loggerFactory = LoggerFactory.Create(b => b
    .SetMinimumLevel(LogLevel.Information)
    .AddFilter("Microsoft.AspNetCore", LogLevel.Warning)
    .AddFilter("Microsoft.Hosting", LogLevel.Warning)
    .AddFilter("Grpc", LogLevel.Warning)
    .AddSimpleConsole(o =>
    {
        o.SingleLine = true;
        o.TimestampFormat = "yyyy-MM-dd HH:mm:ss.fff ";
        o.ColorBehavior = LoggerColorBehavior.Disabled;
        o.UseUtcTimestamp = false;
    }));
var logger = loggerFactory.CreateLogger("raysharp-node");

using var shutdown = new CancellationTokenSource();
var shutdownReason = "signal";
void RequestShutdown(string reason)
{
    shutdownReason = reason;
    try { shutdown.Cancel(); } catch (ObjectDisposedException) { }
}
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; RequestShutdown("SIGTERM"); });
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; RequestShutdown("SIGINT"); });

if (arguments.Flag(NodeProcessLauncher.ExitWithParentFlag))
{
    // Our launcher holds the other end of stdin. End of file means it is gone, however it died: stop too.
    var watcher = new Thread(() =>
    {
        try
        {
            using var stdin = Console.OpenStandardInput();
            var buffer = new byte[64];
            while (stdin.Read(buffer, 0, buffer.Length) > 0) { }
        }
        catch (IOException) { }
        if (arguments.Component == Components.Worker)
        {
            // A worker whose raylet is gone has no node left to serve: exit now, before it can take another task
            // (its results could not be stored, and its lessees retry elsewhere).
            Console.Error.WriteLine("worker exiting: its raylet is gone");
            Environment.Exit(1);
        }
        RequestShutdown("parent process exited");
    }) { IsBackground = true, Name = "parent-watch" };
    watcher.Start();
}

// Whatever happens during a graceful stop, the process is gone within this time.
shutdown.Token.Register(() => _ = Task.Delay(TimeSpan.FromSeconds(15)).ContinueWith(_ => Environment.Exit(3), TaskScheduler.Default));

try
{
    return arguments.Component switch
    {
        Components.GcsServer => await RunGcsAsync(),
        Components.Raylet => await RunRayletAsync(),
        Components.Worker => await RunWorkerAsync(),
        Components.Monitor => await RunMonitorAsync(),
        _ => throw new ArgumentException($"unknown component '{arguments.Component}'; expected {Components.GcsServer}, {Components.Raylet}, {Components.Worker} or {Components.Monitor}"),
    };
}
catch (Exception e) when (e is not OperationCanceledException)
{
    logger.LogCritical(e, "{Component} failed: {Message}", arguments.Component, e.Message);
    return 1;
}

async Task<int> RunGcsAsync()
{
    var session = new SessionDirectory(arguments.Required("--session-dir"));
    var options = new GcsServerOptions
    {
        Port = arguments.Int("--port", NodeAddress.DefaultGcsPort),
        SessionDir = session.Path,
    };
    if (arguments.Optional("--health-check-period-ms") is { } ms) options.HealthCheckPeriod = TimeSpan.FromMilliseconds(int.Parse(ms, System.Globalization.CultureInfo.InvariantCulture));
    if (arguments.Optional("--health-check-failure-threshold") is { } n) options.HealthCheckFailureThreshold = int.Parse(n, System.Globalization.CultureInfo.InvariantCulture);
    options.RedisAddress = arguments.Optional("--redis-address");
    options.ApplyEnvironment();
    var gcs = await GcsServer.StartAsync(options, loggerFactory, TimeProvider.System, cancellationToken: shutdown.Token);
    try
    {
        session.WritePorts(Components.GcsServer, new ComponentPorts(Environment.ProcessId, gcs.Port));
        await WaitForShutdownAsync(shutdown.Token);
        logger.LogInformation("GCS server stopping ({Reason})", shutdownReason);
    }
    finally
    {
        // Stopped by `raysharp stop` (or its --block start's own stop): the cluster ends, and so does its stored state.
        // Any other SIGTERM (a supervisor restarting the GCS) leaves the state for the GCS that comes next.
        await gcs.StopAsync(clusterStopped: File.Exists(session.StopRequestedFile));
    }
    return 0;
}

async Task<int> RunRayletAsync()
{
    var session = new SessionDirectory(arguments.Required("--session-dir"));
    if (!ResourceSet.TryParseJson(arguments.Optional("--resources"), out var resources, out var error)) throw new ArgumentException(error);
    var options = new RayletOptions
    {
        GcsAddress = arguments.Required("--gcs-address"),
        NodeIpAddress = arguments.Required("--node-ip-address"),
        NodeManagerPort = arguments.Int("--node-manager-port", 0),
        ObjectManagerPort = arguments.Int("--object-manager-port", 0),
        MinWorkerPort = arguments.Int("--min-worker-port", 10002),
        MaxWorkerPort = arguments.Int("--max-worker-port", 19999),
        IsHead = arguments.Flag("--head"),
        SessionDir = session.Path,
    };
    options.ApplyEnvironment();
    if (arguments.Optional("--object-store-memory") is { } storeBytes) options.ObjectStore.Capacity = long.Parse(storeBytes, System.Globalization.CultureInfo.InvariantCulture);
    if (arguments.Optional("--plasma-directory") is { } plasmaDir) options.ObjectStore.Directory = plasmaDir;
    if (arguments.Optional("--object-spilling-directory") is { } spillDir) options.ObjectStore.SpillDirectory = spillDir;
    foreach (var (k, v) in resources) options.Resources[k] = v;
    if (arguments.Optional("--num-cpus") is { } cpus) options.Resources[ResourceSet.Cpu] = double.Parse(cpus, System.Globalization.CultureInfo.InvariantCulture);
    if (arguments.Optional("--num-gpus") is { } gpus && double.Parse(gpus, System.Globalization.CultureInfo.InvariantCulture) is > 0 and var g) options.Resources[ResourceSet.Gpu] = g;
    if (arguments.Optional("--node-id") is { } id) options.NodeId = id;
    options.Resources[ResourceSet.NodeIpResource(options.NodeIpAddress)] = 1;

    await using var raylet = new Raylet(options, session, TimeProvider.System, loggerFactory.CreateLogger<Raylet>());
    await raylet.StartAsync(loggerFactory, shutdown.Token);
    session.WritePorts(Components.Raylet, new ComponentPorts(Environment.ProcessId, raylet.Port, options.NodeId, options.NodeIpAddress, raylet.ObjectManagerPort));
    var finished = await Task.WhenAny(WaitForShutdownAsync(shutdown.Token), raylet.Fatal);
    if (finished == raylet.Fatal)
    {
        logger.LogError("Raylet stopping: {Reason}", raylet.Fatal.Result);
        return 1;
    }
    logger.LogInformation("Raylet stopping ({Reason})", shutdownReason);
    return 0;
}

async Task<int> RunWorkerAsync()
{
    var options = new CoreWorkerOptions
    {
        WorkerId = arguments.Required("--worker-id"),
        NodeId = arguments.Required("--node-id"),
        RayletAddress = arguments.Required("--raylet-address"),
        GcsAddress = arguments.Required("--gcs-address"),
        NodeIpAddress = arguments.Required("--node-ip-address"),
        SessionDir = arguments.Required("--session-dir"),
        MinWorkerPort = arguments.Int("--min-worker-port", 10002),
        MaxWorkerPort = arguments.Int("--max-worker-port", 19999),
    };
    await using var worker = new WorkerRuntime(options, loggerFactory);
    await worker.StartAsync(shutdown.Token);
    await WaitForShutdownAsync(shutdown.Token);
    logger.LogInformation("Worker exiting ({Reason})", shutdownReason);
    return 0;
}

async Task<int> RunMonitorAsync()
{
    var session = new SessionDirectory(arguments.Required("--session-dir"));
    var gcsAddress = arguments.Required("--gcs-address");
    var config = RaySharp.Autoscaler.Config.ClusterConfigLoader.LoadFile(arguments.Required("--autoscaling-config"));
    var options = new RaySharp.Autoscaler.Scaling.AutoscalerOptions
    {
        UpdateInterval = arguments.Optional("--update-interval-ms") is { } ms
            ? TimeSpan.FromMilliseconds(int.Parse(ms, System.Globalization.CultureInfo.InvariantCulture))
            : Environment.GetEnvironmentVariable("RAYSHARP_AUTOSCALER_UPDATE_INTERVAL_S") is { Length: > 0 } s
                ? TimeSpan.FromSeconds(double.Parse(s, System.Globalization.CultureInfo.InvariantCulture))
                : TimeSpan.FromSeconds(5),
    };
    using var channels = new RaySharp.Rpc.RpcChannelPool();
    var gcs = new RaySharp.Rpc.Clients.GcsClient(channels, gcsAddress);
    var token = Environment.GetEnvironmentVariable(ClusterToken.EnvironmentVariable) ?? "";
    await using var monitor = new RaySharp.Autoscaler.Monitor.AutoscalerMonitor(config, arguments.Optional("--launcher-temp-dir"), gcs, gcsAddress, token,
        TimeProvider.System, options, loggerFactory.CreateLogger("autoscaler"));
    session.WritePorts(Components.Monitor, new ComponentPorts(Environment.ProcessId, 0));
    await monitor.RunAsync(shutdown.Token);
    logger.LogInformation("Autoscaler stopping ({Reason})", shutdownReason);
    return 0;
}

static async Task WaitForShutdownAsync(CancellationToken token)
{
    try { await Task.Delay(Timeout.Infinite, token); }
    catch (OperationCanceledException) { }
}
