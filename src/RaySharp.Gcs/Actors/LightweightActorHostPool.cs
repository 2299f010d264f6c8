using Google.Protobuf;
using Microsoft.Extensions.Logging;
using RaySharp.Common;
using RaySharp.Gcs.Storage;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs.Actors;

/// <summary>
/// The worker processes that host lightweight actors, up to <see cref="GcsServerOptions.LightweightActorsPerWorker"/>
/// each: one zero-resource lease per host, started on demand (one start per node at a time, however many actors
/// wait for it) and recorded in the store so that a restarted GCS finds its hosts again. A host's death is each of
/// its actors' worker loss. Its state is guarded by the directory's lock, as an actor's host and the host's actors
/// change together.
/// </summary>
internal sealed partial class LightweightActorHostPool(GcsActorRuntime runtime, GcsActorDirectory directory)
{
    private readonly List<ActorHost> _hosts = [];
    private readonly Dictionary<string, Task<ActorHost>> _starting = new(StringComparer.Ordinal);

    /// <summary>A host on <paramref name="nodeId"/> with room, the actor counted in it (and its host set) before it returns.</summary>
    public async Task<ActorHost> AcquireAsync(ActorEntry entry, string nodeId)
    {
        while (true)
        {
            Task<ActorHost> starting;
            lock (directory.Gate)
            {
                var free = _hosts.FirstOrDefault(h => h.NodeId == nodeId && !h.Lost && h.Actors.Count < runtime.Options.LightweightActorsPerWorker);
                if (free is not null)
                {
                    free.Actors.Add(entry.Info.ActorId);
                    entry.Host = free;
                    return free;
                }
                if (!_starting.TryGetValue(nodeId, out starting!))
                    _starting[nodeId] = starting = StartAsync(nodeId);
            }
            try
            {
                await starting.ConfigureAwait(false);
            }
            finally
            {
                lock (directory.Gate) if (_starting.TryGetValue(nodeId, out var s) && s == starting) _starting.Remove(nodeId);
            }
        }
    }

    /// <summary>Under the lock: takes the actor out of its host (it is killed, restarted elsewhere or failed to build); the host it was in, if any.</summary>
    public static ActorHost? Detach(ActorEntry entry)
    {
        var host = entry.Host;
        host?.Actors.Remove(entry.Info.ActorId);
        entry.Host = null;
        return host;
    }

    /// <summary>Tells a host to drop an actor it built (killed, or its incarnation is over).</summary>
    public void Drop(ActorHost host, string actorId, string what) =>
        runtime.Observe(host.Connection.KillActorAsync(actorId), what);

    /// <summary>Under the lock: notes why the hosts of a dead node are lost; their connections, for the caller to close.</summary>
    public IEnumerable<CoreWorkerClient> OnNodeDead(string nodeId, string cause)
    {
        var onNode = _hosts.Where(h => h.NodeId == nodeId).ToList();
        foreach (var h in onNode) h.LostCause = cause;
        return onNode.Select(h => h.Connection);
    }

    /// <summary>Under the lock.</summary>
    public IEnumerable<CoreWorkerClient> Connections => _hosts.Select(h => h.Connection);

    /// <summary>After a GCS restart: a host found again, with the actors whose rows name it.</summary>
    public void Adopt(ActorHostRecord record, CoreWorkerClient connection, IReadOnlyList<ActorEntry> actors)
    {
        var host = new ActorHost(record.NodeId, record.RayletAddress, record.LeaseId, record.Address, connection);
        lock (directory.Gate)
        {
            _hosts.Add(host);
            foreach (var entry in actors)
            {
                host.Actors.Add(entry.Info.ActorId);
                entry.Host = host;
            }
        }
        runtime.Observe(MonitorAsync(host), "watching a lightweight actor host");
    }

    /// <summary>Forgets a host that is gone: its row, and its lease (the raylet stops the worker if it still runs).</summary>
    public Task ForgetAsync(string rayletAddress, string leaseId)
    {
        runtime.Observe(runtime.Store.DeleteAsync(GcsTables.ActorHosts, leaseId), "removing the row of a lightweight actor host");
        return RayletLeaseClient.ReturnAsync(runtime.Channels, rayletAddress, leaseId, disconnect: true);
    }

    private async Task<ActorHost> StartAsync(string nodeId)
    {
        var node = runtime.Nodes.Get(nodeId) ?? throw new NodeUnavailableException($"node {nodeId} is gone");
        var raylet = NodeAddress.Format(node.NodeIpAddress, node.NodeManagerPort);
        // A host holds nothing itself: each lightweight actor asks for no CPU or GPU.
        var (lease, _) = await RayletLeaseClient.RequestAsync(runtime.Channels, raylet,
            () => new RequestWorkerLeaseRequest { LeaseRequestId = UniqueId.New(), Strategy = new SchedulingStrategy() },
            grantOrReject: true, cancellationToken: runtime.Stopping).ConfigureAwait(false);
        var address = lease.WorkerAddress;
        var connection = await CoreWorkerClient.ConnectAsync(address, runtime.Output, runtime.Stopping).ConfigureAwait(false);
        var host = new ActorHost(nodeId, raylet, lease.LeaseId, address, connection);
        lock (directory.Gate) _hosts.Add(host);
        await runtime.Store.PutAsync(GcsTables.ActorHosts, host.LeaseId,
            new ActorHostRecord { NodeId = nodeId, RayletAddress = raylet, LeaseId = lease.LeaseId, Address = address }.ToByteArray()).ConfigureAwait(false);
        LogHostStarted(runtime.Logger, address.IpAddress, address.Pid);
        runtime.Observe(MonitorAsync(host), "watching a lightweight actor host");
        return host;
    }

    private async Task MonitorAsync(ActorHost host)
    {
        await host.Connection.Completion.ConfigureAwait(false);
        lock (directory.Gate)
        {
            host.Lost = true;
            _hosts.Remove(host);
            foreach (var id in host.Actors)
            {
                if (!directory.TryGet(id, out var entry) || entry.Info.State == ActorState.ActorDead) continue;
                entry.Host = null;
                directory.WorkerLost(entry, host.LostCause ?? $"its host worker process (pid {host.Address.Pid} on {host.Address.IpAddress}) died");
            }
            host.Actors.Clear();
        }
        if (!runtime.IsStopping) await ForgetAsync(host.RayletAddress, host.LeaseId).ConfigureAwait(false);
    }

    [LoggerMessage(EventId = 305, Level = LogLevel.Information, Message = "Started a lightweight actor host on {Ip} (pid {Pid})")]
    private static partial void LogHostStarted(ILogger logger, string ip, int pid);
}
