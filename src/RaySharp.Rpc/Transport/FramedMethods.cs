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
}
