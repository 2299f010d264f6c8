using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs;

/// <summary>
/// Checks every alive raylet once a period and declares a node dead after a run of consecutive failures. Time comes
/// from an injected <see cref="TimeProvider"/> so failure detection is tested without sleeping.
/// </summary>
internal sealed partial class GcsHealthCheckManager : IAsyncDisposable
{
    /// <summary>One health check: completes when the node answered, throws (or is cancelled) when it did not.</summary>
    public delegate Task CheckNode(NodeInfo node, CancellationToken cancellationToken);

    private readonly GcsServerOptions _options;
    private readonly TimeProvider _time;
    private readonly CheckNode _check;
    private readonly Func<string, string, Task> _markDead;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, (CancellationTokenSource Stop, Task Loop)> _watched = new(StringComparer.Ordinal);

    public GcsHealthCheckManager(GcsServerOptions options, TimeProvider time, CheckNode check, Func<string, string, Task> markDead, ILogger<GcsHealthCheckManager> logger)
    {
        _options = options;
        _time = time;
        _check = check;
        _markDead = markDead;
        _logger = logger;
    }

    public IReadOnlyCollection<string> WatchedNodes => _watched.Keys.ToList();

    public void AddNode(NodeInfo node)
    {
        var stop = new CancellationTokenSource();
        if (_watched.TryAdd(node.NodeId, (stop, Task.CompletedTask)))
        {
            // Started inline so the first wait is armed before AddNode returns (deterministic under a fake clock).
            _watched[node.NodeId] = (stop, WatchAsync(node, stop.Token));
        }
        else
        {
            stop.Dispose();
        }
    }

    public void RemoveNode(string nodeId)
    {
        if (_watched.TryRemove(nodeId, out var entry)) entry.Stop.Cancel();
    }

    private async Task WatchAsync(NodeInfo node, CancellationToken stop)
    {
        var misses = 0;
        try
        {
            await Task.Delay(_options.EffectiveInitialDelay, _time, stop).ConfigureAwait(false);
            while (!stop.IsCancellationRequested)
            {
                string? failure = null;
                using (var attempt = new CancellationTokenSource(_options.EffectiveHealthCheckTimeout, _time))
                using (var linked = CancellationTokenSource.CreateLinkedTokenSource(attempt.Token, stop))
                {
                    try
                    {
                        await _check(node, linked.Token).ConfigureAwait(false);
                    }
                    catch (Exception e) when (!stop.IsCancellationRequested)
                    {
                        failure = e switch
                        {
                            OperationCanceledException => $"no answer within {_options.EffectiveHealthCheckTimeout.TotalMilliseconds:0} ms",
                            Grpc.Core.RpcException r => $"{r.StatusCode}: {r.Status.Detail} {r.Status.DebugException?.Message}".TrimEnd(),
                            _ => e.Message,
                        };
                    }
                }
                if (failure is null)
                {
                    misses = 0;
                }
                else if (++misses >= _options.HealthCheckFailureThreshold)
                {
                    LogNodeFailed(_logger, node.NodeId, misses, failure);
                    _watched.TryRemove(node.NodeId, out _);
                    await _markDead(node.NodeId, $"health check failed {misses} times in a row (last: {failure})").ConfigureAwait(false);
                    return;
                }
                else
                {
                    LogMissed(_logger, node.NodeId, misses, _options.HealthCheckFailureThreshold, failure);
                }
                await Task.Delay(_options.HealthCheckPeriod, _time, stop).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        var loops = _watched.Values.ToList();
        _watched.Clear();
        foreach (var (s, _) in loops) await s.CancelAsync().ConfigureAwait(false);
        await Task.WhenAll(loops.Select(l => l.Loop)).ConfigureAwait(false);
    }

    [LoggerMessage(EventId = 210, Level = LogLevel.Debug, Message = "Health check of node {NodeId} missed ({Misses}/{Threshold}): {Failure}")]
    private static partial void LogMissed(ILogger logger, string nodeId, int misses, int threshold, string failure);

    [LoggerMessage(EventId = 211, Level = LogLevel.Warning, Message = "Node {NodeId} failed {Misses} health checks in a row (last: {Failure})")]
    private static partial void LogNodeFailed(ILogger logger, string nodeId, int misses, string failure);
}
