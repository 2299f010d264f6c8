using Microsoft.Extensions.Logging;
using RaySharp.Autoscaler.Config;
using RaySharp.Autoscaler.Providers;
using RaySharp.Autoscaler.Scaling;
using RaySharp.Common;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Autoscaler.Monitor;

/// <summary>
/// Ray's monitor: the loop on the head (started by <c>raysharp start --head --autoscaling-config</c>, which
/// <c>raysharp up</c> passes) that every <see cref="AutoscalerOptions.UpdateInterval"/> reads the cluster's load from
/// the GCS, hands it to the <see cref="StandardAutoscaler"/>, and writes what it decided for <c>raysharp status</c>.
/// Nodes come and go through the launcher's provider and updater, the same ones <c>up</c> and <c>down</c> use, so the
/// launcher's state lists every node the autoscaler made.
/// </summary>
internal sealed partial class AutoscalerMonitor : IAsyncDisposable
{
    private readonly ClusterConfig _config;
    private readonly ClusterLauncher _launcher;
    private readonly GcsClient _gcs;
    private readonly TimeProvider _time;
    private readonly AutoscalerOptions _options;
    private readonly ILogger _logger;
    private readonly StandardAutoscaler _autoscaler;

    /// <param name="launcherTempDir">Where the launcher keeps the cluster's state (for the process provider, the machine's
    /// own); null: this node's (its logs and known hosts; the node records are the copy <c>up</c> left in the home folder).</param>
    /// <param name="headAddress">The GCS address workers join.</param>
    public AutoscalerMonitor(ClusterConfig config, string? launcherTempDir, GcsClient gcs, string headAddress, string token,
        TimeProvider time, AutoscalerOptions options, ILogger logger)
    {
        _config = config;
        _gcs = gcs;
        _time = time;
        _options = options;
        _logger = logger;
        // On a head that is a machine of its own (the local provider) the node records are the copy `up` sends there,
        // worked on in place, so that the next `up` or `down` reads back what this autoscaler did.
        var stateFile = config.Provider.Type == "process" ? null : ClusterConfigLoader.ExpandHome(ClusterLauncher.BootstrapState);
        _launcher = new ClusterLauncher(config, new LoggedProgress(logger), launcherTempDir, stateFile);
        _autoscaler = new StandardAutoscaler(config, new StoppingNodeProvider(_launcher),
            (node, ct) => _launcher.SetUpWorkerAsync(node, headAddress, token, ct), time, options, DrainAsync);
    }

    /// <summary>Asks the GCS to drain the node; its raylet refuses when it took work since the snapshot was read.</summary>
    private async Task<bool> DrainAsync(NodeLoad node, CancellationToken cancellationToken)
    {
        var reply = await _gcs.DrainNodeAsync(node.NodeId, DrainNodeReason.IdleTermination, $"idle termination of {node.Ip} by the autoscaler",
            cancellationToken).ConfigureAwait(false);
        if (!reply.IsAccepted) LogDrainRefused(_logger, node.NodeId, node.Ip, reply.RejectionReasonMessage);
        return reply.IsAccepted;
    }

    public AutoscalerSummary Summary => _autoscaler.Summary;

    /// <summary>Ticks until <paramref name="stopping"/>; a tick that fails is logged and the next one tries again.</summary>
    public async Task RunAsync(CancellationToken stopping)
    {
        LogStarted(_logger, _config.ClusterName, _config.Provider.Type, _options.UpdateInterval.TotalSeconds);
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                await TickAsync(stopping).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                LogTickFailed(_logger, e.Message);
            }
            try { await Task.Delay(_options.UpdateInterval, _time, stopping).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
        }
    }

    private async Task TickAsync(CancellationToken stopping)
    {
        var nodes = await _gcs.GetAllNodesAsync(aliveOnly: false, stopping).ConfigureAwait(false);
        var request = await AutoscalerKv.GetResourceRequestAsync(_gcs, stopping).ConfigureAwait(false);
        var groups = (await _gcs.PlacementGroups.GetAllPlacementGroupAsync(new GetAllPlacementGroupRequest(),
            deadline: DateTime.UtcNow.AddSeconds(10), cancellationToken: stopping).ConfigureAwait(false)).PlacementGroups;
        var providerNodes = await _launcher.Provider.NonTerminatedNodesAsync(stopping).ConfigureAwait(false);
        var snapshot = GcsLoad.Snapshot(_config, nodes, providerNodes, request, _time.GetUtcNow(), groups);
        var update = await _autoscaler.UpdateAsync(snapshot, stopping).ConfigureAwait(false);
        foreach (var (type, count) in update.Launched) LogLaunched(_logger, count, type);
        foreach (var id in update.Terminated) LogTerminated(_logger, id);
        await AutoscalerKv.PutStatusAsync(_gcs, _autoscaler.Summary.Format(), stopping).ConfigureAwait(false);
        // What drivers' infeasible warnings check a shape against: the types with room left under their max_workers.
        var byType = providerNodes.Where(n => !n.IsHead).GroupBy(n => n.Tag(NodeTags.NodeType) ?? "").ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        var launchable = _config.WorkerTypes
            .Where(t => t.Value.Resources.Count > 0 && byType.GetValueOrDefault(t.Key) < t.Value.MaxWorkers && providerNodes.Count(n => !n.IsHead) < _config.MaxWorkers)
            .ToDictionary(t => t.Key, t => (IReadOnlyDictionary<string, double>)t.Value.Resources, StringComparer.Ordinal);
        await AutoscalerKv.PutLaunchableTypesAsync(_gcs, launchable, stopping).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        await _autoscaler.WhenSetupsDoneAsync().WaitAsync(TimeSpan.FromSeconds(5)).ContinueWith(_ => { }, TaskScheduler.Default).ConfigureAwait(false);
        await _autoscaler.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>The updater's progress, as log lines (the monitor has no terminal).</summary>
    private sealed partial class LoggedProgress(ILogger logger) : Updater.IUpdateProgress
    {
        public void Report(string node, string status, string? detail = null) => LogProgress(logger, node, status, detail ?? "");

        [LoggerMessage(EventId = 1004, Level = LogLevel.Information, Message = "Node {Node}: {Status} {Detail}")]
        private static partial void LogProgress(ILogger logger, string node, string status, string detail);
    }

    [LoggerMessage(EventId = 1000, Level = LogLevel.Information, Message = "Autoscaler of cluster {Cluster} ({Provider} provider) running, a tick every {Seconds} s")]
    private static partial void LogStarted(ILogger logger, string cluster, string provider, double seconds);

    [LoggerMessage(EventId = 1001, Level = LogLevel.Warning, Message = "Autoscaler tick failed: {Message}; trying again next tick")]
    private static partial void LogTickFailed(ILogger logger, string message);

    [LoggerMessage(EventId = 1002, Level = LogLevel.Information, Message = "Launching {Count} node(s) of type {Type}")]
    private static partial void LogLaunched(ILogger logger, int count, string type);

    [LoggerMessage(EventId = 1005, Level = LogLevel.Information, Message = "Node {NodeId} ({Ip}) refused to drain, kept this tick: {Reason}")]
    private static partial void LogDrainRefused(ILogger logger, string nodeId, string ip, string reason);

    [LoggerMessage(EventId = 1003, Level = LogLevel.Information, Message = "Terminated node {Node}")]
    private static partial void LogTerminated(ILogger logger, string node);
}
