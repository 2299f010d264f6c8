using System.Diagnostics;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using RaySharp.Gcs.Storage;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs.Actors;

/// <summary>
/// The actor table and its state machine. PENDING_CREATION → ALIVE → RESTARTING → ALIVE … → DEAD, with every change
/// made by <see cref="Transition"/> under <see cref="Gate"/>: one place to validate it, wake the waiters and queue the
/// row behind the actor's earlier writes, so that the store sees the transitions in order, one awaited write each.
/// Replies that promise durability (a registration, a kill) await <see cref="WrittenAsync"/>.
/// </summary>
internal sealed partial class GcsActorDirectory(GcsServerOptions options, IGcsStore store, TimeProvider time, ILogger logger, Action<ActorEntry, int> restarted)
{
    private readonly Dictionary<string, ActorEntry> _actors = new(StringComparer.Ordinal);
    /// <summary>Each job's dead actors, oldest death first: only the last <see cref="GcsServerOptions.MaxDeadActorsPerJob"/> are kept.</summary>
    private readonly Dictionary<string, Queue<string>> _deadByJob = new(StringComparer.Ordinal);

    /// <summary>
    /// The one lock of the actor state: entries, names, and the placement fields that the scheduler, host pool and
    /// recovery change together with a transition (an actor's host and the host's actor set, say).
    /// </summary>
    public Lock Gate { get; } = new();

    public ActorNames Names { get; } = new();

    /// <summary>Under the lock.</summary>
    public IReadOnlyCollection<ActorEntry> Entries => _actors.Values;

    /// <summary>Under the lock.</summary>
    public bool TryGet(string actorId, out ActorEntry entry) => _actors.TryGetValue(actorId, out entry!);

    public static bool RestartsLeft(ActorInfo info) => info.MaxRestarts == -1 || info.NumRestarts < info.MaxRestarts;

    /// <summary>
    /// Adds a new actor, PENDING_CREATION, and queues its registration and row; or finds the one a retried registration
    /// (or GetIfExists) names, with the reply the first registration got. Throws when the name is a live actor's.
    /// </summary>
    public (ActorEntry Entry, RegisterActorReply? Earlier) Register(RegisterActorRequest request)
    {
        var id = request.Info.ActorId;
        lock (Gate)
        {
            if (_actors.TryGetValue(id, out var known))
                return (known, new RegisterActorReply { ActorId = id, ClassName = known.Info.ClassName });
            if (request.Info.Name.Length > 0 && Names.TryGet(request.Info.Namespace, request.Info.Name, out var existingId)
                && _actors.TryGetValue(existingId, out var existing) && existing.Info.State != ActorState.ActorDead)
            {
                if (!request.GetIfExists)
                {
                    throw new RpcException(new Status(StatusCode.AlreadyExists,
                        $"an actor named '{request.Info.Name}' already exists in namespace '{request.Info.Namespace}' ({existing.Info.ClassName}, {ProtocolNames.Of(existing.Info.State)}); " +
                        "get it with Ray.GetActor, set GetIfExists = true, or choose another name"));
                }
                return (existing, new RegisterActorReply { ActorId = existingId, Existed = true, ClassName = existing.Info.ClassName });
            }
            Names.Claim(request.Info.Namespace, request.Info.Name, id);
            var info = request.Info.Clone();
            info.State = ActorState.ActorPendingCreation;
            info.StartTimeMs = time.GetUtcNow().ToUnixTimeMilliseconds();
            info.Resources.Clear();
            info.Resources.Add(request.PlacementResources.Count > 0 ? request.PlacementResources : request.Resources);
            var entry = new ActorEntry(info, request);
            _actors[id] = entry;
            // The factory and options first, to place the actor again should a restarted GCS find it pending or
            // need to restart it; then its row (a restarted GCS buries a row whose registration it cannot find).
            var spec = request.ToByteArray();
            Enqueue(entry, () => store.PutAsync(GcsTables.ActorSpecs, id, spec), "its registration");
            Persist(entry);
            return (entry, null);
        }
    }

    /// <summary>Under the lock, after a GCS restart: takes a stored row back as it was (no transition, nothing written).</summary>
    public ActorEntry Restore(ActorInfo info, RegisterActorRequest spec)
    {
        Debug.Assert(Gate.IsHeldByCurrentThread);
        var entry = new ActorEntry(info, spec);
        _actors[info.ActorId] = entry;
        if (info.State != ActorState.ActorDead) Names.Claim(info.Namespace, info.Name, info.ActorId);
        return entry;
    }

    public ActorInfo? Get(string actorId)
    {
        lock (Gate) return _actors.TryGetValue(actorId, out var e) ? e.Info.Clone() : null;
    }

    public ActorInfo? GetNamed(string name, string ns)
    {
        lock (Gate)
        {
            return Names.TryGet(ns, name, out var id) && _actors.TryGetValue(id, out var e) && e.Info.State != ActorState.ActorDead
                ? e.Info.Clone()
                : null;
        }
    }

    public List<ActorInfo> List(bool includeDead)
    {
        lock (Gate) return _actors.Values.Where(e => includeDead || e.Info.State != ActorState.ActorDead).Select(e => e.Info.Clone()).ToList();
    }

    /// <summary>The actor's row once it is alive with at least <paramref name="minRestarts"/> restarts, or dead, or when the time is up.</summary>
    public async Task<ActorInfo?> WaitAsync(string actorId, int minRestarts, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var timer = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timer.CancelAfter(timeout);
        while (true)
        {
            Task changed;
            lock (Gate)
            {
                if (!_actors.TryGetValue(actorId, out var e)) return null;
                if (e.Info.State == ActorState.ActorDead || (e.Info.State == ActorState.ActorAlive && e.Info.NumRestarts >= minRestarts)) return e.Info.Clone();
                changed = e.Changed.Task;
            }
            try
            {
                await changed.WaitAsync(timer.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // Dropped meanwhile only as one of its job's oldest dead actors: then there is no row to give.
                lock (Gate) return _actors.TryGetValue(actorId, out var e) ? e.Info.Clone() : null;
            }
        }
    }

    /// <summary>
    /// Under the lock: the one way an actor's state changes. False when the change no longer applies: the actor is
    /// DEAD (final, so a late report about it changes nothing) or a kill was asked (it wins over any restart or
    /// placement reported after it). Throws on a change the state machine does not have, which is a bug of the caller.
    /// A restart bumps the incarnation (nothing else does) and hands the actor to placement again.
    /// </summary>
    public bool Transition(ActorEntry entry, ActorTransition change)
    {
        Debug.Assert(Gate.IsHeldByCurrentThread);
        var info = entry.Info;
        if (info.State == ActorState.ActorDead || (entry.KillRequested && change.To != ActorState.ActorDead)) return false;
        switch (change.To)
        {
            case ActorState.ActorAlive when info.State is ActorState.ActorPendingCreation or ActorState.ActorRestarting && change.Address is { } address:
                info.State = ActorState.ActorAlive;
                info.Address = address;
                Signal(entry);
                LogAlive(logger, info.ActorId, address.IpAddress, address.Pid);
                return true;
            case ActorState.ActorRestarting when RestartsLeft(info):
                info.State = ActorState.ActorRestarting;
                info.NumRestarts++;
                info.Address = null;
                entry.LostCause = null;
                var incarnation = ++entry.Incarnation;
                Signal(entry);
                restarted(entry, incarnation);
                return true;
            case ActorState.ActorDead:
                MarkDead(entry, change);
                return true;
            default:
                throw new InvalidOperationException(
                    $"actor {info.ActorId} cannot go from {ProtocolNames.Of(info.State)} to {ProtocolNames.Of(change.To)}" +
                    (change.To == ActorState.ActorRestarting ? $" (restarts used: {info.NumRestarts} of {info.MaxRestarts})" : ""));
        }
    }

    /// <summary>Under the lock, when the process holding the actor is gone (not stopped on purpose): it restarts within its budget, else dies.</summary>
    public void WorkerLost(ActorEntry entry, string cause)
    {
        if (entry.Info.State == ActorState.ActorDead) return;
        if (entry.KillRequested)
        {
            Transition(entry, ActorTransition.Dead(entry.KillReason ?? "killed", kill: true));
        }
        else if (RestartsLeft(entry.Info))
        {
            LogRestarting(logger, entry.Info.ActorId, cause, entry.Info.NumRestarts + 1);
            Transition(entry, ActorTransition.Restarting());
        }
        else
        {
            Transition(entry, ActorTransition.Dead(entry.Info.MaxRestarts == 0 ? cause : $"{cause}, and its {entry.Info.MaxRestarts} restart(s) are used up"));
        }
    }

    private void MarkDead(ActorEntry entry, ActorTransition change)
    {
        var info = entry.Info;
        var cause = change.Cause ?? "no cause given";
        info.State = ActorState.ActorDead;
        info.DeathCause = cause;
        info.EndTimeMs = time.GetUtcNow().ToUnixTimeMilliseconds();
        if (change.CreationError is not null) info.CreationError = change.CreationError;
        if (change.Kill)
        {
            entry.KillRequested = true;
            entry.KillReason = cause;
        }
        entry.LostCause = null;
        Names.Release(info.Namespace, info.Name, info.ActorId);
        Signal(entry);
        var actorId = info.ActorId;
        Enqueue(entry, () => store.DeleteAsync(GcsTables.ActorSpecs, actorId), "the removal of its registration");
        Bury(entry);
        LogDead(logger, actorId, cause);
    }

    /// <summary>
    /// Under the lock, once an actor is dead: counts it among its job's dead actors and drops the oldest beyond the
    /// bound, from memory and from the store, so that a job creating actors forever does not grow the table forever.
    /// </summary>
    public void Bury(ActorEntry entry)
    {
        if (entry.Buried) return;
        entry.Buried = true;
        var jobId = entry.Info.JobId;
        if (!_deadByJob.TryGetValue(jobId, out var dead)) _deadByJob[jobId] = dead = new Queue<string>();
        dead.Enqueue(entry.Info.ActorId);
        while (dead.Count > options.MaxDeadActorsPerJob)
        {
            var oldest = dead.Dequeue();
            if (!_actors.Remove(oldest, out var evicted)) continue;
            Enqueue(evicted, () => store.DeleteAsync(GcsTables.Actors, oldest), "the removal of its row (one of its job's oldest dead actors)");
        }
        if (dead.Count == 0) _deadByJob.Remove(jobId);
    }

    /// <summary>Wakes the actor's waiters and queues its row as it is now.</summary>
    private void Signal(ActorEntry entry)
    {
        var changed = entry.Changed;
        entry.Changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        changed.TrySetResult();
        Persist(entry);
    }

    /// <summary>Under the lock: queues the row as it is now, behind the actor's earlier writes.</summary>
    private void Persist(ActorEntry entry)
    {
        var (id, bytes) = (entry.Info.ActorId, entry.Info.ToByteArray());
        Enqueue(entry, () => store.PutAsync(GcsTables.Actors, id, bytes), "its row");
    }

    /// <summary>Under the lock: runs <paramref name="write"/> once the actor's earlier writes are done; a failure is logged, and the next write still runs.</summary>
    private void Enqueue(ActorEntry entry, Func<Task> write, string what) => entry.Writes = WriteAfterAsync(entry.Writes, write, entry.Info.ActorId, what);

    private async Task WriteAfterAsync(Task previous, Func<Task> write, string actorId, string what)
    {
        await previous.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        // Off the caller's lock: the store is someone else's code (a Redis client).
        await Task.Yield();
        try
        {
            await write().ConfigureAwait(false);
        }
        catch (Exception e)
        {
            LogStoreWriteFailed(logger, what, actorId, e.Message);
        }
    }

    /// <summary>Completes once every store write queued for the actor so far is done (each failure was logged).</summary>
    public Task WrittenAsync(ActorEntry entry)
    {
        lock (Gate) return entry.Writes;
    }

    [LoggerMessage(EventId = 301, Level = LogLevel.Information, Message = "Actor {ActorId} is alive on {Ip} (pid {Pid})")]
    private static partial void LogAlive(ILogger logger, string actorId, string ip, int pid);

    [LoggerMessage(EventId = 302, Level = LogLevel.Information, Message = "Actor {ActorId} is dead: {Cause}")]
    private static partial void LogDead(ILogger logger, string actorId, string cause);

    [LoggerMessage(EventId = 303, Level = LogLevel.Warning, Message = "Actor {ActorId} lost: {Cause}; restart {Restart}")]
    private static partial void LogRestarting(ILogger logger, string actorId, string cause, int restart);

    [LoggerMessage(EventId = 310, Level = LogLevel.Error, Message = "Storing {What} of actor {ActorId} failed: {Error}")]
    private static partial void LogStoreWriteFailed(ILogger logger, string what, string actorId, string error);
}
