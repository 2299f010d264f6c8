using Grpc.Core;
using RaySharp.Common;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>
/// The raylet's half of placement groups, driven over gRPC as the GCS will drive it: prepare (all or none), commit
/// into the group's resources, leases of those resources, cancel (killing the group's workers) and release.
/// </summary>
public sealed class PlacementGroupBundleTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(1);
    private RpcChannelPool? _channels;

    public void Dispose()
    {
        _channels?.Dispose();
        _net.Dispose();
    }

    [Fact]
    public async Task BundlesArePreparedCommittedLeasedAndCancelled()
    {
        var head = _net[0];
        var address = $"{head.Ip}:6379";
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=2")).ExitCode);
        _channels = new RpcChannelPool(Cli.MemberOf(address));
        var node = (await ClusterAssertions.StatusAsync(head)).Single();
        var raylet = new NodeManagerService.NodeManagerServiceClient(_channels.Get(node.Ip, node.Port));
        var gcs = new GcsClient(_channels, address);
        Task<GetNodeStatsReply> Stats() => raylet.GetNodeStatsAsync(new GetNodeStatsRequest()).ResponseAsync;
        var group = UniqueId.New();
        var other = UniqueId.New();

        // Through the gate as every call: never served without the token, and refused as such at least once (on a
        // loaded machine the refused connection may be lost first: Internal or Unavailable).
        await ClusterAssertions.EventuallyAsync(async () =>
        {
            using var anonymous = new RpcChannelPool(new RpcSecurityOptions());
            var refused = await Assert.ThrowsAsync<RpcException>(() => new NodeManagerService.NodeManagerServiceClient(anonymous.Get(node.Ip, node.Port))
                .PrepareBundleResourcesAsync(Prepare(Bundle(group, 0, ("CPU", 1)))).ResponseAsync);
            Assert.True(refused.StatusCode is StatusCode.Unauthenticated or StatusCode.Internal or StatusCode.Unavailable, refused.ToString());
            return refused.StatusCode == StatusCode.Unauthenticated;
        }, TimeSpan.FromSeconds(20), "an anonymous prepare being refused as Unauthenticated");
        Assert.Empty((await Stats()).PreparedBundles);
        var malformed = await Assert.ThrowsAsync<RpcException>(() => raylet.PrepareBundleResourcesAsync(Prepare(Bundle("not-an-id", 0, ("CPU", 1)))).ResponseAsync);
        Assert.Equal(StatusCode.InvalidArgument, malformed.StatusCode);

        // Prepare: the CPU is taken from available and held for the group; again, nothing more is taken.
        Assert.True((await raylet.PrepareBundleResourcesAsync(Prepare(Bundle(group, 0, ("CPU", 1))))).Success);
        Assert.True((await raylet.PrepareBundleResourcesAsync(Prepare(Bundle(group, 0, ("CPU", 1))))).Success);
        var stats = await Stats();
        Assert.Equal(1, stats.ResourcesAvailable["CPU"]);
        Assert.Equal(2, stats.ResourcesTotal["CPU"]);
        Assert.Equal(group, Assert.Single(stats.PreparedBundles).PlacementGroupId);

        // All or none: the second bundle does not fit, so the first is not held either.
        var failed = await raylet.PrepareBundleResourcesAsync(Prepare(Bundle(other, 0, ("CPU", 1)), Bundle(other, 1, ("CPU", 1))));
        Assert.False(failed.Success);
        Assert.Contains($"bundle 1 of placement group {other}", failed.FailureMessage);
        Assert.Contains("CPU: 1 wanted, 0 free", failed.FailureMessage);
        stats = await Stats();
        Assert.Equal(1, stats.ResourcesAvailable["CPU"]);
        Assert.Single(stats.PreparedBundles);

        // Commit: the group's resources appear, here and at the GCS; an unknown bundle is refused.
        var unknown = await Assert.ThrowsAsync<RpcException>(() => raylet.CommitBundleResourcesAsync(Commit(Bundle(other, 0, ("CPU", 1)))).ResponseAsync);
        Assert.Equal(StatusCode.FailedPrecondition, unknown.StatusCode);
        await raylet.CommitBundleResourcesAsync(Commit(Bundle(group, 0, ("CPU", 1))));
        await raylet.CommitBundleResourcesAsync(Commit(Bundle(group, 0, ("CPU", 1))));
        stats = await Stats();
        Assert.Equal(1, stats.ResourcesTotal[BundleResources.Indexed("CPU", group, 0)]);
        Assert.Equal(1, stats.ResourcesTotal[BundleResources.Wildcard("CPU", group)]);
        Assert.Equal(1000, stats.ResourcesAvailable[BundleResources.Indexed(BundleResources.Marker, group, 0)]);
        Assert.Equal(1, stats.ResourcesAvailable["CPU"]);
        Assert.Single(stats.CommittedBundles);
        await ClusterAssertions.EventuallyAsync(async () => (await gcs.GetAllNodesAsync(aliveOnly: true)).Single().ResourcesTotal.ContainsKey(BundleResources.Indexed("CPU", group, 0)),
            TimeSpan.FromSeconds(10), "the GCS's node table listing the bundle's resources");
        // `status` counts the bundle's CPU as used and leaves the group's names out (they are that CPU again).
        var status = (await Cli.RunAsync(head, "status")).Stdout;
        Assert.DoesNotContain("_group_", status);
        Assert.Contains("1.0/2.0 CPU", status);

        // A lease of the bundle's CPU is granted; one asking more than the bundle holds never is.
        var inBundle = await raylet.RequestWorkerLeaseAsync(Lease((BundleResources.Indexed("CPU", group, 0), 1), (BundleResources.Wildcard("CPU", group), 1)))
            .ResponseAsync.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.NotNull(inBundle.WorkerAddress);
        Assert.Equal(0, (await Stats()).ResourcesAvailable[BundleResources.Indexed("CPU", group, 0)]);
        using (var cancel = new CancellationTokenSource())
        {
            var tooBig = raylet.RequestWorkerLeaseAsync(Lease((BundleResources.Indexed("CPU", group, 0), 2)), cancellationToken: cancel.Token);
            await ClusterAssertions.EventuallyAsync(async () => (await Stats()).InfeasibleLeases == 1, TimeSpan.FromSeconds(5), "the lease larger than the bundle being infeasible");
            Assert.False(tooBig.ResponseAsync.IsCompleted);
            cancel.Cancel();
            await Assert.ThrowsAsync<RpcException>(() => tooBig.ResponseAsync);
        }

        // Cancel: the group's worker is killed, its resources and the bundle's CPU return, the group's names go.
        await raylet.CancelResourceReserveAsync(new CancelResourceReserveRequest { Bundle = Bundle(group, 0, ("CPU", 1)) });
        await ClusterAssertions.EventuallyAsync(async () => (await Stats()).Workers.All(w => w.Pid != inBundle.WorkerAddress.Pid),
            TimeSpan.FromSeconds(10), "the bundle's worker being killed");
        stats = await Stats();
        Assert.Empty(stats.CommittedBundles);
        Assert.DoesNotContain(stats.ResourcesTotal.Keys, k => k.Contains("_group_"));
        Assert.Equal(stats.ResourcesTotal.OrderBy(r => r.Key), stats.ResourcesAvailable.OrderBy(r => r.Key));
        var gone = await Assert.ThrowsAsync<RpcException>(() => raylet.ReturnWorkerAsync(new ReturnWorkerRequest { LeaseId = inBundle.LeaseId }).ResponseAsync);
        Assert.Equal(StatusCode.NotFound, gone.StatusCode);
        // Cancelling what is not held is nothing to do.
        await raylet.CancelResourceReserveAsync(new CancelResourceReserveRequest { Bundle = Bundle(group, 0, ("CPU", 1)) });

        // Release: whatever the GCS does not list goes.
        Assert.True((await raylet.PrepareBundleResourcesAsync(Prepare(Bundle(other, 0, ("CPU", 1)), Bundle(other, 1, ("CPU", 1))))).Success);
        await raylet.CommitBundleResourcesAsync(Commit(Bundle(other, 0, ("CPU", 1))));
        await raylet.ReleaseUnusedBundlesAsync(new ReleaseUnusedBundlesRequest { BundlesInUse = { Bundle(other, 1, ("CPU", 1)) } });
        stats = await Stats();
        Assert.Equal(1, Assert.Single(stats.PreparedBundles).BundleIndex);
        Assert.Empty(stats.CommittedBundles);
        await raylet.ReleaseUnusedBundlesAsync(new ReleaseUnusedBundlesRequest());
        stats = await Stats();
        Assert.Empty(stats.PreparedBundles);
        Assert.Equal(2, stats.ResourcesAvailable["CPU"]);
        Assert.DoesNotContain(stats.ResourcesTotal.Keys, k => k.Contains("_group_"));

        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }

    private static BundleSpec Bundle(string group, int index, params (string Name, double Quantity)[] resources)
    {
        var spec = new BundleSpec { PlacementGroupId = group, BundleIndex = index };
        foreach (var (name, quantity) in resources) spec.Resources[name] = quantity;
        return spec;
    }

    private static PrepareBundleResourcesRequest Prepare(params BundleSpec[] bundles) => new() { Bundles = { bundles } };

    private static CommitBundleResourcesRequest Commit(params BundleSpec[] bundles) => new() { Bundles = { bundles } };

    private static RequestWorkerLeaseRequest Lease(params (string Name, double Quantity)[] shape)
    {
        var request = new RequestWorkerLeaseRequest { LeaseRequestId = UniqueId.New() };
        foreach (var (name, quantity) in shape) request.Resources[name] = quantity;
        return request;
    }
}
