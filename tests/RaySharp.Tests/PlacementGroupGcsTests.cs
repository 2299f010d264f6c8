using RaySharp.Common;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

using PlacementGroupState = RaySharp.Rpc.Protocol.PlacementGroupState;
using PlacementStrategy = RaySharp.Rpc.Protocol.PlacementStrategy;

/// <summary>
/// Placement groups through the GCS's service on a 3-host namespace cluster: the GCS places the bundles by strategy and
/// reserves them on the raylets in two phases; a group no set of nodes can hold waits, saying why; removal gives every
/// bundle back. The service refuses callers without the cluster's token.
/// </summary>
public sealed class PlacementGroupGcsTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(3);
    private RpcChannelPool? _channels;

    public void Dispose()
    {
        _channels?.Dispose();
        _net.Dispose();
    }

    private static CreatePlacementGroupRequest Create(string id, PlacementStrategy strategy, int bundles, double cpus)
    {
        var spec = new PlacementGroupTableData { PlacementGroupId = id, Strategy = strategy, Name = "pg-" + id };
        for (var i = 0; i < bundles; i++) spec.Bundles.Add(new BundleSpec { BundleIndex = i, Resources = { ["CPU"] = cpus } });
        return new CreatePlacementGroupRequest { Spec = spec };
    }

    [Fact]
    public async Task StrictSpreadTakesThreeNodesStrictPackOneFourStrictSpreadBundlesWaitAndRemovalFreesEverything()
    {
        var head = _net[0];
        var address = $"{head.Ip}:6379";
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=2")).ExitCode);
        foreach (var worker in new[] { _net[1], _net[2] })
            Assert.Equal(0, (await Cli.RunAsync(worker, "start", $"--address={address}", "--num-cpus=2")).ExitCode);
        _channels = new RpcChannelPool(Cli.MemberOf(address));
        var gcs = new GcsClient(_channels, address);
        var groups = new PlacementGroupInfoGcsService.PlacementGroupInfoGcsServiceClient(_channels.Get(address));
        await ClusterAssertions.EventuallyAsync(async () => (await gcs.GetAllNodesAsync(aliveOnly: true)).Count == 3, TimeSpan.FromSeconds(30), "three nodes");

        // The service is behind the cluster's gate: without the token, or with another, nothing is created.
        foreach (var security in new[] { new RpcSecurityOptions(), new RpcSecurityOptions { ClusterToken = ClusterToken.Generate() } })
        {
            using var stranger = new RpcChannelPool(security);
            var intruder = new PlacementGroupInfoGcsService.PlacementGroupInfoGcsServiceClient(stranger.Get(address));
            await ClusterAssertions.EventuallyAsync(async () =>
            {
                var refused = await Assert.ThrowsAsync<Grpc.Core.RpcException>(() => intruder.CreatePlacementGroupAsync(Create(UniqueId.New(), PlacementStrategy.Pack, 1, 1)).ResponseAsync);
                Assert.True(refused.StatusCode is Grpc.Core.StatusCode.Unauthenticated or Grpc.Core.StatusCode.Internal or Grpc.Core.StatusCode.Unavailable, refused.ToString());
                return refused.StatusCode == Grpc.Core.StatusCode.Unauthenticated;
            }, TimeSpan.FromSeconds(20), "a placement group request without the cluster's token being refused as Unauthenticated");
        }
        Assert.Empty((await groups.GetAllPlacementGroupAsync(new GetAllPlacementGroupRequest { IncludeRemoved = true })).PlacementGroups);

        // STRICT_SPREAD over three nodes: one bundle each, its CPU reserved there as the group's.
        var spread = UniqueId.New();
        var createdSpread = await groups.CreatePlacementGroupAsync(Create(spread, PlacementStrategy.StrictSpread, 3, 1));
        Assert.True(createdSpread.Accepted, createdSpread.ErrorMessage);
        var ready = await groups.WaitPlacementGroupUntilReadyAsync(new WaitPlacementGroupUntilReadyRequest { PlacementGroupId = spread, TimeoutMs = 30_000 });
        Assert.True(ready.Ready, ready.State.ToString());
        var info = (await groups.GetPlacementGroupAsync(new GetPlacementGroupRequest { PlacementGroupId = spread })).Info;
        Assert.Equal(PlacementGroupState.Created, info.State);
        Assert.Equal(3, info.Bundles.Select(b => b.NodeId).Distinct().Count());
        await ClusterAssertions.EventuallyAsync(async () => (await gcs.GetAllNodesAsync(aliveOnly: true))
                .All(n => info.Bundles.Any(b => b.NodeId == n.NodeId && n.ResourcesTotal.ContainsKey(BundleResources.Indexed("CPU", spread, b.BundleIndex)))),
            TimeSpan.FromSeconds(20), "each node to report its bundle's resources");

        // STRICT_PACK of two 1-CPU bundles: the one CPU left on each node is not enough, so it waits, not infeasible.
        var pack = UniqueId.New();
        var createdPack = await groups.CreatePlacementGroupAsync(Create(pack, PlacementStrategy.StrictPack, 2, 1));
        Assert.True(createdPack.Accepted, createdPack.ErrorMessage);
        await ClusterAssertions.EventuallyAsync(async () =>
                (await groups.GetPlacementGroupAsync(new GetPlacementGroupRequest { PlacementGroupId = pack })).Info.StateMessage.Contains("not free now", StringComparison.Ordinal),
            TimeSpan.FromSeconds(20), "the STRICT_PACK group to wait for free resources");

        // Four STRICT_SPREAD bundles on three nodes: pending, infeasible, and it says so.
        var four = UniqueId.New();
        var createdFour = await groups.CreatePlacementGroupAsync(Create(four, PlacementStrategy.StrictSpread, 4, 0.5));
        Assert.True(createdFour.Accepted, createdFour.ErrorMessage);
        await ClusterAssertions.EventuallyAsync(async () =>
                (await groups.GetPlacementGroupAsync(new GetPlacementGroupRequest { PlacementGroupId = four })).Info is { Infeasible: true, State: PlacementGroupState.Pending },
            TimeSpan.FromSeconds(20), "four STRICT_SPREAD bundles on three nodes to be reported infeasible");
        Assert.Contains("STRICT_SPREAD", (await groups.GetPlacementGroupAsync(new GetPlacementGroupRequest { PlacementGroupId = four })).Info.StateMessage);
        Assert.False((await groups.WaitPlacementGroupUntilReadyAsync(new WaitPlacementGroupUntilReadyRequest { PlacementGroupId = four, TimeoutMs = 500 })).Ready);

        // Removing the spread group frees its CPUs: the STRICT_PACK one then fits on one node and is created there.
        Assert.True((await groups.RemovePlacementGroupAsync(new RemovePlacementGroupRequest { PlacementGroupId = spread })).Found);
        Assert.True((await groups.WaitPlacementGroupUntilReadyAsync(new WaitPlacementGroupUntilReadyRequest { PlacementGroupId = pack, TimeoutMs = 30_000 })).Ready);
        var packed = (await groups.GetPlacementGroupAsync(new GetPlacementGroupRequest { PlacementGroupId = pack })).Info;
        Assert.Single(packed.Bundles.Select(b => b.NodeId).Distinct());
        var names = (await groups.GetAllPlacementGroupAsync(new GetAllPlacementGroupRequest())).PlacementGroups.Select(g => g.PlacementGroupId).ToList();
        Assert.Equal(new[] { pack, four }.Order(StringComparer.Ordinal), names.Order(StringComparer.Ordinal));

        // Everything removed: every node's available equals its total again, with no group resource left.
        Assert.True((await groups.RemovePlacementGroupAsync(new RemovePlacementGroupRequest { PlacementGroupId = pack })).Found);
        Assert.True((await groups.RemovePlacementGroupAsync(new RemovePlacementGroupRequest { PlacementGroupId = four })).Found);
        await ClusterAssertions.EventuallyAsync(async () => (await gcs.GetAllNodesAsync(aliveOnly: true)).All(n =>
                !n.ResourcesTotal.Keys.Any(k => k.Contains("_group_", StringComparison.Ordinal))
                && n.ResourcesTotal.Where(r => r.Key == "CPU").All(r => n.ResourcesAvailable.GetValueOrDefault("CPU") == r.Value)),
            TimeSpan.FromSeconds(20), "every node's CPUs to be free and no group resource left");
    }
}
