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

    // One flow-local for everything about the task or call being run: each AsyncLocal write copies the execution
    // context, and a call used to make seven of them.
    private static readonly AsyncLocal<RunningTask?> s_running = new();

    /// <summary>The task, actor call or actor construction running on this flow, if any.</summary>
    public static RunningTask? Running => s_running.Value;

    /// <summary>Marks this flow (until the async method that calls it returns) as running <paramref name="task"/>.</summary>
    public static void Enter(RunningTask task) => s_running.Value = task;

    /// <summary>The raylet of this worker's node: where actors created here start looking for a place.</summary>
    public string? RayletAddress { get; init; }

    /// <summary>Submits actor calls from inside a task or actor (handles passed as arguments).</summary>
    public Submission.ActorTaskSubmitter? ActorSubmitter { get; init; }

    private Submission.ActorCallerContext? _actorCaller;

    /// <summary>
    /// Who calls actors from the task or actor running on this flow: this worker's actor submitter, for the job of
    /// that task. Reused while the job stays the same; null outside a task or in a worker with no submitter.
    /// </summary>
    public Submission.ActorCallerContext? ActorCaller()
    {
        if (ActorSubmitter is not { } submitter || RayletAddress is not { } rayletAddress || CurrentJobId is not { } jobId) return null;
        var known = Volatile.Read(ref _actorCaller);
        if (known?.JobId == jobId) return known;
        var raylet = Task.FromResult(rayletAddress);
        var made = new Submission.ActorCallerContext(jobId, Submission.ActorCallerContext.AnonymousNamespace(jobId), submitter, () => raylet);
        Volatile.Write(ref _actorCaller, made);
        return made;
    }

    /// <summary>The actor whose constructor or method runs on this flow, if any.</summary>
    public static string? CurrentActorId => s_running.Value?.ActorId;

    public static string? CurrentJobId => s_running.Value?.JobId;

    public static string? CurrentTaskId => s_running.Value?.TaskId;
}

/// <summary>What one flow is running: its ids, where references in its arguments come from, where its output goes.</summary>
internal sealed class RunningTask(string jobId, string? taskId, string? actorId)
{
    public string JobId { get; } = jobId;
    public string? TaskId { get; } = taskId;
    public string? ActorId { get; } = actorId;

    /// <summary>While its arguments are read: the connection references inside them can be fetched over (its submitter).</summary>
    public Rpc.Transport.FramedConnection? ArgumentSource { get; set; }

    /// <summary>Its console output, while captured (see <see cref="TaskOutputCapture"/>).</summary>
    public TaskOutputCapture.Capture? Output { get; set; }
}
