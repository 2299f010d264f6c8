using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using RaySharp.Common;

namespace RaySharp.CoreWorker;

/// <summary>
/// The local cluster <c>Ray.Init()</c> starts when there is none: the same GCS, raylet and worker processes as
/// <c>raysharp start --head</c>, but supervised by the driver: they stop on <see cref="DisposeAsync"/> (or, at process
/// exit, <see cref="StopNow"/>), and if the driver dies without either (a crash, SIGKILL) their stdin pipes close and
/// they stop by themselves.
/// </summary>
internal sealed class EmbeddedCluster : IAsyncDisposable
{
    private static readonly TimeSpan s_readyTimeout = TimeSpan.FromSeconds(30);
    private readonly SessionDirectory _session;
    private readonly Lock _gate = new();
    private List<(ProcessRecord Record, Process Process)> _processes;

    private EmbeddedCluster(SessionDirectory session, string gcsAddress, string nodeIp, string token, List<(ProcessRecord, Process)> processes)
    {
        _session = session;
        Token = token;
        GcsAddress = gcsAddress;
        NodeIpAddress = nodeIp;
        _processes = processes;
    }

    public string GcsAddress { get; }
    public string NodeIpAddress { get; }
    public string SessionDir => _session.Path;

    /// <summary>The cluster's token (the one given, else a new one): an embedded cluster is as closed to the network as any other.</summary>
    public string Token { get; }

    public static async Task<EmbeddedCluster> StartAsync(DriverOptions options, CancellationToken cancellationToken)
    {
        var root = SessionDirectory.ResolveRoot(options.TempDir);
        var session = SessionDirectory.Create(root, TimeProvider.System);
        var nodeIp = NodeAddress.DetectNodeIp();
        var port = NodeAddress.FindFreePort();
        var token = options.Token ?? (Environment.GetEnvironmentVariable(ClusterToken.EnvironmentVariable) is { Length: > 0 } given ? given : ClusterToken.Generate());
        if (ClusterToken.Problem(token) is { } problem) throw new DriverStartException($"The cluster token given for the embedded cluster (RayInitOptions.Token or {ClusterToken.EnvironmentVariable}) is not one: {problem}.");
        ClusterToken.Write(session, token);
        var environment = new Dictionary<string, string>(StringComparer.Ordinal) { [ClusterToken.EnvironmentVariable] = token };
        var processes = new List<(ProcessRecord, Process)>();
        try
        {
            processes.Add(await NodeProcessLauncher.StartAndWaitReadyAsync(session, Components.GcsServer,
                ["--session-dir", session.Path, "--port", port.ToString(CultureInfo.InvariantCulture)], supervised: true, s_readyTimeout, environment, cancellationToken).ConfigureAwait(false));
            var gcsAddress = NodeAddress.Format(nodeIp, port);
            var rayletArgs = new List<string>
            {
                "--session-dir", session.Path,
                "--gcs-address", gcsAddress,
                "--node-ip-address", nodeIp,
                "--num-cpus", (options.NumCpus ?? Environment.ProcessorCount).ToString(CultureInfo.InvariantCulture),
                "--num-gpus", (options.NumGpus ?? 0).ToString(CultureInfo.InvariantCulture),
                "--head",
            };
            if (options.Resources is { Count: > 0 } custom)
            {
                if (!ResourceSet.TryParseJson(JsonSerializer.Serialize(custom), out _, out var error)) throw new DriverStartException(error.Replace("--resources", "RayInitOptions.Resources", StringComparison.Ordinal));
                rayletArgs.AddRange(["--resources", JsonSerializer.Serialize(custom)]);
            }
            processes.Add(await NodeProcessLauncher.StartAndWaitReadyAsync(session, Components.Raylet, rayletArgs, supervised: true, s_readyTimeout, environment, cancellationToken).ConfigureAwait(false));
            return new EmbeddedCluster(session, gcsAddress, nodeIp, token, processes);
        }
        catch (NodeStartupException e)
        {
            await StopAsync(session, processes).ConfigureAwait(false);
            throw new DriverStartException("Could not start an embedded RaySharp cluster: " + e.Message);
        }
        catch
        {
            await StopAsync(session, processes).ConfigureAwait(false);
            throw;
        }
    }

    public ValueTask DisposeAsync() => new(StopAsync(_session, TakeProcesses()));

    /// <summary>
    /// At process exit: the same stop, by the processes' recorded pids, with no network and within
    /// <paramref name="budget"/> in all (SIGKILL for whatever is still running then; a killed raylet's workers stop
    /// by themselves as their parent goes).
    /// </summary>
    public void StopNow(TimeSpan budget)
    {
        var started = Stopwatch.GetTimestamp();
        foreach (var (record, process) in Enumerable.Reverse(TakeProcesses()))
        {
            try
            {
                if (!process.HasExited) Posix.Kill(process.Id, Posix.SIGTERM);
                var left = budget - Stopwatch.GetElapsedTime(started);
                if (left <= TimeSpan.Zero || !process.WaitForExit(left)) Posix.Kill(process.Id, Posix.SIGKILL);
                _session.ForgetProcess(record);
            }
            catch (Exception e) when (e is InvalidOperationException or IOException or UnauthorizedAccessException or System.ComponentModel.Win32Exception)
            {
                // Exiting anyway: a process gone already, or a session file that cannot be written, changes nothing.
            }
            finally
            {
                process.Dispose();
            }
        }
    }

    /// <summary>The processes to stop, once: whichever of <see cref="DisposeAsync"/> and <see cref="StopNow"/> comes first stops them.</summary>
    private List<(ProcessRecord Record, Process Process)> TakeProcesses()
    {
        lock (_gate)
        {
            var taken = _processes;
            _processes = [];
            return taken;
        }
    }

    /// <summary>Raylet first (it stops its workers), GCS last; SIGKILL after a grace period.</summary>
    private static async Task StopAsync(SessionDirectory session, List<(ProcessRecord Record, Process Process)> processes)
    {
        foreach (var (record, process) in Enumerable.Reverse(processes))
        {
            if (!process.HasExited) Posix.Kill(process.Id, Posix.SIGTERM);
            using var grace = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            try { await process.WaitForExitAsync(grace.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) { Posix.Kill(process.Id, Posix.SIGKILL); }
            session.ForgetProcess(record);
            process.Dispose();
        }
        processes.Clear();
    }
}
