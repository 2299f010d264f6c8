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

    // ---- The object store (object_store.proto): core worker → its node's raylet, on the raylet's port. ----

    /// <summary>Empty → ObjectStoreConnectReply: the arena to map. The connection's pins are released when it closes.</summary>
    public const int ObjectStoreConnect = 8;

    /// <summary>ObjectCreateRequest → ObjectCreateReply: room for an object in the arena, written by the caller then sealed.</summary>
    public const int ObjectCreate = 9;

    /// <summary>ObjectIdsRequest → empty: the objects are written; readers may map them.</summary>
    public const int ObjectSeal = 10;

    /// <summary>ObjectGetRequest → ObjectGetReply: the object made local and pinned for this connection.</summary>
    public const int ObjectGet = 11;

    /// <summary>ObjectIdsRequest, one-way: pins of this connection dropped.</summary>
    public const int ObjectRelease = 12;

    /// <summary>ObjectFreeRequest, one-way: the owner has no reference left; every copy may go once unpinned.</summary>
    public const int ObjectFree = 13;

    /// <summary>Empty → ObjectStoreStats: what the store holds (for <c>raysharp memory</c>).</summary>
    public const int ObjectStoreStats = 14;

    // ---- The object manager: raylet → raylet, on the object-manager port. ----

    /// <summary>ObjectChunkRequest → raw bytes: one piece of a sealed object.</summary>
    public const int ObjectChunk = 15;

    /// <summary>ObjectIdsRequest, one-way: the primary's node tells nodes holding copies that the object is freed.</summary>
    public const int ObjectFreeCopies = 16;

    /// <summary>
    /// Empty, one-way, raylet → a core worker: an object it pins was freed by its owner. Pins of zero-copy views end
    /// when the views are garbage collected, so the worker collects (at most once a second) to let the memory go.
    /// </summary>
    public const int ObjectStoreCollect = 17;

    /// <summary>PingRequest → PingReply, anyone → a worker: which worker (id, pid) serves this address.</summary>
    public const int WorkerPing = 18;
}
