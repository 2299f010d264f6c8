namespace RaySharp.CoreWorker.Execution;

/// <summary>
/// Where code runs, for the API's runtime context (<c>Ray.NodeIpAddress</c> inside a task). Set once per worker
/// process; the task being run is per async flow.
/// </summary>
internal sealed record WorkerContext(string NodeId, string NodeIpAddress, string WorkerId, string GcsAddress)
{
    public static WorkerContext? Current { get; set; }

    /// <summary>Submits tasks from inside a task (nested tasks), through this worker's raylet.</summary>
    public Submission.TaskSubmitter? Submitter { get; init; }

    /// <summary>Tells the raylet this worker is blocked waiting for other tasks (true) or running again (false).</summary>
    public Func<bool, Task>? NotifyBlocked { get; init; }

    private static readonly AsyncLocal<string?> s_jobId = new();
    private static readonly AsyncLocal<string?> s_taskId = new();
    private static readonly AsyncLocal<string?> s_actorId = new();

    /// <summary>The raylet of this worker's node: where actors created here start looking for a place.</summary>
    public string? RayletAddress { get; init; }

    /// <summary>Submits actor calls from inside a task or actor (handles passed as arguments).</summary>
    public Submission.ActorTaskSubmitter? ActorSubmitter { get; init; }

    /// <summary>The actor whose constructor or method runs on this flow, if any.</summary>
    public static string? CurrentActorId
    {
        get => s_actorId.Value;
        set => s_actorId.Value = value;
    }

    public static string? CurrentJobId
    {
        get => s_jobId.Value;
        set => s_jobId.Value = value;
    }

    public static string? CurrentTaskId
    {
        get => s_taskId.Value;
        set => s_taskId.Value = value;
    }
}
