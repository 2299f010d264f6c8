using System.Collections.Concurrent;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using RaySharp.Gcs.Storage;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs;

/// <summary>The node table: who is in the cluster, where, with what resources, alive or dead.</summary>
internal sealed partial class GcsNodeManager(IGcsStore store, GcsPublisher publisher, TimeProvider time, ILogger<GcsNodeManager> logger)
{
    private readonly ConcurrentDictionary<string, NodeInfo> _nodes = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();

    /// <summary>Raised after a node joined (the health checker starts watching it).</summary>
    public event Action<NodeInfo>? NodeAdded;

    /// <summary>Raised after a node was marked dead, for whatever reason.</summary>
    public event Action<NodeInfo>? NodeRemoved;

    public async Task<bool> RegisterAsync(NodeInfo info)
    {
        NodeInfo row;
        lock (_gate)
        {
            if (_nodes.TryGetValue(info.NodeId, out var existing) && existing.State == NodeState.Dead)
                return false; // a node that died comes back with a new id, never the old one
            row = info.Clone();
            row.State = NodeState.Alive;
            row.StartTimeMs = time.GetUtcNow().ToUnixTimeMilliseconds();
            if (row.ResourcesAvailable.Count == 0) row.ResourcesAvailable.Add(row.ResourcesTotal);
            _nodes[row.NodeId] = row;
        }
        await store.PutAsync(GcsTables.Nodes, row.NodeId, row.ToByteArray()).ConfigureAwait(false);
        LogNodeRegistered(logger, row.NodeId, row.NodeIpAddress, row.NodeManagerPort, Common.ResourceSet.Describe(row.ResourcesTotal));
        publisher.Publish(Channel.NodeInfo, m => m.NodeInfo = row.Clone());
        NodeAdded?.Invoke(row);
        return true;
    }

    /// <summary>
    /// Takes the node table over from the store (a GCS restart). Alive nodes are health-checked again from now on:
    /// their raylets kept running and reconnect by themselves; one that died meanwhile misses its checks and is marked dead.
    /// </summary>
    public async Task LoadAsync()
    {
        var alive = new List<NodeInfo>();
        foreach (var (_, bytes) in await store.GetAllAsync(GcsTables.Nodes).ConfigureAwait(false))
        {
            var row = NodeInfo.Parser.ParseFrom(bytes);
            lock (_gate) _nodes[row.NodeId] = row;
            if (row.State == NodeState.Alive) alive.Add(row);
        }
        foreach (var row in alive) NodeAdded?.Invoke(row);
    }

    /// <summary>Marks a node dead; false when it was unknown or dead already.</summary>
    public async Task<bool> MarkDeadAsync(string nodeId, string reason)
    {
        NodeInfo row;
        lock (_gate)
        {
            if (!_nodes.TryGetValue(nodeId, out var existing) || existing.State == NodeState.Dead) return false;
            row = existing.Clone();
            row.State = NodeState.Dead;
            row.EndTimeMs = time.GetUtcNow().ToUnixTimeMilliseconds();
            row.DeathReason = reason;
            row.ResourcesAvailable.Clear();
            row.PendingDemands.Clear();
            row.InfeasibleDemands.Clear();
            _nodes[nodeId] = row;
        }
        await store.PutAsync(GcsTables.Nodes, row.NodeId, row.ToByteArray()).ConfigureAwait(false);
        LogNodeDead(logger, nodeId, row.NodeIpAddress, reason);
        publisher.Publish(Channel.NodeInfo, m => m.NodeInfo = row.Clone());
        NodeRemoved?.Invoke(row);
        return true;
    }

    /// <summary>Records a raylet's latest resource view; false when the node is not alive (it must then stop).</summary>
    public bool UpdateResourceUsage(ReportResourceUsageRequest report)
    {
        lock (_gate)
        {
            if (!_nodes.TryGetValue(report.NodeId, out var existing) || existing.State != NodeState.Alive) return false;
            var row = existing.Clone();
            row.ResourcesAvailable.Clear();
            row.ResourcesAvailable.Add(report.ResourcesAvailable);
            if (report.ResourcesTotal.Count > 0)
            {
                row.ResourcesTotal.Clear();
                row.ResourcesTotal.Add(report.ResourcesTotal);
            }
            row.PendingDemands.Clear();
            row.PendingDemands.Add(report.PendingDemands);
            row.InfeasibleDemands.Clear();
            row.InfeasibleDemands.Add(report.InfeasibleDemands);
            row.IdleDurationMs = report.IdleDurationMs;
            row.PrimaryObjectCount = report.PrimaryObjectCount;
            // Draining is never undone, so a report sent before the drain was accepted cannot clear the mark.
            row.IsDraining |= report.IsDraining;
            _nodes[report.NodeId] = row;
            return true;
        }
    }

    /// <summary>
    /// Marks a node draining once its raylet accepted the drain, and publishes it, so that raylets following the node
    /// table stop spilling work to it at once rather than at their next refresh.
    /// </summary>
    public async Task MarkDrainingAsync(string nodeId, string reason)
    {
        NodeInfo row;
        lock (_gate)
        {
            if (!_nodes.TryGetValue(nodeId, out var existing) || existing.State != NodeState.Alive || existing.IsDraining) return;
            row = existing.Clone();
            row.IsDraining = true;
            _nodes[nodeId] = row;
        }
        await store.PutAsync(GcsTables.Nodes, row.NodeId, row.ToByteArray()).ConfigureAwait(false);
        LogNodeDraining(logger, nodeId, row.NodeIpAddress, reason);
        publisher.Publish(Channel.NodeInfo, m => m.NodeInfo = row.Clone());
    }

    public NodeInfo? Get(string nodeId) => _nodes.TryGetValue(nodeId, out var n) ? n : null;

    public IReadOnlyList<NodeInfo> GetAll(bool aliveOnly) =>
        _nodes.Values.Where(n => !aliveOnly || n.State == NodeState.Alive).OrderBy(n => n.StartTimeMs).ToList();

    [LoggerMessage(EventId = 200, Level = LogLevel.Information, Message = "Node {NodeId} registered from {Ip}:{Port} with {Resources}")]
    private static partial void LogNodeRegistered(ILogger logger, string nodeId, string ip, int port, string resources);

    [LoggerMessage(EventId = 202, Level = LogLevel.Information, Message = "Node {NodeId} ({Ip}) is draining: {Reason}")]
    private static partial void LogNodeDraining(ILogger logger, string nodeId, string ip, string reason);

    [LoggerMessage(EventId = 201, Level = LogLevel.Warning, Message = "Node {NodeId} ({Ip}) is dead: {Reason}")]
    private static partial void LogNodeDead(ILogger logger, string nodeId, string ip, string reason);
}
