using RaySharp.Autoscaler.Providers;
using RaySharp.Autoscaler.Scaling;
using static RaySharp.Tests.AutoscalerHarness;

namespace RaySharp.Tests;

/// <summary>
/// The autoscaler's scale-down decisions: which idle nodes are drained and terminated, and which are never (busy ones,
/// those holding primary objects, min_workers, those request_resources needs, the head).
/// </summary>
public sealed class AutoscalerDecisionScaleDownTests
{
    private readonly List<string> _log = [];
    private readonly HashSet<string> _refuse = [];

    private AutoscalerHarness Harness(int minWorkers, double idleMinutes = 5)
    {
        var h = new AutoscalerHarness(ClusterConfig(10, idleMinutes: idleMinutes, types: [("cpu4", Cpu4, minWorkers, 10)]), DrainAsync);
        h.Provider.Log = _log;
        return h;
    }

    private Task<bool> DrainAsync(NodeLoad node, CancellationToken cancellationToken)
    {
        _log.Add("drain " + node.NodeId);
        return Task.FromResult(!_refuse.Contains(node.NodeId));
    }

    /// <summary>Launches <paramref name="count"/> workers (as min_workers of a first config) and a head.</summary>
    private static async Task<AutoscalerHarness> WithWorkersAsync(AutoscalerHarness h, int count)
    {
        h.Provider.AddHead();
        await h.TickAsync(new LoadSnapshot { PendingDemands = Demand((Shape("CPU", 4), count)) });
        Assert.Equal(count, h.Launched("cpu4"));
        return h;
    }

    [Fact]
    public async Task AnIdleNodePastTheTimeoutIsDrainedThenTerminated()
    {
        var h = await WithWorkersAsync(Harness(minWorkers: 0), 1);
        var idleSince = h.Clock.GetUtcNow();
        var idle = () => new LoadSnapshot { Nodes = h.AllJoined(n => h.Load(n, idleSince: idleSince)) };

        h.Clock.Advance(TimeSpan.FromMinutes(4.9));
        var update = await h.TickAsync(idle());
        Assert.Empty(update.Drained);
        Assert.Empty(h.Provider.Terminations);
        Assert.Equal(1, h.Autoscaler.Summary.IdleNodes["cpu4"]);

        h.Clock.Advance(TimeSpan.FromMinutes(0.1));
        update = await h.TickAsync(idle());
        Assert.Equal(["node-1"], update.Drained);
        Assert.Equal(["node-1"], update.Terminated);
        Assert.Equal(["drain node-1", "terminate node-1"], _log);
        // The head, as idle, stays.
        Assert.Equal(["head"], h.Provider.Nodes.Select(n => n.Id));
    }

    [Fact]
    public async Task ANodeThatRefusesTheDrainIsNotTerminated()
    {
        var h = await WithWorkersAsync(Harness(minWorkers: 0), 1);
        var idleSince = h.Clock.GetUtcNow();
        h.Clock.Advance(TimeSpan.FromMinutes(6));
        _refuse.Add("node-1");
        var update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(n => h.Load(n, idleSince: idleSince)) });
        Assert.Equal(["node-1"], update.Drained);
        Assert.Empty(update.Terminated);
        Assert.Equal(["drain node-1"], _log);
    }

    [Fact]
    public async Task BusyNodesNodesHoldingPrimaryObjectsMinWorkersAndTheHeadAreKept()
    {
        var h = await WithWorkersAsync(Harness(minWorkers: 2), 5);
        var start = h.Clock.GetUtcNow();
        h.Clock.Advance(TimeSpan.FromMinutes(30));
        // node-1: busy. node-2: idle but holds a primary copy. node-3 and node-4: idle since the start, node-5 for a
        // minute only. min_workers 2 of 5: up to three could go, but only node-3 and node-4 qualify.
        NodeLoad Load(ProviderNode n) => n.Id switch
        {
            "node-1" => h.Load(n, used: 0, busy: true),
            "node-2" => h.Load(n, idleSince: start, holdsObjects: true),
            "node-5" => h.Load(n, idleSince: h.Clock.GetUtcNow() - TimeSpan.FromMinutes(1)),
            _ => h.Load(n, idleSince: start),
        };
        var update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(Load) });
        Assert.Equal(["node-3", "node-4"], update.Terminated.Order());

        // Later node-5 and node-2 (its object released) are idle long enough too: min_workers keeps two of the three left.
        h.Clock.Advance(TimeSpan.FromMinutes(10));
        update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(n => n.Id == "node-1" ? h.Load(n, busy: true) : h.Load(n, idleSince: start)) });
        Assert.Equal(["node-2"], update.Terminated);
        Assert.Equal(["head", "node-1", "node-5"], h.Provider.Nodes.Select(n => n.Id).Order());
        Assert.Empty(update.Launched);
    }

    [Fact]
    public async Task RequestResourcesKeepsIdleNodesUntilItIsWithdrawn()
    {
        var h = await WithWorkersAsync(Harness(minWorkers: 0), 3);
        var start = h.Clock.GetUtcNow();
        h.Clock.Advance(TimeSpan.FromMinutes(10));
        var nodes = h.AllJoined(n => h.Load(n, idleSince: start));

        // Two nodes' worth is requested: one of the three may go.
        var update = await h.TickAsync(new LoadSnapshot { Nodes = nodes, ResourceRequests = [Cpu4, Shape("CPU", 2), Shape("CPU", 2)] });
        Assert.Single(update.Terminated);
        Assert.Equal(3, h.Provider.Nodes.Count);

        update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(n => h.Load(n, idleSince: start)), ResourceRequests = [Cpu4, Shape("CPU", 2), Shape("CPU", 2)] });
        Assert.Empty(update.Terminated);
        Assert.Empty(update.Launched);

        update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(n => h.Load(n, idleSince: start)) });
        Assert.Equal(2, update.Terminated.Count);
        Assert.Equal(["head"], h.Provider.Nodes.Select(n => n.Id));
    }

    [Fact]
    public async Task WithoutADrainAnIdleNodeIsTerminatedAsItIsEmpty()
    {
        var h = new AutoscalerHarness(ClusterConfig(10, types: [("cpu4", Cpu4, 0, 10)]));
        await h.TickAsync(new LoadSnapshot { PendingDemands = Demand((Shape("CPU", 4), 1)) });
        var idleSince = h.Clock.GetUtcNow();
        h.Clock.Advance(TimeSpan.FromMinutes(5));
        var update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(n => h.Load(n, idleSince: idleSince)) });
        Assert.Equal(["node-1"], update.Terminated);
        Assert.Empty(h.Provider.Nodes);
    }

    [Fact]
    public void TheBackoffDoublesUpToItsMaximum()
    {
        var backoff = new LaunchBackoff(new AutoscalerOptions());
        var t = DateTimeOffset.UnixEpoch;
        for (var i = 0; i < 10; i++) backoff.Failed(new AutoscalerFailure(t, "cpu4", null, "no"), backOff: true);
        Assert.Equal(t + TimeSpan.FromMinutes(5), backoff.NotBefore("cpu4"));
        Assert.Equal(10, backoff.Recent.Count);
        backoff.Succeeded("cpu4");
        backoff.Failed(new AutoscalerFailure(t, "cpu4", null, "no"), backOff: true);
        Assert.Equal(t + TimeSpan.FromSeconds(5), backoff.NotBefore("cpu4"));
        Assert.False(backoff.Waiting("gpu", t));
    }

    [Fact]
    public void ScaleDownNeverPicksABusyNodeEvenWithItsResourcesFree()
    {
        var now = DateTimeOffset.UnixEpoch + TimeSpan.FromHours(1);
        var busy = new NodeLoad("n1", "10.0.0.1") { Total = Cpu4, Available = Cpu4, IdleSince = null };
        var used = new NodeLoad("n2", "10.0.0.2") { Total = Cpu4, Available = Shape("CPU", 3), IdleSince = DateTimeOffset.UnixEpoch };
        var dead = new NodeLoad("n3", "10.0.0.3") { Total = Cpu4, Available = Cpu4, IdleSince = DateTimeOffset.UnixEpoch, Alive = false };
        var drain = ScaleDownPolicy.NodesToDrain(
            [new WorkerNode("n1", "cpu4", busy), new WorkerNode("n2", "cpu4", used), new WorkerNode("n3", "cpu4", dead)],
            new Dictionary<string, int>(), [], [], TimeSpan.FromMinutes(5), now);
        Assert.Empty(drain);
    }

    [Fact]
    public async Task TheSummaryReadsAsRayStatus()
    {
        var h = await WithWorkersAsync(Harness(minWorkers: 0), 2);
        h.Provider.FailNextCreates = 1;
        NodeLoad Load(ProviderNode n) => n.IsHead
            ? new NodeLoad("head", n.Ip) { IsHead = true, Total = Shape("CPU", 2), Available = Shape("CPU", 2), IdleSince = h.Clock.GetUtcNow() }
            : h.Load(n, used: n.Id == "node-1" ? 4 : 1);
        await h.TickAsync(new LoadSnapshot
        {
            Nodes = h.AllJoined(Load),
            PendingDemands = Demand((Shape("CPU", 1), 7)),
            ResourceRequests = [Shape("CPU", 4), Shape("CPU", 4)],
        });
        var text = h.Autoscaler.Summary.Format().ReplaceLineEndings("\n");
        Assert.StartsWith("======== Autoscaler status: 2026-01-01 00:00:00.000000 ========\nNode status\n", text);
        Assert.Contains("Active:\n 2 cpu4\n 1 head\n", text);
        Assert.Contains("Idle:\n 1 head\n", text);
        Assert.Contains("Recent failures:\n 00:00:00 cpu4: launching 1 failed: quota exceeded\n", text);
        Assert.Contains("Usage:\n 5.0/10.0 CPU\n", text);
        Assert.Contains("Constraints:\n {'CPU': 4.0}: 2 from request_resources()\n", text);
        Assert.Contains("Demands:\n {'CPU': 1.0}: 7+ pending tasks/actors\n", text);
    }
}
