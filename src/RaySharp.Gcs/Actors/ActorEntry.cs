using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Clients;

namespace RaySharp.Gcs.Actors;

/// <summary>
/// One actor as the GCS holds it. Every field is read and written under <see cref="GcsActorDirectory.Gate"/>; the
/// state, kill request, incarnation and death fields change only through <see cref="GcsActorDirectory.Transition"/>,
/// the placement fields (lease, connection, host) only in the scheduler, host pool and recovery that own them.
/// </summary>
internal sealed class ActorEntry(ActorInfo info, RegisterActorRequest spec)
{
    public ActorInfo Info { get; } = info;
    public RegisterActorRequest Spec { get; } = spec;
    public string? LeaseId { get; set; }
    public string? RayletAddress { get; set; }
    public CoreWorkerClient? Connection { get; set; }
    public ActorHost? Host { get; set; }
    /// <summary>Set with the DEAD transition of a kill, so that nothing reported later (a lost worker, a placement) revives it.</summary>
    public bool KillRequested { get; set; }
    public string? KillReason { get; set; }
    /// <summary>Why its process is being lost, when the GCS knows better than "the connection broke" (its node died).</summary>
    public string? LostCause { get; set; }
    /// <summary>Bumped at each restart, so that a late report about an earlier incarnation is ignored.</summary>
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
internal sealed class ActorHost(string nodeId, string rayletAddress, string leaseId, WorkerAddress address, CoreWorkerClient connection)
{
    public string NodeId { get; } = nodeId;
    public string RayletAddress { get; } = rayletAddress;
    public string LeaseId { get; } = leaseId;
    public WorkerAddress Address { get; } = address;
    public CoreWorkerClient Connection { get; } = connection;
    public HashSet<string> Actors { get; } = new(StringComparer.Ordinal);
    public bool Lost { get; set; }
    public string? LostCause { get; set; }
}

/// <summary>A change of an actor's state, as asked of <see cref="GcsActorDirectory.Transition"/>.</summary>
internal readonly record struct ActorTransition(ActorState To, WorkerAddress? Address = null, string? Cause = null, TaskError? CreationError = null, bool Kill = false)
{
    public static ActorTransition Alive(WorkerAddress address) => new(ActorState.ActorAlive, Address: address);

    public static ActorTransition Restarting() => new(ActorState.ActorRestarting);

    /// <summary>Dead for good; <paramref name="kill"/> when the GCS ends it on purpose (a kill, a failed constructor).</summary>
    public static ActorTransition Dead(string cause, TaskError? creationError = null, bool kill = false) =>
        new(ActorState.ActorDead, Cause: cause, CreationError: creationError, Kill: kill);
}
