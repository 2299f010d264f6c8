using Microsoft.Extensions.Logging;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;

namespace RaySharp.CoreWorker;

/// <summary>
/// What every process that submits (a driver, a worker running nested tasks and actor calls) wires the same way: the
/// object store of its node (<see cref="Objects.LocalObjectStore"/>), the task submitter leasing through its local
/// raylet, and the actor-call submitter answering on the task submitter's caller handler. Both runtimes,
/// <see cref="DriverRuntime"/> and <see cref="WorkerRuntime"/>, build theirs here.
/// </summary>
internal sealed class CallerWiring : IAsyncDisposable
{
    private CallerWiring(Submission.TaskSubmitter tasks, Submission.ActorTaskSubmitter actors)
    {
        Tasks = tasks;
        Actors = actors;
    }

    public Submission.TaskSubmitter Tasks { get; }

    public Submission.ActorTaskSubmitter Actors { get; }

    /// <summary>
    /// Points this process's object store at <paramref name="localRaylet"/> and builds the submitters. Warnings and
    /// task output the submitters receive are printed on this process's console.
    /// </summary>
    public static CallerWiring Create(RpcChannelPool channels, GcsClient gcs, Func<Task<string>> localRaylet, ILoggerFactory loggers)
    {
        Objects.LocalObjectStore.Configure(localRaylet);
        var tasks = new Submission.TaskSubmitter(channels, localRaylet, loggers.CreateLogger<Submission.TaskSubmitter>(),
            () => gcs.GetAllNodesAsync(aliveOnly: true), message => Console.Error.WriteLine(message),
            (text, isError) => (isError ? Console.Error : Console.Out).WriteLine(text));
        var actors = new Submission.ActorTaskSubmitter(gcs, tasks.CallerHandler, loggers.CreateLogger<Submission.ActorTaskSubmitter>());
        return new CallerWiring(tasks, actors);
    }

    /// <summary>The GCS declared a node dead: both submitters drop what they hold there.</summary>
    public void OnNodeDead(string nodeId)
    {
        Actors.OnNodeDead(nodeId);
        Tasks.OnNodeDead(nodeId);
    }

    /// <summary>
    /// Actor calls first, then tasks; the second runs even if the first failed, whose failure is rethrown afterwards.
    /// Calls not finished fail with a shutdown error.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        Exception? first = null;
        try { await Actors.DisposeAsync().ConfigureAwait(false); }
        catch (Exception e) { first = e; }
        try { await Tasks.DisposeAsync().ConfigureAwait(false); }
        catch (Exception e) { first ??= e; }
        if (first is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(first);
    }
}
