using Microsoft.Extensions.Logging;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;

namespace RaySharp.CoreWorker;

/// <summary>
/// What every process that runs or submits work holds once, whether it is a driver (<see cref="DriverRuntime"/>) or a
/// worker (<see cref="WorkerRuntime"/>), wired the same way for both: the object store of its node, the objects it
/// handed out by reference, the lineage of the results it owns, the task submitter leasing through its local raylet,
/// the actor-call submitter answering on the task submitter's caller handler, and where nested work's output goes.
/// Nothing here is static: a process could host two (tests do); <see cref="CoreWorkerProcess"/> names the one the
/// public API speaks for.
/// </summary>
internal abstract class CoreWorkerRuntime : IAsyncDisposable
{
    /// <summary>Warnings and task output the submitters receive are printed on this process's console.</summary>
    protected CoreWorkerRuntime(RpcChannelPool channels, GcsClient gcs, Func<Task<string>> localRaylet, string workerId, ILoggerFactory loggers)
    {
        Gcs = gcs;
        Store = new Objects.LocalObjectStore(localRaylet, workerId);
        Objects = new Objects.ObjectDirectory();
        var nestedOutput = new Submission.NestedOutputRouter();
        Tasks = new Submission.TaskSubmitter(channels, localRaylet, loggers.CreateLogger<Submission.TaskSubmitter>(), Objects, nestedOutput,
            () => gcs.GetAllNodesAsync(aliveOnly: true), message => Console.Error.WriteLine(message),
            (text, isError) => (isError ? Console.Error : Console.Out).WriteLine(text),
            () => AutoscalerKv.GetLaunchableTypesAsync(gcs));
        Actors = new Submission.ActorTaskSubmitter(gcs, Tasks.CallerHandler, nestedOutput, Store, loggers.CreateLogger<Submission.ActorTaskSubmitter>());
        Lineage = new Objects.LineageTable(Store, Tasks);
    }

    public GcsClient Gcs { get; }

    public string GcsAddress => Gcs.Address;

    /// <summary>This process's view of its node's shared-memory store.</summary>
    public Objects.LocalObjectStore Store { get; }

    /// <summary>Objects this process passed on by reference inside values, served to whoever received them.</summary>
    public Objects.ObjectDirectory Objects { get; }

    /// <summary>How the stored results this process owns were made, so that lost ones can be made again.</summary>
    public Objects.LineageTable Lineage { get; }

    public Submission.TaskSubmitter Tasks { get; }

    public Submission.ActorTaskSubmitter Actors { get; }

    /// <summary>The job work submitted now belongs to: a driver's own; in a worker, the job of the task running on this flow (null outside one).</summary>
    public abstract string? JobId { get; }

    /// <summary>The address of the node this process runs on, as the cluster sees it.</summary>
    public abstract string NodeIpAddress { get; }

    /// <summary>In a worker, the node and worker it is; null in a driver.</summary>
    public virtual string? NodeId => null;

    public virtual string? WorkerId => null;

    /// <summary>Who calls actors from this flow: the driver, or the task or actor running on it; null in a worker outside a task.</summary>
    public abstract Submission.ActorCallerContext? ActorCaller();

    /// <summary>
    /// Tells the raylet this process is blocked waiting for other work (true) or running again (false), so the CPUs
    /// of its lease can run that work; null where there is no lease (a driver).
    /// </summary>
    public virtual Func<bool, Task>? NotifyBlocked => null;

    /// <summary>The GCS declared a node dead: both submitters drop what they hold there.</summary>
    public void OnNodeDead(string nodeId)
    {
        Actors.OnNodeDead(nodeId);
        Tasks.OnNodeDead(nodeId);
    }

    /// <summary>
    /// Disconnects from the store, then fails calls not finished: actor calls first, then tasks; the second runs even
    /// if the first failed, whose failure is rethrown afterwards.
    /// </summary>
    protected async ValueTask DisposeCallersAsync()
    {
        Store.Close();
        Exception? first = null;
        try { await Actors.DisposeAsync().ConfigureAwait(false); }
        catch (Exception e) { first = e; }
        try { await Tasks.DisposeAsync().ConfigureAwait(false); }
        catch (Exception e) { first ??= e; }
        if (first is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(first);
    }

    public abstract ValueTask DisposeAsync();
}

/// <summary>
/// The runtime the public API of this process speaks for (Ray's <c>CoreWorkerProcess</c>): a driver's between
/// <c>Ray.Init</c> and <c>Ray.Shutdown</c>, a worker's while it serves. Only the API's facade reads it; everything
/// inside the core worker is handed the runtime (or the part of it it needs) when it is made.
/// </summary>
internal static class CoreWorkerProcess
{
    private static CoreWorkerRuntime? s_current;

    public static CoreWorkerRuntime? Current => Volatile.Read(ref s_current);

    /// <summary>Makes <paramref name="runtime"/> the process's; false when another one already is.</summary>
    public static bool TryInstall(CoreWorkerRuntime runtime) => Interlocked.CompareExchange(ref s_current, runtime, null) is null;

    /// <summary>Takes <paramref name="runtime"/> out when it is the process's; false when it was not (taken already).</summary>
    public static bool Uninstall(CoreWorkerRuntime runtime) => ReferenceEquals(Interlocked.CompareExchange(ref s_current, null, runtime), runtime);
}
