using RaySharp.Raylet.Scheduling;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Tests;

using SchedulingStrategy = RaySharp.Rpc.Protocol.SchedulingStrategy;

/// <summary>The placement policies, on hand-made cluster views.</summary>
public sealed class ClusterResourceSchedulerTests
{
    private static NodeView Node(string id, double cpuTotal, double cpuAvailable, params (string, double)[] extra)
    {
        var total = new Dictionary<string, double> { ["CPU"] = cpuTotal };
        var available = new Dictionary<string, double> { ["CPU"] = cpuAvailable };
        foreach (var (k, v) in extra)
        {
            total[k] = v;
            available[k] = v;
        }
        return new NodeView(id, "10.0.0." + id.Length, 1000, total, available);
    }

    private static Dictionary<string, double> Cpu(double n) => new() { ["CPU"] = n };

    [Fact]
    public void PacksLocallyWhileTheLocalNodeIsLightlyUsed()
    {
        var p = ClusterResourceScheduler.Decide(Cpu(1), null, false, Node("local", 4, 4), [Node("remote", 4, 4)]);
        Assert.Equal(PlacementKind.Local, p.Kind);
    }

    [Fact]
    public void SpreadsToALightlyUsedNodeOnceTheLocalNodeIsHalfUsed()
    {
        var p = ClusterResourceScheduler.Decide(Cpu(1), null, false, Node("local", 4, 2), [Node("busy", 4, 1), Node("idle", 4, 4)]);
        Assert.Equal(PlacementKind.Remote, p.Kind);
        Assert.Equal("idle", p.Node!.NodeId);
    }

    [Fact]
    public void StaysLocalWhenEveryNodeIsBusyButLocalStillFits()
    {
        var p = ClusterResourceScheduler.Decide(Cpu(1), null, false, Node("local", 4, 1), [Node("remote", 4, 1)]);
        Assert.Equal(PlacementKind.Local, p.Kind);
    }

    [Fact]
    public void QueuesLocallyWhenNothingIsFreeButTheLocalNodeCouldRunIt()
    {
        var p = ClusterResourceScheduler.Decide(Cpu(2), null, false, Node("local", 4, 0), [Node("remote", 1, 1)]);
        Assert.Equal(PlacementKind.Local, p.Kind);
    }

    [Fact]
    public void SendsAShapeOnlyAnotherNodeHasToThatNode()
    {
        var shape = new Dictionary<string, double> { ["GPU"] = 1 };
        var p = ClusterResourceScheduler.Decide(shape, null, false, Node("local", 4, 4), [Node("cpu-only", 4, 4), Node("gpu", 4, 4, ("GPU", 2))]);
        Assert.Equal(PlacementKind.Remote, p.Kind);
        Assert.Equal("gpu", p.Node!.NodeId);
    }

    [Fact]
    public void AShapeNoNodeCanEverSatisfyIsInfeasible()
    {
        var p = ClusterResourceScheduler.Decide(Cpu(64), null, false, Node("local", 4, 4), [Node("remote", 8, 8)]);
        Assert.Equal(PlacementKind.Infeasible, p.Kind);
    }

    [Fact]
    public void ASpilledRequestIsNeverSpilledAgain()
    {
        var local = Node("local", 4, 0);
        Assert.Equal(PlacementKind.Local, ClusterResourceScheduler.Decide(Cpu(1), null, true, local, [Node("remote", 4, 4)]).Kind);
        Assert.Equal(PlacementKind.Infeasible, ClusterResourceScheduler.Decide(Cpu(8), null, true, local, [Node("remote", 8, 8)]).Kind);
    }

    [Fact]
    public void SpreadPicksTheLeastUsedNode()
    {
        var spread = new SchedulingStrategy { Kind = SchedulingStrategyKind.SchedulingSpread };
        var p = ClusterResourceScheduler.Decide(Cpu(1), spread, false, Node("local", 4, 3), [Node("a", 4, 2), Node("b", 4, 4)]);
        Assert.Equal("b", p.Node!.NodeId);
        var local = ClusterResourceScheduler.Decide(Cpu(1), spread, false, Node("local", 4, 4), [Node("a", 4, 4)]);
        Assert.Equal(PlacementKind.Local, local.Kind);
    }

    [Fact]
    public void NodeAffinityIsHardUnlessSoft()
    {
        var local = Node("local", 4, 4);
        var remote = Node("remote", 4, 0);
        var hard = new SchedulingStrategy { Kind = SchedulingStrategyKind.SchedulingNodeAffinity, NodeId = "remote" };
        var toRemote = ClusterResourceScheduler.Decide(Cpu(1), hard, false, local, [remote]);
        Assert.Equal(PlacementKind.Remote, toRemote.Kind);
        Assert.Equal("remote", toRemote.Node!.NodeId);

        var gone = new SchedulingStrategy { Kind = SchedulingStrategyKind.SchedulingNodeAffinity, NodeId = "gone" };
        var rejected = ClusterResourceScheduler.Decide(Cpu(1), gone, false, local, [remote]);
        Assert.Equal(PlacementKind.Rejected, rejected.Kind);
        Assert.Contains("gone", rejected.Reason);

        var soft = new SchedulingStrategy { Kind = SchedulingStrategyKind.SchedulingNodeAffinity, NodeId = "gone", Soft = true };
        Assert.Equal(PlacementKind.Local, ClusterResourceScheduler.Decide(Cpu(1), soft, false, local, [remote]).Kind);
    }

    [Fact]
    public void ADrainingNodeSendsWorkItCouldRunToAnotherNode()
    {
        var p = ClusterResourceScheduler.DecideWhileDraining(Cpu(1), null, Node("local", 4, 4), [Node("busy", 4, 0), Node("idle", 4, 4)]);
        Assert.Equal((PlacementKind.Remote, "idle"), (p.Kind, p.Node!.NodeId));
        // Nobody has room now: it queues at a node that could ever run it, never here.
        p = ClusterResourceScheduler.DecideWhileDraining(Cpu(2), null, Node("local", 4, 4), [Node("busy", 4, 0)]);
        Assert.Equal((PlacementKind.Remote, "busy"), (p.Kind, p.Node!.NodeId));
        // A shape that asks for nothing too.
        p = ClusterResourceScheduler.DecideWhileDraining(new Dictionary<string, double>(), null, Node("local", 4, 4), [Node("idle", 4, 4)]);
        Assert.Equal((PlacementKind.Remote, "idle"), (p.Kind, p.Node!.NodeId));
    }

    [Fact]
    public void ADrainingNodeWithNoOtherNodeForTheShapeGrantsNothingAndRejectsAHardAffinityToItself()
    {
        Assert.Equal(PlacementKind.Infeasible, ClusterResourceScheduler.DecideWhileDraining(Cpu(8), null, Node("local", 8, 8), [Node("small", 4, 4)]).Kind);
        var pinned = new SchedulingStrategy { Kind = SchedulingStrategyKind.SchedulingNodeAffinity, NodeId = "local" };
        var p = ClusterResourceScheduler.DecideWhileDraining(Cpu(1), pinned, Node("local", 4, 4), [Node("idle", 4, 4)]);
        Assert.Equal(PlacementKind.Rejected, p.Kind);
        Assert.Contains("draining", p.Reason);
        // A soft affinity runs elsewhere.
        pinned.Soft = true;
        Assert.Equal(PlacementKind.Remote, ClusterResourceScheduler.DecideWhileDraining(Cpu(1), pinned, Node("local", 4, 4), [Node("idle", 4, 4)]).Kind);
    }
}
