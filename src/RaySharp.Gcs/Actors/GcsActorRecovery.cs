using Microsoft.Extensions.Logging;
using RaySharp.Common;
using RaySharp.Gcs.Storage;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs.Actors;

/// <summary>
/// Takes the actor directory over from the store after a GCS restart (on Redis). Actor workers outlive the GCS: the
/// live ones are connected to again and watched as before, so their callers never notice; one whose worker is gone
/// restarts within its budget. Actors that were being placed are placed again (a lease granted to the GCS that died
/// in that instant stays with its raylet until the worker is reclaimed).
/// </summary>
internal sealed partial class GcsActorRecovery(GcsActorRuntime runtime, GcsActorDirectory directory, GcsActorScheduler scheduler, LightweightActorHostPool hosts)
{
    public async Task LoadAsync()
    {
        var store = runtime.Store;
        var specs = (await store.GetAllAsync(GcsTables.ActorSpecs).ConfigureAwait(false))
            .ToDictionary(kv => kv.Key, kv => RegisterActorRequest.Parser.ParseFrom(kv.Value), StringComparer.Ordinal);
        var hostRecords = (await store.GetAllAsync(GcsTables.ActorHosts).ConfigureAwait(false))
            .Select(kv => ActorHostRecord.Parser.ParseFrom(kv.Value)).ToList();
        var rows = await store.GetAllAsync(GcsTables.Actors).ConfigureAwait(false);
        var reattach = new List<ActorEntry>();
        var place = new List<ActorEntry>();
        var dead = new List<ActorEntry>();
        var lightweight = new Dictionary<string, List<ActorEntry>>(StringComparer.Ordinal);
        lock (directory.Gate)
        {
            foreach (var (id, bytes) in rows)
            {
                var info = ActorInfo.Parser.ParseFrom(bytes);
                var spec = specs.GetValueOrDefault(id);
                var entry = directory.Restore(info, spec ?? new RegisterActorRequest { Info = info });
                if (info.State == ActorState.ActorDead)
                {
                    dead.Add(entry);
                }
                else if (spec is null)
                {
                    directory.Transition(entry, ActorTransition.Dead("its registration was not found in the control store after a GCS restart"));
                }
                else if (info.State == ActorState.ActorAlive && info.Address is { } address)
                {
                    if (info.Lightweight)
                    {
                        var key = NodeAddress.Format(address.IpAddress, address.Port);
                        if (!lightweight.TryGetValue(key, out var list)) lightweight[key] = list = [];
                        list.Add(entry);
                    }
                    else
                    {
                        (entry.LeaseId, entry.RayletAddress) = (info.LeaseId, info.RayletAddress);
                        reattach.Add(entry);
                    }
                }
                else
                {
                    place.Add(entry);
                }
            }
            // Counted oldest death first, which also drops what is beyond the bound (it may have been lowered).
            foreach (var entry in dead.OrderBy(e => e.Info.EndTimeMs)) directory.Bury(entry);
        }
        await Task.WhenAll(reattach.Select(ReattachAsync)
            .Concat(hostRecords.Select(h => ReattachHostAsync(h, lightweight.GetValueOrDefault(NodeAddress.Format(h.Address.IpAddress, h.Address.Port)) ?? []))))
            .ConfigureAwait(false);
        foreach (var entry in place) runtime.Observe(scheduler.PlaceAsync(entry, entry.Incarnation), "placing actor " + entry.Info.ActorId);
    }

    private async Task ReattachAsync(ActorEntry entry)
    {
        var address = entry.Info.Address;
        var incarnation = entry.Incarnation;
        CoreWorkerClient connection;
        try
        {
            connection = await CoreWorkerClient.ConnectAsync(address, runtime.Output, runtime.Stopping).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            string? leaseId, raylet;
            lock (directory.Gate)
            {
                (leaseId, raylet) = (entry.LeaseId, entry.RayletAddress);
                entry.LeaseId = null;
                entry.Info.LeaseId = entry.Info.RayletAddress = "";
                if (entry.Incarnation == incarnation)
                    directory.WorkerLost(entry, $"its worker process (pid {address.Pid} on {address.IpAddress}) was gone when the GCS restarted");
            }
            if (leaseId is { Length: > 0 } && raylet is { Length: > 0 })
            {
                try { await RayletLeaseClient.ReturnAsync(runtime.Channels, raylet, leaseId, disconnect: true).ConfigureAwait(false); }
                catch (Exception) { /* its raylet is gone too */ }
            }
            return;
        }
        lock (directory.Gate) entry.Connection = connection;
        LogReattached(runtime.Logger, $"actor {entry.Info.ActorId}", address.IpAddress, address.Pid);
        scheduler.Watch(entry, incarnation, connection, address);
    }

    private async Task ReattachHostAsync(ActorHostRecord record, List<ActorEntry> actors)
    {
        CoreWorkerClient connection;
        try
        {
            connection = await CoreWorkerClient.ConnectAsync(record.Address, runtime.Output, runtime.Stopping).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            lock (directory.Gate)
            {
                foreach (var entry in actors)
                    directory.WorkerLost(entry, $"its host worker process (pid {record.Address.Pid} on {record.Address.IpAddress}) was gone when the GCS restarted");
            }
            try { await hosts.ForgetAsync(record.RayletAddress, record.LeaseId).ConfigureAwait(false); }
            catch (Exception) { /* its raylet is gone too */ }
            return;
        }
        hosts.Adopt(record, connection, actors);
        LogReattached(runtime.Logger, $"{actors.Count} lightweight actor(s)", record.Address.IpAddress, record.Address.Pid);
    }

    [LoggerMessage(EventId = 308, Level = LogLevel.Information, Message = "After the GCS restart, found {What} again on {Ip} (pid {Pid})")]
    private static partial void LogReattached(ILogger logger, string what, string ip, int pid);
}
