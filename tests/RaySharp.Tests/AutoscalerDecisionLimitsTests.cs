using RaySharp.Autoscaler.Scaling;
using static RaySharp.Tests.AutoscalerHarness;

namespace RaySharp.Tests;

/// <summary>
/// What the autoscaler gives up on or takes back beyond the idle timeout: a node that never joins (the join timeout),
/// and idle nodes over a max_workers lowered while the cluster ran.
/// </summary>
public sealed class AutoscalerDecisionLimitsTests
{
    private static readonly LoadSnapshot OneNodeOfDemand = new() { PendingDemands = Demand((Shape("CPU", 4), 1)) };

    [Fact]
    public async Task ANodeThatNeverJoinsAfterItsSetupIsTerminatedAndBacksOff()
    {
        var h = new AutoscalerHarness(ClusterConfig(10, types: [("cpu4", Cpu4, 0, 10)]));
        await h.TickAsync(OneNodeOfDemand);
        Assert.Equal(["node-1"], h.SetUp);

        h.Clock.Advance(TimeSpan.FromMinutes(4.9));
        var update = await h.TickAsync(OneNodeOfDemand);
        Assert.Empty(update.Terminated);
        Assert.Empty(update.Launched);
        Assert.Equal("waiting-for-raylet", Assert.Single(h.Autoscaler.Summary.PendingNodes).State);

        h.Clock.Advance(TimeSpan.FromMinutes(0.1));
        update = await h.TickAsync(OneNodeOfDemand);
        Assert.Equal(["node-1"], update.Terminated);
        Assert.Empty(update.Launched);
        Assert.Empty(h.Autoscaler.Summary.PendingNodes);
        var failure = Assert.Single(h.Autoscaler.Summary.RecentFailures);
        Assert.Equal(("cpu4", "10.0.0.1"), (failure.NodeType, failure.Ip));
        Assert.Contains("did not join within 5 min", h.Autoscaler.Summary.Format());

        // The type waits its backoff, then the demand launches another.
        h.Clock.Advance(TimeSpan.FromSeconds(5));
        update = await h.TickAsync(OneNodeOfDemand);
        Assert.Equal(1, update.Launched["cpu4"]);
        Assert.Equal(["node-2"], h.Provider.Nodes.Select(n => n.Id));
    }

    [Fact]
    public async Task ANodeFoundAfterARestartThatNeverJoinsIsGivenUpAfterTheTimeoutFromThen()
    {
        var h = new AutoscalerHarness(ClusterConfig(10, types: [("cpu4", Cpu4, 0, 10)]));
        await h.TickAsync(OneNodeOfDemand);

        // A new monitor, long after the launch: its wait starts when it first sees the node.
        h.Clock.Advance(TimeSpan.FromHours(1));
        await using var restarted = new StandardAutoscaler(h.Config, h.Provider, (_, _) => Task.CompletedTask, h.Clock);
        var update = await restarted.UpdateAsync(OneNodeOfDemand, CancellationToken.None);
        Assert.Empty(update.Terminated);
        h.Clock.Advance(TimeSpan.FromMinutes(5));
        update = await restarted.UpdateAsync(OneNodeOfDemand, CancellationToken.None);
        Assert.Equal(["node-1"], update.Terminated);
        Assert.Contains("did not join within 5 min", Assert.Single(restarted.Summary.RecentFailures).Message);
    }

    [Fact]
    public async Task AJoinedNodeIsNeverTakenForOneThatDidNotJoin()
    {
        var h = new AutoscalerHarness(ClusterConfig(10, types: [("cpu4", Cpu4, 0, 10)]));
        await h.TickAsync(OneNodeOfDemand);
        await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(n => h.Load(n, used: 4)) });
        h.Clock.Advance(TimeSpan.FromMinutes(10));
        var update = await h.TickAsync(new LoadSnapshot());
        Assert.Empty(update.Terminated);
        Assert.Equal("not-reporting", Assert.Single(h.Autoscaler.Summary.PendingNodes).State);
    }

    [Fact]
    public async Task AfterATypesMaxWorkersIsLoweredItsIdleSurplusGoesTheLongestIdleFirstAndBusyNodesStay()
    {
        var drained = new List<string>();
        var h = new AutoscalerHarness(ClusterConfig(10, types: [("cpu4", Cpu4, 1, 10)]), (n, _) =>
        {
            drained.Add(n.NodeId);
            return Task.FromResult(true);
        });
        await h.TickAsync(new LoadSnapshot { PendingDemands = Demand((Shape("CPU", 4), 4)) });
        Assert.Equal(4, h.Launched("cpu4"));

        // Idle for a minute or three, well under the idle timeout; node-1 and node-4 are busy.
        var now = h.Clock.GetUtcNow();
        var busy = new HashSet<string> { "node-1", "node-4" };
        NodeLoad Load(Autoscaler.Providers.ProviderNode n) => busy.Contains(n.Id) ? h.Load(n, used: 4)
            : h.Load(n, idleSince: now - TimeSpan.FromMinutes(n.Id == "node-3" ? 3 : 1));
        var update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(Load) });
        Assert.Empty(update.Terminated);

        h.Config.AvailableNodeTypes["cpu4"].MaxWorkers = 1;
        update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(Load) });
        Assert.Equal(["node-3", "node-2"], update.Drained);
        Assert.Equal(["node-3", "node-2"], drained);
        Assert.Equal(["node-1", "node-4"], h.Provider.Nodes.Select(n => n.Id));

        // node-1 finishes: it goes too, and node-4, busy, is the one max_workers allows.
        busy.Remove("node-1");
        update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(Load) });
        Assert.Equal(["node-1"], update.Terminated);
        busy.Remove("node-4");
        update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(Load) });
        Assert.Empty(update.Terminated);
        Assert.Empty(update.Launched);
        Assert.Equal(["node-4"], h.Provider.Nodes.Select(n => n.Id));
    }

    [Fact]
    public async Task AfterTheClustersMaxWorkersIsLoweredIdleSurplusGoesButNoTypeBelowItsMinWorkers()
    {
        var h = new AutoscalerHarness(ClusterConfig(10, types: [("a", new() { ["CPU"] = 4, ["a"] = 1 }, 0, 10), ("b", Cpu4, 1, 10)]));
        await h.TickAsync(new LoadSnapshot { PendingDemands = Demand((Shape("a", 1), 3)) });
        Assert.Equal((3, 1), (h.Launched("a"), h.Launched("b")));

        // b's node has been idle the longest, but it is b's min_workers.
        var now = h.Clock.GetUtcNow();
        var idleFor = new Dictionary<string, double> { ["node-1"] = 1, ["node-2"] = 3, ["node-3"] = 2, ["node-4"] = 4 };
        var nodeB = h.Provider.Nodes.Single(n => n.Tag(Autoscaler.Providers.NodeTags.NodeType) == "b").Id;
        idleFor[nodeB] = 10;
        LoadSnapshot Snapshot() => new() { Nodes = h.AllJoined(n => h.Load(n, idleSince: now - TimeSpan.FromMinutes(idleFor[n.Id]))) };
        await h.TickAsync(Snapshot());

        h.Config.MaxWorkers = 2;
        var update = await h.TickAsync(Snapshot());
        Assert.Equal(2, update.Terminated.Count);
        Assert.DoesNotContain(nodeB, update.Terminated);
        Assert.Equal(2, h.Provider.Nodes.Count);
        Assert.Contains(nodeB, h.Provider.Nodes.Select(n => n.Id));

        update = await h.TickAsync(Snapshot());
        Assert.Empty(update.Terminated);
        Assert.Empty(update.Launched);
    }

    [Fact]
    public async Task WhatADrainingNodeHasFreeTakesNoDemand()
    {
        var h = new AutoscalerHarness(ClusterConfig(10, types: [("cpu4", Cpu4, 0, 10)]));
        await h.TickAsync(OneNodeOfDemand);
        var update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(), PendingDemands = OneNodeOfDemand.PendingDemands });
        Assert.Empty(update.Launched);
        update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(n => h.Load(n) with { Draining = true }), PendingDemands = OneNodeOfDemand.PendingDemands });
        Assert.Equal(1, update.Launched["cpu4"]);
    }
}
