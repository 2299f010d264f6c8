using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs.PlacementGroups;

/// <summary>
/// The raylets as the placement group manager reaches them: the two phases of reserving bundles, and giving them back.
/// An interface so that the manager's two-phase commit, rollback and recovery are tested against a fake without raylets.
/// </summary>
internal interface IBundleReserver
{
    /// <summary>Locks the bundles' resources on the node, all or none; the reply says whether they fit.</summary>
    Task<PrepareBundleResourcesReply> PrepareAsync(NodeInfo node, IReadOnlyList<BundleSpec> bundles, CancellationToken cancellationToken);

    /// <summary>Turns prepared bundles into the group's bundle resources on the node.</summary>
    Task CommitAsync(NodeInfo node, IReadOnlyList<BundleSpec> bundles, CancellationToken cancellationToken);

    /// <summary>Gives a prepared or committed bundle back (its workers are killed); a bundle the node does not hold is no error.</summary>
    Task CancelAsync(NodeInfo node, BundleSpec bundle, CancellationToken cancellationToken);

    /// <summary>After a GCS restart: the node gives back every bundle it holds that is not in <paramref name="inUse"/>.</summary>
    Task ReleaseUnusedAsync(NodeInfo node, IReadOnlyList<BundleSpec> inUse, CancellationToken cancellationToken);
}

/// <summary>The real raylets, over their node manager service.</summary>
internal sealed class RayletBundleReserver(RpcChannelPool channels, TimeSpan callTimeout) : IBundleReserver
{
    private NodeManagerService.NodeManagerServiceClient Client(NodeInfo node) => new(channels.Get(node.NodeIpAddress, node.NodeManagerPort));

    private DateTime Deadline => DateTime.UtcNow + callTimeout;

    public async Task<PrepareBundleResourcesReply> PrepareAsync(NodeInfo node, IReadOnlyList<BundleSpec> bundles, CancellationToken cancellationToken)
    {
        var request = new PrepareBundleResourcesRequest();
        request.Bundles.Add(bundles);
        return await Client(node).PrepareBundleResourcesAsync(request, deadline: Deadline, cancellationToken: cancellationToken).ConfigureAwait(false);
    }

    public async Task CommitAsync(NodeInfo node, IReadOnlyList<BundleSpec> bundles, CancellationToken cancellationToken)
    {
        var request = new CommitBundleResourcesRequest();
        request.Bundles.Add(bundles);
        await Client(node).CommitBundleResourcesAsync(request, deadline: Deadline, cancellationToken: cancellationToken).ConfigureAwait(false);
    }

    public async Task CancelAsync(NodeInfo node, BundleSpec bundle, CancellationToken cancellationToken) =>
        await Client(node).CancelResourceReserveAsync(new CancelResourceReserveRequest { Bundle = bundle }, deadline: Deadline, cancellationToken: cancellationToken).ConfigureAwait(false);

    public async Task ReleaseUnusedAsync(NodeInfo node, IReadOnlyList<BundleSpec> inUse, CancellationToken cancellationToken)
    {
        var request = new ReleaseUnusedBundlesRequest();
        request.BundlesInUse.Add(inUse);
        await Client(node).ReleaseUnusedBundlesAsync(request, deadline: Deadline, cancellationToken: cancellationToken).ConfigureAwait(false);
    }
}
