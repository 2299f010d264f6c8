using System.Collections.Concurrent;
using RaySharp.Rpc.Transport;

namespace RaySharp.CoreWorker.Submission;

/// <summary>
/// Console output of nested work reaches the driver, as in Ray: when a task (or actor call) running in this worker
/// submits a task or actor call, the output that submission streams back is passed on, frame unchanged, to whoever is
/// receiving the outer task's output, instead of landing in this worker's log. One per process, shared by its two
/// submitters.
/// </summary>
internal sealed class NestedOutputRouter
{
    private readonly ConcurrentDictionary<string, FramedConnection> _upstream = new(StringComparer.Ordinal);

    /// <summary>Called at submission: remembers where the submitting task's own output goes (nothing in a driver).</summary>
    public void Track(string taskId, Task completion)
    {
        if (Execution.TaskOutputCapture.CurrentCaller is not { } upstream) return;
        _upstream[taskId] = upstream;
        completion.ContinueWith(static (done, state) =>
        {
            var (map, id) = ((ConcurrentDictionary<string, FramedConnection>, string))state!;
            map.TryRemove(id, out _);
        }, (_upstream, taskId), TaskScheduler.Default);
    }

    /// <summary>True when the output belonged to nested work and was passed upstream.</summary>
    public bool TryForward(string taskId, byte[] payload) =>
        taskId.Length > 0 && _upstream.TryGetValue(taskId, out var upstream) && upstream.Notify(FramedMethods.TaskOutput, payload);
}
