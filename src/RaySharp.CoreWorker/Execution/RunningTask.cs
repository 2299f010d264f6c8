namespace RaySharp.CoreWorker.Execution;

/// <summary>
/// What one flow is running: its ids, where references in its arguments come from, where its output goes. Flow-local
/// (it follows the task across awaits), as Ray's worker context is thread-local; everything else a worker holds belongs
/// to its <see cref="WorkerRuntime"/>.
/// </summary>
internal sealed class RunningTask(string jobId, string? taskId, string? actorId)
{
    // One flow-local for everything about the task or call being run: each AsyncLocal write copies the execution
    // context, and a call used to make seven of them.
    private static readonly AsyncLocal<RunningTask?> s_current = new();

    /// <summary>The task, actor call or actor construction running on this flow, if any.</summary>
    public static RunningTask? Current => s_current.Value;

    /// <summary>Marks this flow (until the async method that calls it returns) as running <paramref name="task"/>.</summary>
    public static void Enter(RunningTask task) => s_current.Value = task;

    public string JobId { get; } = jobId;
    public string? TaskId { get; } = taskId;
    public string? ActorId { get; } = actorId;

    /// <summary>The placement group it was scheduled in, null when none.</summary>
    public string? PlacementGroupId { get; init; }

    /// <summary>What it submits with the default strategy goes in <see cref="PlacementGroupId"/> too.</summary>
    public bool CaptureChildTasks { get; init; }

    /// <summary>While its arguments are read: the connection references inside them can be fetched over (its submitter).</summary>
    public Rpc.Transport.FramedConnection? ArgumentSource { get; set; }

    /// <summary>Its console output, while captured (see <see cref="TaskOutputCapture"/>).</summary>
    public TaskOutputCapture.Capture? Output { get; set; }
}
