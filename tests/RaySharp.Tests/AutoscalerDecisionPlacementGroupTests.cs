using RaySharp.Autoscaler.Config;
using RaySharp.Autoscaler.Monitor;
using RaySharp.Autoscaler.Providers;
using RaySharp.Autoscaler.Scaling;
using RaySharp.Common;
using RaySharp.Rpc.Protocol;
using static RaySharp.Tests.AutoscalerHarness;

namespace RaySharp.Tests;

using PlacementGroupState = RaySharp.Rpc.Protocol.PlacementGroupState;
using PlacementStrategy = RaySharp.Rpc.Protocol.PlacementStrategy;

/// <summary>
/// Placement groups as autoscaler demand (Ray's <c>placement_group_load</c>): what a pending group launches for each
/// strategy, that a created one launches nothing, and that a node holding bundles is never scaled down.
/// </summary>
public sealed class AutoscalerDecisionPlacementGroupTests
{
    private static readonly Dictionary<string, double> s_cpu1 = new() { ["CPU"] = 1 };
    private static readonly Dictionary<string, double> s_cpu2 = new() { ["CPU"] = 2 };

    private static PlacementGroupDemand Group(GroupStrategy strategy, int count, double cpus, params string[] placedOn) =>
        new(UniqueId.New(), strategy, [.. Enumerable.Repeat<IReadOnlyDictionary<string, double>>(Shape("CPU", cpus), count)])
        {
            PlacedOn = placedOn.ToHashSet(StringComparer.Ordinal),
        };

    [Fact]
    public async Task AStrictSpreadGroupOfThreeLaunchesThreeNodesOnAnEmptyClusterAndNoMoreWhileTheyComeUp()
    {
        // A four-CPU node would hold all three bundles, were they allowed on one node.
        var h = new AutoscalerHarness(ClusterConfig(10, types: [("cpu1", s_cpu1, 0, 10), ("cpu4", Cpu4, 0, 10)]));
        h.Provider.AddHead();
        var group = Group(GroupStrategy.StrictSpread, 3, 1);

        var update = await h.TickAsync(new LoadSnapshot { PlacementGroups = [group] });
        Assert.Equal(new Dictionary<string, int> { ["cpu1"] = 3 }, update.Launched);
        Assert.Contains(" {'CPU': 1.0} * 3 (STRICT_SPREAD): 1+ pending placement groups", h.Autoscaler.Summary.Format(), StringComparison.Ordinal);

        // Pending, then joined and free: the group is placed on them by the GCS, nothing more is launched.
        update = await h.TickAsync(new LoadSnapshot { PlacementGroups = [group] });
        Assert.Empty(update.Launched);
        update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(), PlacementGroups = [group] });
        Assert.Empty(update.Launched);
        Assert.Equal(3, h.Launched("cpu1"));
    }

    [Fact]
    public void AStrictSpreadGroupTakesOneBundlePerNodeAndNotTheNodesItsPlacedBundlesHold()
    {
        var types = new Dictionary<string, WorkerTypeLimits> { ["cpu4"] = new(Cpu4, 0, 10) };
        var config = new SchedulerConfig(types, 10, 1);
        // A running node with four free CPUs takes one bundle of a group, not two.
        var node = new SchedulingNode("cpu4", Cpu4, Cpu4, SchedulingNodeState.Running) { NodeId = "n1" };
        var plan = ResourceDemandScheduler.GetNodesToLaunch(config, [node], [], [], [Group(GroupStrategy.StrictSpread, 2, 1)]);
        Assert.Equal(new Dictionary<string, int> { ["cpu4"] = 1 }, plan.ToLaunch);

        // Rescheduling after a node died: n1 holds one of the group's bundles already, so the two lost ones need two new nodes.
        plan = ResourceDemandScheduler.GetNodesToLaunch(config, [node], [], [], [Group(GroupStrategy.StrictSpread, 2, 1, placedOn: "n1")]);
        Assert.Equal(new Dictionary<string, int> { ["cpu4"] = 2 }, plan.ToLaunch);

        // Two groups may share a node: one new node's CPUs hold a bundle of each (the anti-affinity is within a group).
        plan = ResourceDemandScheduler.GetNodesToLaunch(config, [], [], [], [Group(GroupStrategy.StrictSpread, 2, 2), Group(GroupStrategy.StrictSpread, 2, 2)]);
        Assert.Equal(new Dictionary<string, int> { ["cpu4"] = 2 }, plan.ToLaunch);

        // What the group's bundles take of the new nodes is not free for the queued demand after it.
        plan = ResourceDemandScheduler.GetNodesToLaunch(config, [], Demand((Shape("CPU", 4), 1)), [], [Group(GroupStrategy.StrictSpread, 1, 1)]);
        Assert.Equal(new Dictionary<string, int> { ["cpu4"] = 2 }, plan.ToLaunch);
    }

    [Fact]
    public async Task AStrictPackGroupLaunchesOneNodeThatHoldsAllItsBundles()
    {
        var h = new AutoscalerHarness(ClusterConfig(10, types: [("cpu2", s_cpu2, 0, 10), ("cpu4", Cpu4, 0, 10)]));
        var update = await h.TickAsync(new LoadSnapshot { PlacementGroups = [Group(GroupStrategy.StrictPack, 2, 2)] });
        Assert.Equal(new Dictionary<string, int> { ["cpu4"] = 1 }, update.Launched);
        Assert.Contains(" {'CPU': 2.0} * 2 (STRICT_PACK): 1+ pending placement groups", h.Autoscaler.Summary.Format(), StringComparison.Ordinal);
    }

    [Fact]
    public void PackAndSpreadBundlesAreEachAShapeOnWhatIsFree()
    {
        var types = new Dictionary<string, WorkerTypeLimits> { ["cpu4"] = new(Cpu4, 0, 10) };
        var config = new SchedulerConfig(types, 10, 1);
        // One CPU free on a running node: one bundle fits there, the other gets a node.
        var node = new SchedulingNode("cpu4", Cpu4, s_cpu1, SchedulingNodeState.Running) { NodeId = "n1" };
        var plan = ResourceDemandScheduler.GetNodesToLaunch(config, [node], [], [], [Group(GroupStrategy.Pack, 2, 1)]);
        Assert.Equal(new Dictionary<string, int> { ["cpu4"] = 1 }, plan.ToLaunch);
        plan = ResourceDemandScheduler.GetNodesToLaunch(config, [node], [], [], [Group(GroupStrategy.Spread, 1, 1)]);
        Assert.Empty(plan.ToLaunch);
    }

    [Fact]
    public async Task AGroupNoNodeTypeCanHoldLaunchesNothingAndIsReported()
    {
        var h = new AutoscalerHarness(ClusterConfig(10, types: [("cpu4", Cpu4, 0, 10)]));
        // Each bundle fits a cpu4 node, their sum (STRICT_PACK) does not.
        var update = await h.TickAsync(new LoadSnapshot { PlacementGroups = [Group(GroupStrategy.StrictPack, 2, 3), Group(GroupStrategy.StrictSpread, 2, 8)] });
        Assert.Empty(update.Launched);
        Assert.Equal(2, update.Infeasible.Count);
        var text = h.Autoscaler.Summary.Format();
        Assert.Contains(" {'CPU': 3.0} * 2 (STRICT_PACK): 1 placement groups", text, StringComparison.Ordinal);
        Assert.DoesNotContain("pending placement groups", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ANodeHoldingBundlesIsNeverScaledDown()
    {
        var h = new AutoscalerHarness(ClusterConfig(10, idleMinutes: 1, types: [("cpu4", Cpu4, 0, 10)]), (_, _) => throw new InvalidOperationException("no drain expected"));
        await h.TickAsync(new LoadSnapshot { PendingDemands = Demand((Shape("CPU", 4), 2)) });
        var since = h.Clock.GetUtcNow();
        h.Clock.Advance(TimeSpan.FromMinutes(30));
        // Idle for the raylet (no lease) and every resource available, as a node whose bundles' resources were left out
        // of its total looks: only the bundles it holds keep it.
        var update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(n => h.Load(n, idleSince: since) with { HoldsBundles = true }) });
        Assert.Empty(update.Drained);
        Assert.Empty(h.Provider.Terminations);
        Assert.Empty(h.Autoscaler.Summary.IdleNodes);
    }

    [Fact]
    public async Task ACreatedGroupAddsNoDemand()
    {
        var created = Table(PlacementGroupState.Created, PlacementStrategy.StrictSpread, ("n1", 1), ("n2", 1));
        var prepared = Table(PlacementGroupState.Prepared, PlacementStrategy.Pack, ("n1", 1));
        var snapshot = GcsLoad.Snapshot(MonitorConfig(), [], [], [], DateTimeOffset.UnixEpoch, [created, prepared]);
        Assert.Empty(snapshot.PlacementGroups);

        var h = new AutoscalerHarness(ClusterConfig(10, types: [("cpu4", Cpu4, 0, 10)]));
        var update = await h.TickAsync(snapshot);
        Assert.Empty(update.Launched);
        Assert.Contains("(no resource demands)", h.Autoscaler.Summary.Format(), StringComparison.Ordinal);
    }

    [Fact]
    public void TheMonitorReadsPendingAndReschedulingGroupsAndLeavesGroupResourcesOutOfNodes()
    {
        var pending = Table(PlacementGroupState.Pending, PlacementStrategy.StrictPack, ("", 2), ("", 2));
        var rescheduling = Table(PlacementGroupState.Rescheduling, PlacementStrategy.StrictSpread, ("n1", 1), ("", 1), ("", 1));
        var removed = Table(PlacementGroupState.Removed, PlacementStrategy.Pack, ("", 1));
        var node = new NodeInfo { NodeId = "n1", NodeIpAddress = "10.0.0.2", State = NodeState.Alive, IdleDurationMs = 60_000 };
        var bundle = BundleResources.Committed(rescheduling.PlacementGroupId, 0, s_cpu1);
        node.ResourcesTotal.Add(new Dictionary<string, double>(bundle) { ["CPU"] = 4 });
        node.ResourcesAvailable.Add(new Dictionary<string, double>(bundle) { ["CPU"] = 3 });
        // A task waiting for the group's bundle waits for the group, not for a node.
        node.PendingDemands.Add(new Rpc.Protocol.ResourceDemand { Count = 1, Shape = { [BundleResources.Wildcard("CPU", rescheduling.PlacementGroupId)] = 1 } });

        var snapshot = GcsLoad.Snapshot(MonitorConfig(), [node], [], [], DateTimeOffset.UnixEpoch, [pending, rescheduling, removed]);

        var load = Assert.Single(snapshot.Nodes);
        Assert.True(load.HoldsBundles);
        Assert.False(load.IsIdle);
        Assert.Equal(new Dictionary<string, double> { ["CPU"] = 4 }, load.Total);
        Assert.Equal(new Dictionary<string, double> { ["CPU"] = 3 }, load.Available);
        Assert.Empty(snapshot.PendingDemands);
        Assert.Equal(2, snapshot.PlacementGroups.Count);
        var pack = snapshot.PlacementGroups.Single(g => g.GroupId == pending.PlacementGroupId);
        Assert.Equal(GroupStrategy.StrictPack, pack.Strategy);
        Assert.Equal(4, Assert.Single(pack.Shapes)["CPU"]);
        var spread = snapshot.PlacementGroups.Single(g => g.GroupId == rescheduling.PlacementGroupId);
        Assert.Equal(GroupStrategy.StrictSpread, spread.Strategy);
        Assert.Equal(2, spread.Bundles.Count);
        Assert.Equal("n1", Assert.Single(spread.PlacedOn));
    }

    private static ClusterConfig MonitorConfig() => new()
    {
        SourceFile = "/cluster.yaml",
        Provider = new ProviderConfig { Type = "process" },
        HeadNodeType = "head",
        AvailableNodeTypes = new(StringComparer.Ordinal) { ["head"] = new NodeTypeConfig(), ["cpu4"] = new NodeTypeConfig() },
    };

    private static PlacementGroupTableData Table(PlacementGroupState state, PlacementStrategy strategy, params (string Node, double Cpus)[] bundles)
    {
        var g = new PlacementGroupTableData { PlacementGroupId = UniqueId.New(), State = state, Strategy = strategy };
        for (var i = 0; i < bundles.Length; i++)
        {
            var b = new BundleSpec { PlacementGroupId = g.PlacementGroupId, BundleIndex = i, NodeId = bundles[i].Node };
            b.Resources["CPU"] = bundles[i].Cpus;
            g.Bundles.Add(b);
        }
        return g;
    }
}
