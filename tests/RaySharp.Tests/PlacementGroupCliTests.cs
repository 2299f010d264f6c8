using System.Text.Json;
using RaySharp.Common;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

using PlacementGroupState = RaySharp.Rpc.Protocol.PlacementGroupState;
using PlacementStrategy = RaySharp.Rpc.Protocol.PlacementStrategy;

/// <summary>
/// <c>raysharp list placement-groups</c> and the pending groups in <c>raysharp status</c>, the real CLI against a real
/// one-node cluster: a created group with its bundle on the node, and a STRICT_SPREAD group the one node cannot hold,
/// listed with why.
/// </summary>
public sealed class PlacementGroupCliTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(1);
    private RpcChannelPool? _channels;

    public void Dispose()
    {
        _channels?.Dispose();
        _net.Dispose();
    }

    private static CreatePlacementGroupRequest Create(string id, string name, PlacementStrategy strategy, int bundles, double cpus)
    {
        var spec = new PlacementGroupTableData { PlacementGroupId = id, Strategy = strategy, Name = name };
        for (var i = 0; i < bundles; i++) spec.Bundles.Add(new BundleSpec { BundleIndex = i, Resources = { ["CPU"] = cpus } });
        return new CreatePlacementGroupRequest { Spec = spec };
    }

    [Fact]
    public async Task ListShowsEachGroupsStrategyStateBundlesAndWhyItWaitsAndStatusCountsThePendingOnes()
    {
        var head = _net[0];
        var address = $"{head.Ip}:6379";
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=2")).ExitCode);
        _channels = new RpcChannelPool(Cli.MemberOf(address));
        var groups = new PlacementGroupInfoGcsService.PlacementGroupInfoGcsServiceClient(_channels.Get(address));

        var packed = UniqueId.New();
        Assert.True((await groups.CreatePlacementGroupAsync(Create(packed, "packed", PlacementStrategy.Pack, 1, 1))).Accepted);
        Assert.True((await groups.WaitPlacementGroupUntilReadyAsync(new WaitPlacementGroupUntilReadyRequest { PlacementGroupId = packed, TimeoutMs = 30_000 })).Ready);
        // Three bundles on distinct nodes, and the cluster has one.
        var spread = UniqueId.New();
        Assert.True((await groups.CreatePlacementGroupAsync(Create(spread, "spread", PlacementStrategy.StrictSpread, 3, 1))).Accepted);
        await ClusterAssertions.EventuallyAsync(async () =>
                (await groups.GetPlacementGroupAsync(new GetPlacementGroupRequest { PlacementGroupId = spread })).Info.StateMessage.Length > 0,
            TimeSpan.FromSeconds(20), "the STRICT_SPREAD group to say why it waits");

        var json = await Cli.RunAsync(head, "list", "placement-groups", "--format", "json");
        Assert.True(json.ExitCode == 0, json.ToString());
        var rows = JsonDocument.Parse(json.Stdout).RootElement.EnumerateArray().ToDictionary(r => r.GetProperty("name").GetString()!, r => r);
        var created = rows["packed"];
        Assert.Equal(packed, created.GetProperty("placement_group_id").GetString());
        Assert.Equal("PACK", created.GetProperty("strategy").GetString());
        Assert.Equal("CREATED", created.GetProperty("state").GetString());
        var bundle = Assert.Single(created.GetProperty("bundles").EnumerateArray().ToList());
        Assert.Equal(1, bundle.GetProperty("resources").GetProperty("CPU").GetDouble());
        Assert.Equal(head.Ip, bundle.GetProperty("node_ip_address").GetString());
        var waiting = rows["spread"];
        Assert.Equal("STRICT_SPREAD", waiting.GetProperty("strategy").GetString());
        Assert.Equal("PENDING", waiting.GetProperty("state").GetString());
        Assert.NotEqual("", waiting.GetProperty("state_message").GetString());
        Assert.All(waiting.GetProperty("bundles").EnumerateArray(), b => Assert.Equal("", b.GetProperty("node_id").GetString()));

        var text = await Cli.RunAsync(head, "list", "placement-groups");
        Assert.True(text.ExitCode == 0, text.ToString());
        Assert.Contains("Total: 2", text.Stdout, StringComparison.Ordinal);
        Assert.Contains("STRICT_SPREAD", text.Stdout, StringComparison.Ordinal);
        Assert.Contains("(not placed)", text.Stdout, StringComparison.Ordinal);
        Assert.Contains(UniqueId.Short(spread), text.Stdout, StringComparison.Ordinal);

        var status = await Cli.RunAsync(head, "status");
        Assert.True(status.ExitCode == 0, status.ToString());
        Assert.Contains(" {CPU: 1} * 3 (STRICT_SPREAD): 1+ pending placement groups", status.Stdout, StringComparison.Ordinal);
        var statusJson = await Cli.RunAsync(head, "status", "--format", "json");
        var pending = Assert.Single(JsonDocument.Parse(statusJson.Stdout).RootElement.GetProperty("pending_placement_groups").EnumerateArray().ToList());
        Assert.Equal(spread, pending.GetProperty("placement_group_id").GetString());

        // Once removed it is listed as such, and status has no demand left.
        Assert.True((await groups.RemovePlacementGroupAsync(new RemovePlacementGroupRequest { PlacementGroupId = spread })).Found);
        json = await Cli.RunAsync(head, "list", "placement-groups", "--format", "json");
        Assert.Contains(JsonDocument.Parse(json.Stdout).RootElement.EnumerateArray(), r => r.GetProperty("name").GetString() == "spread" && r.GetProperty("state").GetString() == "REMOVED");
        Assert.Contains("(no resource demands)", (await Cli.RunAsync(head, "status")).Stdout, StringComparison.Ordinal);
    }
}
