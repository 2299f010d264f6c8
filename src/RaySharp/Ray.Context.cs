using RaySharp.CoreWorker;
using RaySharp.CoreWorker.Submission;
using RaySharp.Rpc.Protocol;

namespace RaySharp;

/// <summary>Who is asking (the driver's runtime, or inside a task the worker running it), and what the cluster looks like.</summary>
public static partial class Ray
{
    /// <summary>The address of the cluster's GCS (<c>ip:port</c>).</summary>
    public static string GcsAddress => Runtime.GcsAddress;

    /// <summary>This job's id, assigned by the GCS (in a driver or inside one of its tasks).</summary>
    public static string JobId => CoreWorkerProcess.Current?.JobId ?? throw NotInitialized();

    /// <summary>Inside a task: the id of the node and of the worker running it. Null in a driver.</summary>
    public static string? NodeId => CoreWorkerProcess.Current?.NodeId;

    public static string? WorkerId => CoreWorkerProcess.Current?.WorkerId;

    /// <summary>The IP address of the node this code runs on, as the cluster sees it (in a driver or inside a task).</summary>
    public static string NodeIpAddress => Runtime.NodeIpAddress;

    /// <summary>Every node the cluster has known, alive or dead.</summary>
    public static IReadOnlyList<NodeDescription> Nodes() => NodesAsync().GetAwaiter().GetResult();

    /// <summary>As <see cref="Nodes"/>, awaited.</summary>
    public static async Task<IReadOnlyList<NodeDescription>> NodesAsync()
    {
        var nodes = await Runtime.Gcs.GetAllNodesAsync(aliveOnly: false).ConfigureAwait(false);
        return nodes.Select(n => new NodeDescription(
            n.NodeId, n.NodeIpAddress, n.State == NodeState.Alive, n.IsHeadNode,
            new Dictionary<string, double>(n.ResourcesTotal), new Dictionary<string, double>(n.ResourcesAvailable),
            n.State == NodeState.Alive ? null : n.DeathReason)).ToList();
    }

    /// <summary>Resources of all alive nodes, summed.</summary>
    public static IReadOnlyDictionary<string, double> ClusterResources() => Sum(Nodes(), n => n.Resources);

    /// <summary>As <see cref="ClusterResources"/>, awaited.</summary>
    public static async Task<IReadOnlyDictionary<string, double>> ClusterResourcesAsync() =>
        Sum(await NodesAsync().ConfigureAwait(false), n => n.Resources);

    /// <summary>Resources of all alive nodes not held by a lease now, summed.</summary>
    public static IReadOnlyDictionary<string, double> AvailableResources() => Sum(Nodes(), n => n.AvailableResources);

    /// <summary>As <see cref="AvailableResources"/>, awaited.</summary>
    public static async Task<IReadOnlyDictionary<string, double>> AvailableResourcesAsync() =>
        Sum(await NodesAsync().ConfigureAwait(false), n => n.AvailableResources);

    private static Dictionary<string, double> Sum(IReadOnlyList<NodeDescription> nodes, Func<NodeDescription, IReadOnlyDictionary<string, double>> pick)
    {
        var total = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var node in nodes.Where(n => n.Alive))
        {
            foreach (var (k, v) in pick(node)) total[k] = total.GetValueOrDefault(k) + v;
        }
        return total;
    }

    /// <summary>Who submits: the driver's runtime, or, inside a task, the worker running it (nested tasks).</summary>
    internal static (string JobId, CoreWorkerRuntime Runtime) SubmitContext() =>
        CoreWorkerProcess.Current is { JobId: { } jobId } runtime ? (jobId, runtime) : throw NotInitialized();

    /// <summary>The process's runtime, for what the API's types do with it (reading, writing and rebuilding objects).</summary>
    internal static CoreWorkerRuntime CurrentRuntime => Runtime;

    /// <summary>Who calls actors: the driver's runtime, or, inside a task or actor, the worker running it.</summary>
    internal static ActorCallerContext ActorContext() => CoreWorkerProcess.Current?.ActorCaller() ?? throw NotInitialized();
}
