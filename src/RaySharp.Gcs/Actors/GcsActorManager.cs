using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using RaySharp.Common;
using RaySharp.Gcs.Storage;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

namespace RaySharp.Gcs.Actors;

/// <summary>
/// The actor directory and the actors' lifecycle. Placing an actor leases a worker from a raylet (following spillback,
/// as task owners do) and runs the actor's factory there; the lease is never returned while the actor lives. The GCS
/// keeps a connection to each actor's worker: when it breaks, the worker is gone and the actor is restarted (within
/// <c>max_restarts</c>) or marked dead. Lightweight actors share host workers, many per process.
/// </summary>
internal sealed partial class GcsActorManager : IAsyncDisposable
{
    private readonly GcsServerOptions _options;
    private readonly IGcsStore _store;
    private readonly GcsNodeManager _nodes;
    private readonly RpcChannelPool _channels;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, ActorEntry> _actors = new(StringComparer.Ordinal);
    private readonly Dictionary<(string Namespace, string Name), string> _named = [];
    private readonly List<ActorHost> _hosts = [];
    private readonly Dictionary<string, Task<ActorHost>> _hostsStarting = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _disposed = new();
    private readonly OutputLogger _output;
    /// <summary>Each job's dead actors, oldest death first: only the last <see cref="GcsServerOptions.MaxDeadActorsPerJob"/> are kept.</summary>
    private readonly Dictionary<string, Queue<string>> _deadByJob = new(StringComparer.Ordinal);
    private int _spreadNext;

    public GcsActorManager(GcsServerOptions options, IGcsStore store, GcsNodeManager nodes, RpcChannelPool channels, TimeProvider time, ILogger<GcsActorManager> logger)
    {
        _options = options;
        _store = store;
        _nodes = nodes;
        _channels = channels;
        _time = time;
        _logger = logger;
        _output = new OutputLogger(logger);
        nodes.NodeRemoved += node => OnNodeDead(node);
    }

    private sealed class ActorEntry(ActorInfo info, RegisterActorRequest spec)
    {
        public ActorInfo Info { get; } = info;
        public RegisterActorRequest Spec { get; } = spec;
        public string? LeaseId { get; set; }
        public string? RayletAddress { get; set; }
        public FramedConnection? Connection { get; set; }
        public ActorHost? Host { get; set; }
        public bool KillRequested { get; set; }
        public string? KillReason { get; set; }
        /// <summary>Why its process is being lost, when the GCS knows better than "the connection broke" (its node died).</summary>
        public string? LostCause { get; set; }
        /// <summary>Bumped at each (re)placement, so a late report about an earlier incarnation is ignored.</summary>
        public int Incarnation { get; set; }
        public TaskCompletionSource Changed { get; set; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        /// <summary>
        /// The last of this actor's store writes, each queued behind the one before under the lock: rows reach the store
        /// in the order of the transitions they record, so an older row never overwrites a newer one.
        /// </summary>
        public Task Writes { get; set; } = Task.CompletedTask;
        /// <summary>Counted among its job's dead actors (at most once).</summary>
        public bool Buried { get; set; }
    }

    /// <summary>A worker process that hosts lightweight actors.</summary>
    private sealed class ActorHost(string nodeId, string rayletAddress, string leaseId, WorkerAddress address, FramedConnection connection)
    {
        public string NodeId { get; } = nodeId;
        public string RayletAddress { get; } = rayletAddress;
        public string LeaseId { get; } = leaseId;
        public WorkerAddress Address { get; } = address;
        public FramedConnection Connection { get; } = connection;
        public HashSet<string> Actors { get; } = new(StringComparer.Ordinal);
        public bool Lost { get; set; }
        public string? LostCause { get; set; }
    }

    /// <summary>Registers an actor and answers once its row is stored (a GCS restarted on that store knows it), then places it.</summary>
    public async Task<RegisterActorReply> RegisterAsync(RegisterActorRequest request)
    {
        var id = request.Info.ActorId;
        ActorEntry entry;
        RegisterActorReply? earlier = null;
        lock (_gate)
        {
            if (_actors.TryGetValue(id, out var known))
            {
                // A retried registration: answered as the first one is, once the row is stored.
                entry = known;
                earlier = new RegisterActorReply { ActorId = id, ClassName = known.Info.ClassName };
            }
            else if (request.Info.Name.Length > 0 && _named.TryGetValue((request.Info.Namespace, request.Info.Name), out var existingId)
                     && _actors.TryGetValue(existingId, out var existing) && existing.Info.State != ActorState.ActorDead)
            {
                if (!request.GetIfExists)
                {
                    throw new RpcException(new Status(StatusCode.AlreadyExists,
                        $"an actor named '{request.Info.Name}' already exists in namespace '{request.Info.Namespace}' ({existing.Info.ClassName}, {ProtocolNames.Of(existing.Info.State)}); " +
                        "get it with Ray.GetActor, set GetIfExists = true, or choose another name"));
                }
                entry = existing;
                earlier = new RegisterActorReply { ActorId = existingId, Existed = true, ClassName = existing.Info.ClassName };
            }
            else
            {
                if (request.Info.Name.Length > 0) _named[(request.Info.Namespace, request.Info.Name)] = id;
                var info = request.Info.Clone();
                info.State = ActorState.ActorPendingCreation;
                info.StartTimeMs = _time.GetUtcNow().ToUnixTimeMilliseconds();
                info.Resources.Clear();
                info.Resources.Add(request.PlacementResources.Count > 0 ? request.PlacementResources : request.Resources);
                entry = new ActorEntry(info, request);
                _actors[id] = entry;
                // The factory and options first, to place the actor again should a restarted GCS find it pending or
                // need to restart it; then its row (a restarted GCS buries a row whose registration it cannot find).
                var spec = request.ToByteArray();
                Enqueue(entry, () => _store.PutAsync(GcsTables.ActorSpecs, id, spec), "its registration");
                Persist(entry);
            }
        }
        await WrittenAsync(entry).ConfigureAwait(false);
        if (earlier is not null) return earlier;
        LogRegistered(_logger, id, request.Info.ClassName, request.Info.Name);
        Observe(PlaceAsync(entry, entry.Incarnation), "placing actor " + id);
        return new RegisterActorReply { ActorId = id, ClassName = request.Info.ClassName };
    }

    public ActorInfo? Get(string actorId)
    {
        lock (_gate) return _actors.TryGetValue(actorId, out var e) ? e.Info.Clone() : null;
    }

    /// <summary>The actor's row once it is alive with at least <paramref name="minRestarts"/> restarts, or dead, or when the time is up.</summary>
    public async Task<ActorInfo?> WaitAsync(string actorId, int minRestarts, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var timer = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _disposed.Token);
        timer.CancelAfter(timeout);
        while (true)
        {
            Task changed;
            lock (_gate)
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
                lock (_gate) return _actors.TryGetValue(actorId, out var e) ? e.Info.Clone() : null;
            }
        }
    }

    public ActorInfo? GetNamed(string name, string ns)
    {
        lock (_gate)
        {
            return _named.TryGetValue((ns, name), out var id) && _actors.TryGetValue(id, out var e) && e.Info.State != ActorState.ActorDead
                ? e.Info.Clone()
                : null;
        }
    }

    public List<ActorInfo> List(bool includeDead)
    {
        lock (_gate) return _actors.Values.Where(e => includeDead || e.Info.State != ActorState.ActorDead).Select(e => e.Info.Clone()).ToList();
    }

    /// <summary>
    /// Kills an actor: with <paramref name="noRestart"/> (or no restarts left) it is dead for good; otherwise its worker
    /// is stopped and the actor restarts, as <c>ray.kill(no_restart=False)</c> does. Answers once the row recording
    /// the kill is stored, so that a GCS restarted on the store does not bring the actor back.
    /// </summary>
    public async Task<bool> KillAsync(string actorId, bool noRestart, string reason)
    {
        ActorEntry? entry;
        FramedConnection? dedicated = null;
        ActorHost? host = null;
        string? leaseId = null, raylet = null;
        bool alreadyDead;
        lock (_gate)
        {
            if (!_actors.TryGetValue(actorId, out entry)) return false;
            alreadyDead = entry.Info.State == ActorState.ActorDead;
        }
        if (alreadyDead)
        {
            await WrittenAsync(entry).ConfigureAwait(false);
            return true;
        }
        lock (_gate)
        {
            if (entry.Info.State == ActorState.ActorDead) return true;
            var restart = !noRestart && RestartsLeft(entry.Info);
            entry.KillRequested = !restart;
            entry.KillReason = reason;
            if (entry.Info.Lightweight)
            {
                host = entry.Host;
                host?.Actors.Remove(actorId);
                entry.Host = null;
                if (!restart) MarkDead(entry, reason);
                else Restart(entry);
            }
            else
            {
                dedicated = entry.Connection;
                (leaseId, raylet) = (entry.LeaseId, entry.RayletAddress);
                // Dead from now on for every caller; a placement in flight sees KillRequested and cleans up.
                if (!restart) MarkDead(entry, reason);
            }
        }
        await WrittenAsync(entry).ConfigureAwait(false);
        if (host is not null)
        {
            Observe(host.Connection.CallAsync(FramedMethods.ActorKill, new ActorKillRequest { ActorId = actorId }.ToByteArray()), $"stopping lightweight actor {actorId} in its host");
        }
        if (leaseId is not null && raylet is not null)
        {
            // The raylet stops the worker; the broken connection then marks the actor dead or restarts it.
            Observe(RayletLeaseClient.ReturnAsync(_channels, raylet, leaseId, disconnect: true), $"returning the lease of actor {actorId}");
        }
        LogKilled(_logger, actorId, reason);
        return true;
    }

    /// <summary>Actors of a job that ended (its driver exited or was killed) go with it, unless detached.</summary>
    public void OnJobFinished(string jobId)
    {
        List<string> owned;
        lock (_gate)
        {
            owned = _actors.Values.Where(e => e.Info.JobId == jobId && !e.Info.Detached && e.Info.State != ActorState.ActorDead)
                .Select(e => e.Info.ActorId).ToList();
        }
        LogJobFinished(_logger, jobId, owned.Count);
        foreach (var id in owned) Observe(KillAsync(id, noRestart: true, $"its owner, the driver of job {jobId}, exited"), $"killing actor {id} of finished job {jobId}");
    }

    private void OnNodeDead(NodeInfo node)
    {
        List<FramedConnection> connections;
        var cause = $"its node {node.NodeIpAddress} died ({(node.DeathReason.Length > 0 ? node.DeathReason : "no reason given")})";
        lock (_gate)
        {
            var onNode = _actors.Values.Where(e => e.Connection is not null && e.Info.Address?.NodeId == node.NodeId).ToList();
            foreach (var e in onNode) e.LostCause = cause;
            foreach (var h in _hosts.Where(h => h.NodeId == node.NodeId)) h.LostCause = cause;
            connections = onNode.Select(e => e.Connection!).Concat(_hosts.Where(h => h.NodeId == node.NodeId).Select(h => h.Connection)).ToList();
        }
        // A node can die without its TCP connections breaking (a partition): close them, which restarts or buries the actors.
        foreach (var c in connections) Observe(c.DisposeAsync().AsTask(), "closing a connection to an actor on a dead node");
    }

    private static bool RestartsLeft(ActorInfo info) => info.MaxRestarts == -1 || info.NumRestarts < info.MaxRestarts;

    /// <summary>Longest pause between placement attempts that failed because a node went away under them.</summary>
    private static readonly TimeSpan s_maxPlacementBackoff = TimeSpan.FromSeconds(2);

    private async Task PlaceAsync(ActorEntry entry, int incarnation)
    {
        var pause = TimeSpan.FromMilliseconds(100);
        while (true)
        {
            try
            {
                lock (_gate) if (entry.Incarnation != incarnation || entry.Info.State == ActorState.ActorDead) return;
                if (entry.Spec.Info.Lightweight) await PlaceLightweightAsync(entry, incarnation).ConfigureAwait(false);
                else await PlaceDedicatedAsync(entry, incarnation).ConfigureAwait(false);
                return;
            }
            catch (Exception e) when (!_disposed.IsCancellationRequested && IsTransient(e))
            {
                // The node it was being placed on died (or none is up yet): nodes come and go, so try again, as Ray
                // keeps such an actor pending rather than dead.
                lock (_gate) if (entry.Incarnation != incarnation || entry.Info.State == ActorState.ActorDead) return;
                LogPlacementRetry(_logger, entry.Info.ActorId, e.Message);
                try { await Task.Delay(pause, _time, _disposed.Token).ConfigureAwait(false); }
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

    /// <summary>A failure that says a node or process went away, not that the actor can never be placed.</summary>
    private static bool IsTransient(Exception e) => e switch
    {
        RpcException r => r.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded or StatusCode.Aborted or StatusCode.Cancelled,
        IOException or System.Net.Sockets.SocketException or RemoteCallException or TimeoutException => true,
        NodeUnavailableException => true,
        _ => false,
    };

    /// <summary>No node, or not the chosen one, is alive at this moment (nodes may be restarting).</summary>
    private sealed class NodeUnavailableException(string message) : Exception(message);

    private void PlacementFailed(ActorEntry entry, int incarnation, Exception e)
    {
        if (_disposed.IsCancellationRequested) return; // shutting down
        {
            var reason = e is RpcException r ? $"{r.StatusCode}: {r.Status.Detail}" : e.Message;
            lock (_gate)
            {
                if (entry.Incarnation == incarnation && entry.Info.State != ActorState.ActorDead)
                    MarkDead(entry, $"it could not be placed: {reason}");
            }
        }
    }

    private RequestWorkerLeaseRequest LeaseRequest(ActorEntry entry)
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

    private string StartRaylet(ActorEntry entry)
    {
        var alive = _nodes.GetAll(aliveOnly: true);
        if (alive.Count == 0) throw new NodeUnavailableException("no node of the cluster is alive");
        var owner = entry.Spec.OwnerRayletAddress;
        if (owner.Length > 0 && alive.Any(n => NodeAddress.Format(n.NodeIpAddress, n.NodeManagerPort) == owner)) return owner;
        var head = alive.FirstOrDefault(n => n.IsHeadNode) ?? alive[0];
        return NodeAddress.Format(head.NodeIpAddress, head.NodeManagerPort);
    }

    private async Task PlaceDedicatedAsync(ActorEntry entry, int incarnation)
    {
        var (lease, raylet) = await RayletLeaseClient.RequestAsync(_channels, StartRaylet(entry), () => LeaseRequest(entry),
            cancellationToken: _disposed.Token).ConfigureAwait(false);
        var address = lease.WorkerAddress;
        FramedConnection connection;
        try
        {
            connection = await FramedClient.ConnectAsync(address.IpAddress, address.Port, handler: _output, cancellationToken: _disposed.Token).ConfigureAwait(false);
        }
        catch
        {
            await RayletLeaseClient.ReturnAsync(_channels, raylet, lease.LeaseId, disconnect: true).ConfigureAwait(false);
            throw;
        }
        bool abandon;
        lock (_gate)
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
            await RayletLeaseClient.ReturnAsync(_channels, raylet, lease.LeaseId, disconnect: true).ConfigureAwait(false);
            lock (_gate) if (entry.Incarnation == incarnation && entry.Info.State != ActorState.ActorDead) MarkDead(entry, entry.KillReason ?? "killed");
            return;
        }
        Observe(MonitorAsync(entry, incarnation, connection, address), "watching actor " + entry.Info.ActorId);
        var creation = entry.Spec.Creation.Clone();
        creation.ActorId = entry.Info.ActorId;
        creation.GpuIds.Clear();
        creation.GpuIds.Add(lease.GpuIds);
        creation.DedicatedWorker = true;
        var reply = await CreateAsync(connection, creation).ConfigureAwait(false);
        lock (_gate)
        {
            if (entry.Incarnation != incarnation || entry.Info.State == ActorState.ActorDead) return;
            if (reply is null)
            {
                MarkAlive(entry, address);
                return;
            }
            entry.KillRequested = true;
            MarkDead(entry, $"its constructor threw {reply.ExceptionType}: {reply.Message}", reply);
        }
        // A failed constructor leaves nothing to keep: stop the worker.
        await RayletLeaseClient.ReturnAsync(_channels, raylet, lease.LeaseId, disconnect: true).ConfigureAwait(false);
    }

    /// <summary>Runs the factory on the worker; null on success, else the exception it threw.</summary>
    private static async Task<TaskError?> CreateAsync(FramedConnection connection, PushTaskRequest creation)
    {
        var bytes = await connection.CallAsync(FramedMethods.ActorCreate, creation.ToByteArray()).ConfigureAwait(false);
        var reply = PushTaskReply.Parser.ParseFrom(bytes);
        return reply.OutcomeCase == PushTaskReply.OutcomeOneofCase.Error ? reply.Error : null;
    }

    private async Task MonitorAsync(ActorEntry entry, int incarnation, FramedConnection connection, WorkerAddress address)
    {
        await connection.Completion.ConfigureAwait(false);
        string? leaseId, raylet;
        lock (_gate)
        {
            if (entry.Incarnation != incarnation) return;
            (leaseId, raylet) = (entry.LeaseId, entry.RayletAddress);
            entry.Connection = null;
            entry.LeaseId = null;
            entry.Info.LeaseId = entry.Info.RayletAddress = "";
            if (entry.Info.State != ActorState.ActorDead)
            {
                if (entry.KillRequested) MarkDead(entry, entry.KillReason ?? "killed");
                else OnWorkerLost(entry, entry.LostCause ?? $"its worker process (pid {address.Pid} on {address.IpAddress}) died");
                entry.LostCause = null;
            }
        }
        if (leaseId is not null && raylet is not null && !_disposed.IsCancellationRequested)
            await RayletLeaseClient.ReturnAsync(_channels, raylet, leaseId, disconnect: true).ConfigureAwait(false);
    }

    /// <summary>Called under the lock when the process holding the actor is gone (not killed on purpose).</summary>
    private void OnWorkerLost(ActorEntry entry, string cause)
    {
        if (RestartsLeft(entry.Info))
        {
            LogRestarting(_logger, entry.Info.ActorId, cause, entry.Info.NumRestarts + 1);
            Restart(entry);
        }
        else
        {
            MarkDead(entry, entry.Info.MaxRestarts == 0 ? cause : $"{cause}, and its {entry.Info.MaxRestarts} restart(s) are used up");
        }
    }

    private void Restart(ActorEntry entry)
    {
        entry.Info.State = ActorState.ActorRestarting;
        entry.Info.NumRestarts++;
        entry.Info.Address = null;
        var incarnation = ++entry.Incarnation;
        Signal(entry);
        // Off the caller's lock: placement starts RPCs.
        Observe(Task.Run(() => PlaceAsync(entry, incarnation)), "placing actor " + entry.Info.ActorId);
    }

    private void MarkAlive(ActorEntry entry, WorkerAddress address)
    {
        entry.Info.State = ActorState.ActorAlive;
        entry.Info.Address = address;
        Signal(entry);
        LogAlive(_logger, entry.Info.ActorId, address.IpAddress, address.Pid);
    }

    private void MarkDead(ActorEntry entry, string cause, TaskError? creationError = null)
    {
        entry.Info.State = ActorState.ActorDead;
        entry.Info.DeathCause = cause;
        entry.Info.EndTimeMs = _time.GetUtcNow().ToUnixTimeMilliseconds();
        if (creationError is not null) entry.Info.CreationError = creationError;
        if (entry.Info.Name.Length > 0 && _named.TryGetValue((entry.Info.Namespace, entry.Info.Name), out var id) && id == entry.Info.ActorId)
            _named.Remove((entry.Info.Namespace, entry.Info.Name));
        Signal(entry);
        var actorId = entry.Info.ActorId;
        Enqueue(entry, () => _store.DeleteAsync(GcsTables.ActorSpecs, actorId), "the removal of its registration");
        Bury(entry);
        LogDead(_logger, actorId, cause);
    }

    /// <summary>
    /// Under the lock, once an actor is dead: counts it among its job's dead actors and drops the oldest beyond the
    /// bound, from memory and from the store, so that a job creating actors forever does not grow the table forever.
    /// </summary>
    private void Bury(ActorEntry entry)
    {
        if (entry.Buried) return;
        entry.Buried = true;
        var jobId = entry.Info.JobId;
        if (!_deadByJob.TryGetValue(jobId, out var dead)) _deadByJob[jobId] = dead = new Queue<string>();
        dead.Enqueue(entry.Info.ActorId);
        while (dead.Count > _options.MaxDeadActorsPerJob)
        {
            var oldest = dead.Dequeue();
            if (!_actors.Remove(oldest, out var evicted)) continue;
            Enqueue(evicted, () => _store.DeleteAsync(GcsTables.Actors, oldest), "the removal of its row (one of its job's oldest dead actors)");
        }
        if (dead.Count == 0) _deadByJob.Remove(jobId);
    }

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
        Enqueue(entry, () => _store.PutAsync(GcsTables.Actors, id, bytes), "its row");
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
            LogStoreWriteFailed(_logger, what, actorId, e.Message);
        }
    }

    /// <summary>Completes once every store write queued for the actor so far is done (each failure was logged).</summary>
    private Task WrittenAsync(ActorEntry entry)
    {
        lock (_gate) return entry.Writes;
    }

    /// <summary>Logs the failure of work that nobody awaits, so that no fault goes unseen.</summary>
    private void Observe(Task task, string what)
    {
        if (task.IsCompletedSuccessfully) return;
        task.ContinueWith(static (t, state) =>
        {
            var (self, what) = ((GcsActorManager, string))state!;
            if (!self._disposed.IsCancellationRequested) LogBackgroundFailed(self._logger, what, t.Exception!.GetBaseException().Message);
        }, (this, what), CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    // ---- Lightweight actors: many per host worker ----

    private string LightweightNode(ActorEntry entry)
    {
        var alive = _nodes.GetAll(aliveOnly: true);
        if (alive.Count == 0) throw new NodeUnavailableException("no node of the cluster is alive");
        var strategy = entry.Spec.Strategy ?? new SchedulingStrategy();
        switch (strategy.Kind)
        {
            case SchedulingStrategyKind.SchedulingNodeAffinity when alive.Any(n => n.NodeId == strategy.NodeId):
                return strategy.NodeId;
            case SchedulingStrategyKind.SchedulingNodeAffinity when !strategy.Soft:
                throw new InvalidOperationException($"node {strategy.NodeId} is not alive and the node affinity is hard");
            case SchedulingStrategyKind.SchedulingSpread:
                return alive[Interlocked.Increment(ref _spreadNext) % alive.Count].NodeId;
        }
        var owner = entry.Spec.OwnerRayletAddress;
        return (alive.FirstOrDefault(n => NodeAddress.Format(n.NodeIpAddress, n.NodeManagerPort) == owner)
                ?? alive.FirstOrDefault(n => n.IsHeadNode) ?? alive[0]).NodeId;
    }

    private async Task PlaceLightweightAsync(ActorEntry entry, int incarnation)
    {
        var nodeId = LightweightNode(entry);
        ActorHost host;
        while (true)
        {
            Task<ActorHost> starting;
            lock (_gate)
            {
                var free = _hosts.FirstOrDefault(h => h.NodeId == nodeId && !h.Lost && h.Actors.Count < _options.LightweightActorsPerWorker);
                if (free is not null)
                {
                    free.Actors.Add(entry.Info.ActorId);
                    entry.Host = free;
                    host = free;
                    break;
                }
                if (!_hostsStarting.TryGetValue(nodeId, out starting!))
                    _hostsStarting[nodeId] = starting = StartHostAsync(nodeId);
            }
            try
            {
                await starting.ConfigureAwait(false);
            }
            finally
            {
                lock (_gate) if (_hostsStarting.TryGetValue(nodeId, out var s) && s == starting) _hostsStarting.Remove(nodeId);
            }
        }
        var creation = entry.Spec.Creation.Clone();
        creation.ActorId = entry.Info.ActorId;
        TaskError? error;
        try
        {
            error = await CreateAsync(host.Connection, creation).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or RemoteCallException)
        {
            return; // the host died: its monitor restarts or buries this actor
        }
        lock (_gate)
        {
            if (entry.Incarnation != incarnation || entry.Info.State == ActorState.ActorDead)
            {
                // Killed while its constructor ran: drop what the host built.
                if (error is null) Observe(host.Connection.CallAsync(FramedMethods.ActorKill, new ActorKillRequest { ActorId = entry.Info.ActorId }.ToByteArray()), $"dropping killed actor {entry.Info.ActorId} from its host");
                return;
            }
            if (error is null)
            {
                MarkAlive(entry, host.Address);
                return;
            }
            host.Actors.Remove(entry.Info.ActorId);
            entry.Host = null;
            MarkDead(entry, $"its constructor threw {error.ExceptionType}: {error.Message}", error);
        }
    }

    private async Task<ActorHost> StartHostAsync(string nodeId)
    {
        var node = _nodes.Get(nodeId) ?? throw new NodeUnavailableException($"node {nodeId} is gone");
        var raylet = NodeAddress.Format(node.NodeIpAddress, node.NodeManagerPort);
        // A host holds nothing itself: each lightweight actor asks for no CPU or GPU.
        var (lease, _) = await RayletLeaseClient.RequestAsync(_channels, raylet,
            () => new RequestWorkerLeaseRequest { LeaseRequestId = UniqueId.New(), Strategy = new SchedulingStrategy() },
            grantOrReject: true, cancellationToken: _disposed.Token).ConfigureAwait(false);
        var address = lease.WorkerAddress;
        var connection = await FramedClient.ConnectAsync(address.IpAddress, address.Port, handler: _output, cancellationToken: _disposed.Token).ConfigureAwait(false);
        var host = new ActorHost(nodeId, raylet, lease.LeaseId, address, connection);
        lock (_gate) _hosts.Add(host);
        await _store.PutAsync(GcsTables.ActorHosts, host.LeaseId,
            new ActorHostRecord { NodeId = nodeId, RayletAddress = raylet, LeaseId = lease.LeaseId, Address = address }.ToByteArray()).ConfigureAwait(false);
        LogHostStarted(_logger, address.IpAddress, address.Pid);
        Observe(MonitorHostAsync(host), "watching a lightweight actor host");
        return host;
    }

    private async Task MonitorHostAsync(ActorHost host)
    {
        await host.Connection.Completion.ConfigureAwait(false);
        lock (_gate)
        {
            host.Lost = true;
            _hosts.Remove(host);
            foreach (var id in host.Actors)
            {
                if (!_actors.TryGetValue(id, out var entry) || entry.Info.State == ActorState.ActorDead) continue;
                entry.Host = null;
                OnWorkerLost(entry, host.LostCause ?? $"its host worker process (pid {host.Address.Pid} on {host.Address.IpAddress}) died");
            }
            host.Actors.Clear();
        }
        if (!_disposed.IsCancellationRequested)
        {
            Observe(_store.DeleteAsync(GcsTables.ActorHosts, host.LeaseId), "removing the row of a lightweight actor host");
            await RayletLeaseClient.ReturnAsync(_channels, host.RayletAddress, host.LeaseId, disconnect: true).ConfigureAwait(false);
        }
    }

    // ---- Taking over after a GCS restart ----

    /// <summary>
    /// Takes the actor directory over from the store (a GCS restart on Redis). Actor workers outlive the GCS: the
    /// live ones are connected to again and watched as before, so their callers never notice; one whose worker is gone
    /// restarts within its budget. Actors that were being placed are placed again (a lease granted to the GCS that
    /// died in that instant stays with its raylet until the worker is reclaimed).
    /// </summary>
    public async Task LoadAsync()
    {
        var specs = (await _store.GetAllAsync(GcsTables.ActorSpecs).ConfigureAwait(false))
            .ToDictionary(kv => kv.Key, kv => RegisterActorRequest.Parser.ParseFrom(kv.Value), StringComparer.Ordinal);
        var hostRecords = (await _store.GetAllAsync(GcsTables.ActorHosts).ConfigureAwait(false))
            .Select(kv => ActorHostRecord.Parser.ParseFrom(kv.Value)).ToList();
        var rows = await _store.GetAllAsync(GcsTables.Actors).ConfigureAwait(false);
        var reattach = new List<ActorEntry>();
        var place = new List<ActorEntry>();
        var dead = new List<ActorEntry>();
        var lightweight = new Dictionary<string, List<ActorEntry>>(StringComparer.Ordinal);
        lock (_gate)
        {
            foreach (var (id, bytes) in rows)
            {
                var info = ActorInfo.Parser.ParseFrom(bytes);
                var live = info.State != ActorState.ActorDead;
                var spec = specs.GetValueOrDefault(id);
                var entry = new ActorEntry(info, spec ?? new RegisterActorRequest { Info = info });
                _actors[id] = entry;
                if (!live)
                {
                    dead.Add(entry);
                    continue;
                }
                if (info.Name.Length > 0) _named[(info.Namespace, info.Name)] = id;
                if (spec is null)
                {
                    MarkDead(entry, "its registration was not found in the control store after a GCS restart");
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
            foreach (var entry in dead.OrderBy(e => e.Info.EndTimeMs)) Bury(entry);
        }
        await Task.WhenAll(reattach.Select(e => ReattachAsync(e))
            .Concat(hostRecords.Select(h => ReattachHostAsync(h, lightweight.GetValueOrDefault(NodeAddress.Format(h.Address.IpAddress, h.Address.Port)) ?? []))))
            .ConfigureAwait(false);
        foreach (var entry in place) Observe(PlaceAsync(entry, entry.Incarnation), "placing actor " + entry.Info.ActorId);
    }

    private async Task ReattachAsync(ActorEntry entry)
    {
        var address = entry.Info.Address;
        var incarnation = entry.Incarnation;
        FramedConnection connection;
        try
        {
            connection = await FramedClient.ConnectAsync(address.IpAddress, address.Port, handler: _output, cancellationToken: _disposed.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            string? leaseId, raylet;
            lock (_gate)
            {
                (leaseId, raylet) = (entry.LeaseId, entry.RayletAddress);
                entry.LeaseId = null;
                entry.Info.LeaseId = entry.Info.RayletAddress = "";
                if (entry.Incarnation == incarnation && entry.Info.State != ActorState.ActorDead)
                    OnWorkerLost(entry, $"its worker process (pid {address.Pid} on {address.IpAddress}) was gone when the GCS restarted");
            }
            if (leaseId is { Length: > 0 } && raylet is { Length: > 0 })
            {
                try { await RayletLeaseClient.ReturnAsync(_channels, raylet, leaseId, disconnect: true).ConfigureAwait(false); }
                catch (Exception) { /* its raylet is gone too */ }
            }
            return;
        }
        lock (_gate) entry.Connection = connection;
        LogReattached(_logger, $"actor {entry.Info.ActorId}", address.IpAddress, address.Pid);
        Observe(MonitorAsync(entry, incarnation, connection, address), "watching actor " + entry.Info.ActorId);
    }

    private async Task ReattachHostAsync(ActorHostRecord record, List<ActorEntry> actors)
    {
        FramedConnection connection;
        try
        {
            connection = await FramedClient.ConnectAsync(record.Address.IpAddress, record.Address.Port, handler: _output, cancellationToken: _disposed.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            lock (_gate)
            {
                foreach (var entry in actors.Where(a => a.Info.State != ActorState.ActorDead))
                    OnWorkerLost(entry, $"its host worker process (pid {record.Address.Pid} on {record.Address.IpAddress}) was gone when the GCS restarted");
            }
            Observe(_store.DeleteAsync(GcsTables.ActorHosts, record.LeaseId), "removing the row of a lightweight actor host");
            try { await RayletLeaseClient.ReturnAsync(_channels, record.RayletAddress, record.LeaseId, disconnect: true).ConfigureAwait(false); }
            catch (Exception) { /* its raylet is gone too */ }
            return;
        }
        var host = new ActorHost(record.NodeId, record.RayletAddress, record.LeaseId, record.Address, connection);
        lock (_gate)
        {
            _hosts.Add(host);
            foreach (var entry in actors)
            {
                host.Actors.Add(entry.Info.ActorId);
                entry.Host = host;
            }
        }
        LogReattached(_logger, $"{actors.Count} lightweight actor(s)", record.Address.IpAddress, record.Address.Pid);
        Observe(MonitorHostAsync(host), "watching a lightweight actor host");
    }

    public async ValueTask DisposeAsync()
    {
        await _disposed.CancelAsync().ConfigureAwait(false);
        List<FramedConnection> connections;
        lock (_gate) connections = _actors.Values.Select(e => e.Connection).OfType<FramedConnection>().Concat(_hosts.Select(h => h.Connection)).ToList();
        foreach (var c in connections) await c.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>Console output of actor constructors reaches the GCS (their caller): it goes to the GCS log.</summary>
    private sealed class OutputLogger(ILogger logger) : IFramedHandler
    {
        public ValueTask<ReadOnlyMemory<byte>> HandleAsync(int method, byte[] payload, CancellationToken cancellationToken) =>
            throw new NotSupportedException($"the GCS serves no method {method} on actor connections");

        public void OnNotify(int method, byte[] payload)
        {
            if (method != FramedMethods.TaskOutput) return;
            var output = TaskOutput.Parser.ParseFrom(payload);
            LogActorOutput(logger, output.TaskName, output.Pid, output.Text);
        }
    }

    [LoggerMessage(EventId = 300, Level = LogLevel.Information, Message = "Actor {ActorId} ({Class}) registered, name '{Name}'")]
    private static partial void LogRegistered(ILogger logger, string actorId, string @class, string name);

    [LoggerMessage(EventId = 301, Level = LogLevel.Information, Message = "Actor {ActorId} is alive on {Ip} (pid {Pid})")]
    private static partial void LogAlive(ILogger logger, string actorId, string ip, int pid);

    [LoggerMessage(EventId = 302, Level = LogLevel.Information, Message = "Actor {ActorId} is dead: {Cause}")]
    private static partial void LogDead(ILogger logger, string actorId, string cause);

    [LoggerMessage(EventId = 303, Level = LogLevel.Warning, Message = "Actor {ActorId} lost: {Cause}; restart {Restart}")]
    private static partial void LogRestarting(ILogger logger, string actorId, string cause, int restart);

    [LoggerMessage(EventId = 304, Level = LogLevel.Information, Message = "Actor {ActorId} killed: {Reason}")]
    private static partial void LogKilled(ILogger logger, string actorId, string reason);

    [LoggerMessage(EventId = 305, Level = LogLevel.Information, Message = "Started a lightweight actor host on {Ip} (pid {Pid})")]
    private static partial void LogHostStarted(ILogger logger, string ip, int pid);

    [LoggerMessage(EventId = 307, Level = LogLevel.Information, Message = "Job {JobId} finished; killing the {Count} actor(s) it owned")]
    private static partial void LogJobFinished(ILogger logger, string jobId, int count);

    [LoggerMessage(EventId = 308, Level = LogLevel.Information, Message = "After the GCS restart, found {What} again on {Ip} (pid {Pid})")]
    private static partial void LogReattached(ILogger logger, string what, string ip, int pid);

    [LoggerMessage(EventId = 309, Level = LogLevel.Warning, Message = "Placing actor {ActorId} failed ({Reason}); trying again")]
    private static partial void LogPlacementRetry(ILogger logger, string actorId, string reason);

    [LoggerMessage(EventId = 310, Level = LogLevel.Error, Message = "Storing {What} of actor {ActorId} failed: {Error}")]
    private static partial void LogStoreWriteFailed(ILogger logger, string what, string actorId, string error);

    [LoggerMessage(EventId = 311, Level = LogLevel.Warning, Message = "Background work failed ({What}): {Error}")]
    private static partial void LogBackgroundFailed(ILogger logger, string what, string error);

    [LoggerMessage(EventId = 306, Level = LogLevel.Information, Message = "({Name} pid={Pid}) {Text}")]
    private static partial void LogActorOutput(ILogger logger, string name, int pid, string text);
}
