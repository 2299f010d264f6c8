using Microsoft.Extensions.Logging;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;
using RaySharp.Gcs.Storage;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs.Actors;

/// <summary>
/// The actors' coordinator, which the GCS services and the job and node tables call, as Ray's GcsActorManager is.
/// It composes the parts: the table and its state machine (<see cref="GcsActorDirectory"/>, names in
/// <see cref="ActorNames"/>), placement (<see cref="GcsActorScheduler"/>), lightweight hosts
/// (<see cref="LightweightActorHostPool"/>) and takeover after a GCS restart (<see cref="GcsActorRecovery"/>); what
/// stays here is what spans them: a kill (a transition, then stopping the worker) and the deaths of jobs and nodes.
/// </summary>
internal sealed partial class GcsActorManager : IAsyncDisposable
{
    private readonly GcsActorRuntime _runtime;
    private readonly GcsActorDirectory _directory;
    private readonly GcsActorScheduler _scheduler;
    private readonly LightweightActorHostPool _hosts;
    private readonly GcsActorRecovery _recovery;
    private readonly ILogger _logger;

    public GcsActorManager(GcsServerOptions options, IGcsStore store, GcsNodeManager nodes, RpcChannelPool channels, TimeProvider time, ILogger<GcsActorManager> logger)
    {
        _logger = logger;
        // Console output of actor constructors reaches the GCS (their caller): it goes to the GCS log.
        _runtime = new GcsActorRuntime(options, store, nodes, channels, time, logger, output => LogActorOutput(logger, output.TaskName, output.Pid, output.Text));
        // A restart hands the actor to placement again, off the caller's lock: placement starts RPCs.
        _directory = new GcsActorDirectory(options, store, time, logger,
            (entry, incarnation) => _runtime.Observe(Task.Run(() => _scheduler!.PlaceAsync(entry, incarnation)), "placing actor " + entry.Info.ActorId));
        _hosts = new LightweightActorHostPool(_runtime, _directory);
        _scheduler = new GcsActorScheduler(_runtime, _directory, _hosts, new ActorNodeSelector(nodes));
        _recovery = new GcsActorRecovery(_runtime, _directory, _scheduler, _hosts);
        nodes.NodeRemoved += OnNodeDead;
    }

    /// <summary>Registers an actor and answers once its row is stored (a GCS restarted on that store knows it), then places it.</summary>
    public async Task<RegisterActorReply> RegisterAsync(RegisterActorRequest request)
    {
        var (entry, earlier) = _directory.Register(request);
        await _directory.WrittenAsync(entry).ConfigureAwait(false);
        if (earlier is not null) return earlier;
        var id = request.Info.ActorId;
        LogRegistered(_logger, id, request.Info.ClassName, request.Info.Name);
        _runtime.Observe(_scheduler.PlaceAsync(entry, entry.Incarnation), "placing actor " + id);
        return new RegisterActorReply { ActorId = id, ClassName = request.Info.ClassName };
    }

    public ActorInfo? Get(string actorId) => _directory.Get(actorId);

    /// <summary>The actor's row once it is alive with at least <paramref name="minRestarts"/> restarts, or dead, or when the time is up.</summary>
    public async Task<ActorInfo?> WaitAsync(string actorId, int minRestarts, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _runtime.Stopping);
        return await _directory.WaitAsync(actorId, minRestarts, timeout, linked.Token).ConfigureAwait(false);
    }

    public ActorInfo? GetNamed(string name, string ns) => _directory.GetNamed(name, ns);

    public List<ActorInfo> List(bool includeDead) => _directory.List(includeDead);

    /// <summary>
    /// Kills an actor: with <paramref name="noRestart"/> (or no restarts left) it is dead for good; otherwise its worker
    /// is stopped and the actor restarts, as <c>ray.kill(no_restart=False)</c> does. Answers once the row recording
    /// the kill is stored, so that a GCS restarted on the store does not bring the actor back.
    /// </summary>
    public async Task<bool> KillAsync(string actorId, bool noRestart, string reason)
    {
        ActorEntry? entry;
        ActorHost? host = null;
        string? leaseId = null, raylet = null;
        bool alreadyDead;
        lock (_directory.Gate)
        {
            if (!_directory.TryGet(actorId, out entry)) return false;
            alreadyDead = entry.Info.State == ActorState.ActorDead;
        }
        if (alreadyDead)
        {
            await _directory.WrittenAsync(entry).ConfigureAwait(false);
            return true;
        }
        lock (_directory.Gate)
        {
            if (entry.Info.State == ActorState.ActorDead) return true;
            var restart = !noRestart && GcsActorDirectory.RestartsLeft(entry.Info);
            if (entry.Info.Lightweight)
            {
                host = LightweightActorHostPool.Detach(entry);
                _directory.Transition(entry, restart ? ActorTransition.Restarting() : ActorTransition.Dead(reason, kill: true));
            }
            else
            {
                (leaseId, raylet) = (entry.LeaseId, entry.RayletAddress);
                // Dead from now on for every caller; a placement in flight finds its transition refused and cleans up.
                // With a restart the state stays: the worker's end, below, restarts it.
                if (!restart) _directory.Transition(entry, ActorTransition.Dead(reason, kill: true));
            }
        }
        await _directory.WrittenAsync(entry).ConfigureAwait(false);
        if (host is not null) _hosts.Drop(host, actorId, $"stopping lightweight actor {actorId} in its host");
        if (leaseId is not null && raylet is not null)
        {
            // The raylet stops the worker; the broken connection then marks the actor dead or restarts it.
            _runtime.Observe(RayletLeaseClient.ReturnAsync(_runtime.Channels, raylet, leaseId, disconnect: true), $"returning the lease of actor {actorId}");
        }
        LogKilled(_logger, actorId, reason);
        return true;
    }

    /// <summary>Actors of a job that ended (its driver exited or was killed) go with it, unless detached.</summary>
    public void OnJobFinished(string jobId)
    {
        List<string> owned;
        lock (_directory.Gate)
        {
            owned = _directory.Entries.Where(e => e.Info.JobId == jobId && !e.Info.Detached && e.Info.State != ActorState.ActorDead)
                .Select(e => e.Info.ActorId).ToList();
        }
        LogJobFinished(_logger, jobId, owned.Count);
        foreach (var id in owned) _runtime.Observe(KillAsync(id, noRestart: true, $"its owner, the driver of job {jobId}, exited"), $"killing actor {id} of finished job {jobId}");
    }

    private void OnNodeDead(NodeInfo node)
    {
        List<CoreWorkerClient> connections;
        var cause = $"its node {node.NodeIpAddress} died ({(node.DeathReason.Length > 0 ? node.DeathReason : "no reason given")})";
        lock (_directory.Gate)
        {
            var onNode = _directory.Entries.Where(e => e.Connection is not null && e.Info.Address?.NodeId == node.NodeId).ToList();
            foreach (var e in onNode) e.LostCause = cause;
            connections = onNode.Select(e => e.Connection!).Concat(_hosts.OnNodeDead(node.NodeId, cause)).ToList();
        }
        // A node can die without its TCP connections breaking (a partition): close them, which restarts or buries the actors.
        foreach (var c in connections) _runtime.Observe(c.DisposeAsync().AsTask(), "closing a connection to an actor on a dead node");
    }

    /// <summary>Takes the actor directory over from the store (a GCS restart on Redis); see <see cref="GcsActorRecovery"/>.</summary>
    public Task LoadAsync() => _recovery.LoadAsync();

    public async ValueTask DisposeAsync()
    {
        await _runtime.StopAsync().ConfigureAwait(false);
        List<CoreWorkerClient> connections;
        lock (_directory.Gate) connections = _directory.Entries.Select(e => e.Connection).OfType<CoreWorkerClient>().Concat(_hosts.Connections).ToList();
        foreach (var c in connections) await c.DisposeAsync().ConfigureAwait(false);
    }

    [LoggerMessage(EventId = 300, Level = LogLevel.Information, Message = "Actor {ActorId} ({Class}) registered, name '{Name}'")]
    private static partial void LogRegistered(ILogger logger, string actorId, string @class, string name);

    [LoggerMessage(EventId = 304, Level = LogLevel.Information, Message = "Actor {ActorId} killed: {Reason}")]
    private static partial void LogKilled(ILogger logger, string actorId, string reason);

    [LoggerMessage(EventId = 307, Level = LogLevel.Information, Message = "Job {JobId} finished; killing the {Count} actor(s) it owned")]
    private static partial void LogJobFinished(ILogger logger, string jobId, int count);

    [LoggerMessage(EventId = 306, Level = LogLevel.Information, Message = "({Name} pid={Pid}) {Text}")]
    private static partial void LogActorOutput(ILogger logger, string name, int pid, string text);
}
