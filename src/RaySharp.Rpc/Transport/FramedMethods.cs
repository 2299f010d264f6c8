namespace RaySharp.Rpc.Transport;

/// <summary>Method ids of the framed (hot-path) protocol; payloads are the messages of core_worker.proto.</summary>
internal static class FramedMethods
{
    /// <summary>PushTaskRequest → PushTaskReply: run one task on a leased worker.</summary>
    public const int PushTask = 1;

    /// <summary>TaskOutput, one-way from a worker to the task's submitter: console lines as the task writes them.</summary>
    public const int TaskOutput = 2;

    /// <summary>
    /// Object id (UTF-8) → the object's serialized value: a worker holding a reference it received inside a value asks
    /// the process that sent it the task (the owner, or a borrower that asks its own sender in turn).
    /// </summary>
    public const int GetObject = 3;

    /// <summary>PushTaskRequest (with actor_id) → PushTaskReply, GCS → worker: build an actor there (run its factory).</summary>
    public const int ActorCreate = 4;

    /// <summary>PushTaskRequest (with actor_id) → PushTaskReply, caller → the actor's worker: run one method call.</summary>
    public const int ActorCall = 5;

    /// <summary>ActorKillRequest → empty, GCS → a worker hosting lightweight actors: drop one of them.</summary>
    public const int ActorKill = 6;

    /// <summary>RegisterDriverRequest → empty, driver → GCS: the connection it arrives on lives as long as the driver.</summary>
    public const int RegisterDriver = 7;
}
