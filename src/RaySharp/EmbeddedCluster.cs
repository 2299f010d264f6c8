using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using RaySharp.Common;

namespace RaySharp;

/// <summary>
/// The local cluster <c>Ray.Init()</c> starts when there is none: the same GCS, raylet and worker processes as
/// <c>raysharp start --head</c>, but supervised by the driver: they stop on <see cref="DisposeAsync"/>, and if the
/// driver dies without disposing (a crash, SIGKILL) their stdin pipes close and they stop by themselves.
/// </summary>
internal sealed class EmbeddedCluster : IAsyncDisposable
{
    private static readonly TimeSpan s_readyTimeout = TimeSpan.FromSeconds(30);
    private readonly SessionDirectory _session;
    private readonly List<(ProcessRecord Record, Process Process)> _processes;

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

    public static async Task<EmbeddedCluster> StartAsync(RayInitOptions options, CancellationToken cancellationToken)
    {
        var root = SessionDirectory.ResolveRoot(options.TempDir);
        var session = SessionDirectory.Create(root, TimeProvider.System);
        var nodeIp = NodeAddress.DetectNodeIp();
        var port = NodeAddress.FindFreePort();
        var token = options.Token ?? (Environment.GetEnvironmentVariable(ClusterToken.EnvironmentVariable) is { Length: > 0 } given ? given : ClusterToken.Generate());
        if (ClusterToken.Problem(token) is { } problem) throw new RayException($"The cluster token given for the embedded cluster (RayInitOptions.Token or {ClusterToken.EnvironmentVariable}) is not one: {problem}.");
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
                if (!ResourceSet.TryParseJson(JsonSerializer.Serialize(custom), out _, out var error)) throw new RayException(error.Replace("--resources", "RayInitOptions.Resources", StringComparison.Ordinal));
                rayletArgs.AddRange(["--resources", JsonSerializer.Serialize(custom)]);
            }
            processes.Add(await NodeProcessLauncher.StartAndWaitReadyAsync(session, Components.Raylet, rayletArgs, supervised: true, s_readyTimeout, environment, cancellationToken).ConfigureAwait(false));
            return new EmbeddedCluster(session, gcsAddress, nodeIp, token, processes);
        }
        catch (NodeStartupException e)
        {
            await StopAsync(session, processes).ConfigureAwait(false);
            throw new RayException("Could not start an embedded RaySharp cluster: " + e.Message);
        }
        catch
        {
            await StopAsync(session, processes).ConfigureAwait(false);
            throw;
        }
    }

    public ValueTask DisposeAsync() => new(StopAsync(_session, _processes));

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
