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

    public RegisterActorReply Register(RegisterActorRequest request)
    {
        var id = request.Info.ActorId;
        ActorEntry entry;
        lock (_gate)
        {
            if (_actors.TryGetValue(id, out var known))
                return new RegisterActorReply { ActorId = id, ClassName = known.Info.ClassName };
            if (request.Info.Name.Length > 0)
            {
                var key = (request.Info.Namespace, request.Info.Name);
                if (_named.TryGetValue(key, out var existingId) && _actors.TryGetValue(existingId, out var existing) && existing.Info.State != ActorState.ActorDead)
                {
                    if (request.GetIfExists) return new RegisterActorReply { ActorId = existingId, Existed = true, ClassName = existing.Info.ClassName };
                    throw new RpcException(new Status(StatusCode.AlreadyExists,
                        $"an actor named '{request.Info.Name}' already exists in namespace '{request.Info.Namespace}' ({existing.Info.ClassName}, {ProtocolNames.Of(existing.Info.State)}); " +
                        "get it with Ray.GetActor, set GetIfExists = true, or choose another name"));
                }
                _named[key] = id;
            }
            var info = request.Info.Clone();
            info.State = ActorState.ActorPendingCreation;
            info.StartTimeMs = _time.GetUtcNow().ToUnixTimeMilliseconds();
            info.Resources.Clear();
            info.Resources.Add(request.PlacementResources.Count > 0 ? request.PlacementResources : request.Resources);
            entry = new ActorEntry(info, request);
            _actors[id] = entry;
        }
        Persist(entry);
        // The factory and options, to place the actor again should a restarted GCS find it pending or need to restart it.
        _ = _store.PutAsync(GcsTables.ActorSpecs, id, request.ToByteArray());
        LogRegistered(_logger, id, request.Info.ClassName, request.Info.Name);
        _ = PlaceAsync(entry, entry.Incarnation);
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
                lock (_gate) return _actors[actorId].Info.Clone();
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
    /// is stopped and the actor restarts, as <c>ray.kill(no_restart=False)</c> does.
    /// </summary>
    public bool Kill(string actorId, bool noRestart, string reason)
    {
        ActorEntry? entry;
        FramedConnection? dedicated = null;
        ActorHost? host = null;
        string? leaseId = null, raylet = null;
        lock (_gate)
        {
            if (!_actors.TryGetValue(actorId, out entry)) return false;
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
        if (host is not null)
        {
            _ = host.Connection.CallAsync(FramedMethods.ActorKill, new ActorKillRequest { ActorId = actorId }.ToByteArray());
        }
        if (leaseId is not null && raylet is not null)
        {
            // The raylet stops the worker; the broken connection then marks the actor dead or restarts it.
            _ = RayletLeaseClient.ReturnAsync(_channels, raylet, leaseId, disconnect: true);
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
        foreach (var id in owned) Kill(id, noRestart: true, $"its owner, the driver of job {jobId}, exited");
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
        foreach (var c in connections) _ = c.DisposeAsync().AsTask();
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
        _ = MonitorAsync(entry, incarnation, connection, address);
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
        _ = Task.Run(() => PlaceAsync(entry, incarnation));
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
        _ = _store.DeleteAsync(GcsTables.ActorSpecs, entry.Info.ActorId);
        LogDead(_logger, entry.Info.ActorId, cause);
    }

    private void Signal(ActorEntry entry)
    {
        var changed = entry.Changed;
        entry.Changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        changed.TrySetResult();
        Persist(entry);
    }

    private void Persist(ActorEntry entry)
    {
        var bytes = entry.Info.ToByteArray();
        _ = _store.PutAsync(GcsTables.Actors, entry.Info.ActorId, bytes);
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
                if (error is null) _ = host.Connection.CallAsync(FramedMethods.ActorKill, new ActorKillRequest { ActorId = entry.Info.ActorId }.ToByteArray());
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
        _ = MonitorHostAsync(host);
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
            _ = _store.DeleteAsync(GcsTables.ActorHosts, host.LeaseId);
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
                if (!live) continue;
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
        }
        await Task.WhenAll(reattach.Select(e => ReattachAsync(e))
            .Concat(hostRecords.Select(h => ReattachHostAsync(h, lightweight.GetValueOrDefault(NodeAddress.Format(h.Address.IpAddress, h.Address.Port)) ?? []))))
            .ConfigureAwait(false);
        foreach (var entry in place) _ = PlaceAsync(entry, entry.Incarnation);
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
        _ = MonitorAsync(entry, incarnation, connection, address);
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
            _ = _store.DeleteAsync(GcsTables.ActorHosts, record.LeaseId);
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
        _ = MonitorHostAsync(host);
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

    [LoggerMessage(EventId = 306, Level = LogLevel.Information, Message = "({Name} pid={Pid}) {Text}")]
    private static partial void LogActorOutput(ILogger logger, string name, int pid, string text);
}
