using Google.Protobuf;
using RaySharp.Rpc.Protocol;

namespace RaySharp.CoreWorker.Submission;

// How submitted work fails, in the runtime's own terms; the API layer maps each to what a program sees (ICallOutcome).

/// <summary>
/// A task's worker went away under it (the connection broke before the reply) on every attempt it was allowed;
/// <see cref="NodeDied"/> when the last worker's raylet was gone too.
/// </summary>
internal sealed class WorkerLostCoreException(string message, Exception inner, bool nodeDied, int attempts) : Exception(message, inner)
{
    public bool NodeDied { get; } = nodeDied;
    public int Attempts { get; } = attempts;
}

/// <summary>The actor is dead: killed, its constructor threw, its worker or node died with no restarts left, or its owner exited.</summary>
internal sealed class ActorDiedCoreException(string actorId, string cause, TaskError? creationError)
    : Exception($"actor {actorId} is dead: {cause}")
{
    public string ActorId { get; } = actorId;
    public string Cause { get; } = cause;
    public TaskError? CreationError { get; } = creationError;
}

/// <summary>The actor restarted while a call was running on it; the call was not retried (MaxTaskRetries is 0).</summary>
internal sealed class ActorUnavailableCoreException(string message) : Exception(message);

/// <summary>This process shut down (Ray.Shutdown) before the call or task <paramref name="what"/> finished.</summary>
internal sealed class ShutdownCoreException(string what)
    : Exception($"{what} did not finish: this process shut down (Ray.Shutdown, or the end of the program) first");

/// <summary>A caller already has MaxPendingCalls calls in flight to the actor.</summary>
internal sealed class PendingCallsLimitCoreException(string message) : Exception(message);

/// <summary>How a call's reply or failure becomes what readers of its result see (the API layer's types).</summary>
internal interface ICallOutcome
{
    /// <summary>The result bytes of a reply (the submitter takes ownership of a stored one); throws what a failed call's readers see.</summary>
    ByteString Result(PushTaskReply reply);

    /// <summary>What readers see of a failure of the runtime's (the actor died, the connection broke, ...).</summary>
    Exception Failure(Exception coreFailure);
}
