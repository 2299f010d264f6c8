using RaySharp.Autoscaler.Config;
using RaySharp.Autoscaler.Monitor;
using RaySharp.Autoscaler.Providers;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Tests;

/// <summary>How the monitor reads the GCS's node table into the autoscaler's snapshot.</summary>
public sealed class AutoscalerMonitorTests
{
    private static readonly DateTimeOffset s_now = new(2026, 12, 2, 12, 0, 0, TimeSpan.Zero);

    private static ClusterConfig Config() => new()
    {
        SourceFile = "/cluster.yaml",
        Provider = new ProviderConfig { Type = "process" },
        HeadNodeType = "head",
        AvailableNodeTypes = new(StringComparer.Ordinal) { ["head"] = new NodeTypeConfig(), ["cpu4"] = new NodeTypeConfig() },
    };

    private static NodeInfo Node(string id, string ip, NodeState state, long started, long idleMs = 0, long primaries = 0, bool head = false)
    {
        var n = new NodeInfo { NodeId = id, NodeIpAddress = ip, State = state, StartTimeMs = started, IdleDurationMs = idleMs, PrimaryObjectCount = primaries, IsHeadNode = head };
        n.ResourcesTotal.Add(new Dictionary<string, double> { ["CPU"] = 4, ["node:" + ip] = 1 });
        n.ResourcesAvailable.Add(new Dictionary<string, double> { ["CPU"] = 4, ["node:" + ip] = 1 });
        return n;
    }

    [Fact]
    public void ANodeLaunchedAgainAtADeadOnesAddressIsTheLiveRowWithItsTypeIdleTimeAndObjects()
    {
        var dead = Node("old", "10.0.0.2", NodeState.Dead, started: 1);
        var live = Node("new", "10.0.0.2", NodeState.Alive, started: 2, idleMs: 30_000, primaries: 3);
        var head = Node("h", "10.0.0.1", NodeState.Alive, started: 0, head: true);
        var provider = new[] { new ProviderNode("worker1", "10.0.0.2", new Dictionary<string, string> { [NodeTags.NodeType] = "cpu4" }) };

        var snapshot = GcsLoad.Snapshot(Config(), [dead, live, head], provider, [], s_now);

        Assert.Equal(2, snapshot.Nodes.Count);
        var worker = snapshot.Nodes.Single(n => n.Ip == "10.0.0.2");
        Assert.Equal("new", worker.NodeId);
        Assert.True(worker.Alive);
        Assert.Equal("cpu4", worker.NodeType);
        Assert.Equal(s_now - TimeSpan.FromSeconds(30), worker.IdleSince);
        Assert.True(worker.HoldsPrimaryObjects);
        Assert.False(worker.Draining);
        Assert.DoesNotContain(worker.Total.Keys, k => k.StartsWith("node:", StringComparison.Ordinal));
        Assert.Equal("head", snapshot.Nodes.Single(n => n.IsHead).NodeType);
    }

    [Fact]
    public void ANodeThatAcceptedADrainIsDraining()
    {
        var node = Node("n1", "10.0.0.2", NodeState.Alive, started: 1, idleMs: 1000);
        node.IsDraining = true;
        Assert.True(GcsLoad.Snapshot(Config(), [node], [], [], s_now).Nodes.Single().Draining);
    }

    [Fact]
    public void ABusyNodeHasNoIdleTimeAndWorkPinnedToOneNodeIsNoDemand()
    {
        var busy = Node("n1", "10.0.0.3", NodeState.Alive, started: 1, idleMs: 0);
        busy.PendingDemands.Add(new ResourceDemand { Count = 4, Shape = { ["CPU"] = 1 } });
        busy.PendingDemands.Add(new ResourceDemand { Count = 2, Shape = { ["CPU"] = 1, ["node:10.0.0.9"] = 0.001 } });
        busy.InfeasibleDemands.Add(new ResourceDemand { Count = 1, Shape = { ["GPU"] = 2 } });

        var snapshot = GcsLoad.Snapshot(Config(), [busy], [], [new Dictionary<string, double> { ["CPU"] = 1 }], s_now);

        Assert.Null(snapshot.Nodes.Single().IdleSince);
        var pending = Assert.Single(snapshot.PendingDemands);
        Assert.Equal(4, pending.Count);
        Assert.Equal(1, pending.Shape["CPU"]);
        Assert.Equal(2, Assert.Single(snapshot.InfeasibleDemands).Shape["GPU"]);
        Assert.Single(snapshot.ResourceRequests);
    }
}
