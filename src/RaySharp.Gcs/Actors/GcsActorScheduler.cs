using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using RaySharp.Common;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs.Actors;

/// <summary>
/// Places actors, as Ray's GcsActorScheduler does: chooses where (<see cref="ActorNodeSelector"/>), leases a worker
/// from a raylet (following spillback, as task owners do) or a place in a lightweight host, runs the actor's factory
/// there and watches the worker. A dedicated actor's lease is never returned while it lives, so the worker is its
/// own. Every outcome is reported to the directory as a transition, tagged with the incarnation being placed: a
/// placement outrun by a kill or a restart finds its transition refused and cleans up after itself.
/// </summary>
internal sealed partial class GcsActorScheduler(GcsActorRuntime runtime, GcsActorDirectory directory, LightweightActorHostPool hosts, ActorNodeSelector selector)
{
    /// <summary>Longest pause between placement attempts that failed because a node went away under them.</summary>
    private static readonly TimeSpan s_maxPlacementBackoff = TimeSpan.FromSeconds(2);

    /// <summary>Places this incarnation of the actor, trying again while nodes are missing; ends once it is placed, dead or outrun.</summary>
    public async Task PlaceAsync(ActorEntry entry, int incarnation)
    {
        var pause = TimeSpan.FromMilliseconds(100);
        while (true)
        {
            try
            {
                if (Outrun(entry, incarnation)) return;
                if (entry.Spec.Info.Lightweight) await PlaceLightweightAsync(entry, incarnation).ConfigureAwait(false);
                else await PlaceDedicatedAsync(entry, incarnation).ConfigureAwait(false);
                return;
            }
            catch (Exception e) when (!runtime.IsStopping && IsTransient(e))
            {
                // The node it was being placed on died (or none is up yet): nodes come and go, so try again, as Ray
                // keeps such an actor pending rather than dead.
                if (Outrun(entry, incarnation)) return;
                LogPlacementRetry(runtime.Logger, entry.Info.ActorId, e.Message);
                try { await Task.Delay(pause, runtime.Time, runtime.Stopping).ConfigureAwait(false); }
                catch (OperationCanceledException) { return; }
                pause = TimeSpan.FromMilliseconds(Math.Min(pause.TotalMilliseconds * 2, s_maxPlacementBackoff.TotalMilliseconds));
            }
            catch (Exception e)
            {
                PlacementFailed(entry, incarnation, e);
                return;
            }
        }
    }

    /// <summary>Watches the connection to a dedicated actor's worker: when it breaks, the worker is gone.</summary>
    public void Watch(ActorEntry entry, int incarnation, CoreWorkerClient connection, WorkerAddress address) =>
        runtime.Observe(MonitorAsync(entry, incarnation, connection, address), "watching actor " + entry.Info.ActorId);

    private bool Outrun(ActorEntry entry, int incarnation)
    {
        lock (directory.Gate) return entry.Incarnation != incarnation || entry.Info.State == ActorState.ActorDead;
    }

    /// <summary>A failure that says a node or process went away, not that the actor can never be placed.</summary>
    private static bool IsTransient(Exception e) => e switch
    {
        RpcException r => r.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded or StatusCode.Aborted or StatusCode.Cancelled,
        IOException or System.Net.Sockets.SocketException or Rpc.Transport.RemoteCallException or TimeoutException => true,
        NodeUnavailableException => true,
        _ => false,
    };

    private void PlacementFailed(ActorEntry entry, int incarnation, Exception e)
    {
        if (runtime.IsStopping) return;
        var reason = e is RpcException r ? $"{r.StatusCode}: {r.Status.Detail}" : e.Message;
        lock (directory.Gate)
        {
            if (entry.Incarnation == incarnation) directory.Transition(entry, ActorTransition.Dead($"it could not be placed: {reason}"));
        }
    }

    private static RequestWorkerLeaseRequest LeaseRequest(ActorEntry entry)
    {
        var request = new RequestWorkerLeaseRequest
        {
            LeaseRequestId = UniqueId.New(),
            Strategy = entry.Spec.Strategy ?? new SchedulingStrategy(),
            OwnerWorkerId = entry.Info.ActorId,
            // The raylet takes the lease back when the job ends, should the GCS not (it died meanwhile); a detached
            // actor outlives its job, so its lease belongs to none.
            JobId = entry.Info.Detached ? "" : entry.Info.JobId,
        };
        request.Resources.Add(entry.Spec.Resources);
        request.PlacementResources.Add(entry.Spec.PlacementResources);
        return request;
    }

    private async Task PlaceDedicatedAsync(ActorEntry entry, int incarnation)
    {
        var (lease, raylet) = await RayletLeaseClient.RequestAsync(runtime.Channels, selector.FirstRaylet(entry.Spec), () => LeaseRequest(entry),
            cancellationToken: runtime.Stopping).ConfigureAwait(false);
        var address = lease.WorkerAddress;
        CoreWorkerClient connection;
        try
        {
            connection = await CoreWorkerClient.ConnectAsync(address, runtime.Output, runtime.Stopping).ConfigureAwait(false);
        }
        catch
        {
            await RayletLeaseClient.ReturnAsync(runtime.Channels, raylet, lease.LeaseId, disconnect: true).ConfigureAwait(false);
            throw;
        }
        bool abandon;
        lock (directory.Gate)
        {
            abandon = entry.Incarnation != incarnation || entry.KillRequested || entry.Info.State == ActorState.ActorDead;
            if (!abandon)
            {
                entry.LeaseId = entry.Info.LeaseId = lease.LeaseId;
                entry.RayletAddress = entry.Info.RayletAddress = raylet;
                entry.Connection = connection;
            }
        }
        if (abandon)
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            await RayletLeaseClient.ReturnAsync(runtime.Channels, raylet, lease.LeaseId, disconnect: true).ConfigureAwait(false);
            lock (directory.Gate)
            {
                if (entry.Incarnation == incarnation) directory.Transition(entry, ActorTransition.Dead(entry.KillReason ?? "killed", kill: true));
            }
            return;
        }
        Watch(entry, incarnation, connection, address);
        var creation = entry.Spec.Creation.Clone();
        creation.ActorId = entry.Info.ActorId;
        creation.GpuIds.Clear();
        creation.GpuIds.Add(lease.GpuIds);
        creation.DedicatedWorker = true;
        var error = await CreateAsync(connection, creation).ConfigureAwait(false);
        lock (directory.Gate)
        {
            if (entry.Incarnation != incarnation || entry.Info.State == ActorState.ActorDead) return;
            if (error is null)
            {
                directory.Transition(entry, ActorTransition.Alive(address));
                return;
            }
            directory.Transition(entry, ActorTransition.Dead($"its constructor threw {error.ExceptionType}: {error.Message}", error, kill: true));
        }
        // A failed constructor leaves nothing to keep: stop the worker.
        await RayletLeaseClient.ReturnAsync(runtime.Channels, raylet, lease.LeaseId, disconnect: true).ConfigureAwait(false);
    }

    private async Task PlaceLightweightAsync(ActorEntry entry, int incarnation)
    {
        var host = await hosts.AcquireAsync(entry, selector.LightweightNode(entry.Spec)).ConfigureAwait(false);
        var creation = entry.Spec.Creation.Clone();
        creation.ActorId = entry.Info.ActorId;
        TaskError? error;
        try
        {
            error = await CreateAsync(host.Connection, creation).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or Rpc.Transport.RemoteCallException)
        {
            return; // the host died: its monitor restarts or buries this actor
        }
        lock (directory.Gate)
        {
            if (entry.Incarnation != incarnation || entry.Info.State == ActorState.ActorDead)
            {
                // Killed while its constructor ran: drop what the host built.
                if (error is null) hosts.Drop(host, entry.Info.ActorId, $"dropping killed actor {entry.Info.ActorId} from its host");
                return;
            }
            if (error is null)
            {
                directory.Transition(entry, ActorTransition.Alive(host.Address));
                return;
            }
            LightweightActorHostPool.Detach(entry);
            directory.Transition(entry, ActorTransition.Dead($"its constructor threw {error.ExceptionType}: {error.Message}", error));
        }
    }

    /// <summary>Runs the factory on the worker; null on success, else the exception it threw.</summary>
    private static Task<TaskError?> CreateAsync(CoreWorkerClient connection, PushTaskRequest creation) => connection.CreateActorAsync(creation);

    private async Task MonitorAsync(ActorEntry entry, int incarnation, CoreWorkerClient connection, WorkerAddress address)
    {
        await connection.Completion.ConfigureAwait(false);
        string? leaseId, raylet;
        lock (directory.Gate)
        {
            if (entry.Incarnation != incarnation) return;
            (leaseId, raylet) = (entry.LeaseId, entry.RayletAddress);
            entry.Connection = null;
            entry.LeaseId = null;
            entry.Info.LeaseId = entry.Info.RayletAddress = "";
            directory.WorkerLost(entry, entry.LostCause ?? $"its worker process (pid {address.Pid} on {address.IpAddress}) died");
            entry.LostCause = null;
        }
        if (leaseId is not null && raylet is not null && !runtime.IsStopping)
            await RayletLeaseClient.ReturnAsync(runtime.Channels, raylet, leaseId, disconnect: true).ConfigureAwait(false);
    }

    [LoggerMessage(EventId = 309, Level = LogLevel.Warning, Message = "Placing actor {ActorId} failed ({Reason}); trying again")]
    private static partial void LogPlacementRetry(ILogger logger, string actorId, string reason);
}
