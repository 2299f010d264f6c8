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
