using RaySharp.Autoscaler.Scaling;
using static RaySharp.Tests.AutoscalerHarness;

namespace RaySharp.Tests;

/// <summary>
/// The autoscaler's scale-up decisions (<see cref="ResourceDemandScheduler"/> through <see cref="StandardAutoscaler"/>):
/// which types launch for which demand, within which limits, and what is neither launched twice nor forgotten.
/// </summary>
public sealed class AutoscalerDecisionTests
{
    private static AutoscalerHarness CpuAndGpu(int maxWorkers = 10) =>
        new(ClusterConfig(maxWorkers, types: [("cpu4", Cpu4, 0, 10), ("gpu", Gpu, 0, 10)]));

    [Fact]
    public async Task AGpuShapeLaunchesTheGpuTypeAndACpuShapeNeverDoes()
    {
        var gpu = CpuAndGpu();
        var update = await gpu.TickAsync(new LoadSnapshot { PendingDemands = Demand((Shape("GPU", 1), 1)) });
        Assert.Equal(new Dictionary<string, int> { ["gpu"] = 1 }, update.Launched);

        // Eight one-CPU tasks fill the 8-CPU GPU node's CPUs exactly, and score better there than on the CPU type (whose
        // memory they leave unused as the GPU node leaves its GPU): the GPU is kept for GPU work all the same.
        var cpu = new AutoscalerHarness(ClusterConfig(10, types: [("cpu4", new() { ["CPU"] = 4, ["memory"] = 16 }, 0, 10), ("gpu", Gpu, 0, 10)]));
        update = await cpu.TickAsync(new LoadSnapshot { PendingDemands = Demand((Shape("CPU", 1), 8)) });
        Assert.Equal(new Dictionary<string, int> { ["cpu4"] = 2 }, update.Launched);
        Assert.Equal(0, cpu.Launched("gpu"));
    }

    [Fact]
    public async Task AGpuTypeTakesCpuWorkOnlyWhenNoOtherTypeFitsIt()
    {
        var h = CpuAndGpu();
        var update = await h.TickAsync(new LoadSnapshot { PendingDemands = Demand((Shape("CPU", 6), 1)) });
        Assert.Equal(new Dictionary<string, int> { ["gpu"] = 1 }, update.Launched);
        Assert.Empty(update.Infeasible);
    }

    [Fact]
    public void CpuWorkWaitsForCpuNodesAtTheirMaxRatherThanTakeAGpuNode()
    {
        var types = new Dictionary<string, WorkerTypeLimits>
        {
            ["cpu4"] = new(Shape("CPU", 4), 0, 2),
            ["gpu"] = new(new Dictionary<string, double> { ["CPU"] = 1, ["GPU"] = 1 }, 0, 1),
        };
        var config = new SchedulerConfig(types, 10, 1);
        // Forty one-CPU tasks: two cpu4 nodes (their max), and no gpu node for the rest, though it would hold one.
        var plan = ResourceDemandScheduler.GetNodesToLaunch(config, [], Demand((Shape("CPU", 1), 40)), []);
        Assert.Equal(new Dictionary<string, int> { ["cpu4"] = 2 }, plan.ToLaunch);
        Assert.Empty(plan.Infeasible);
        // GPU work among it still gets the gpu node.
        plan = ResourceDemandScheduler.GetNodesToLaunch(config, [], Demand((Shape("CPU", 1), 40), (new Dictionary<string, double> { ["CPU"] = 1, ["GPU"] = 1 }, 1)), []);
        Assert.Equal(new Dictionary<string, int> { ["cpu4"] = 2, ["gpu"] = 1 }, plan.ToLaunch);
    }

    [Fact]
    public void TheTypeTheDemandFillsBestIsChosen()
    {
        var types = new Dictionary<string, WorkerTypeLimits>
        {
            ["small"] = new(Shape("CPU", 2), 0, 10),
            ["big"] = new(Shape("CPU", 16), 0, 10),
        };
        var config = new SchedulerConfig(types, 10, 1);
        // Two CPUs fill a small node and an eighth of a big one.
        var plan = ResourceDemandScheduler.GetNodesToLaunch(config, [], Demand((Shape("CPU", 2), 1)), []);
        Assert.Equal(new Dictionary<string, int> { ["small"] = 1 }, plan.ToLaunch);
        // Sixteen fill one big node: one node rather than eight.
        plan = ResourceDemandScheduler.GetNodesToLaunch(config, [], Demand((Shape("CPU", 1), 16)), []);
        Assert.Equal(new Dictionary<string, int> { ["big"] = 1 }, plan.ToLaunch);
    }

    [Fact]
    public async Task FortyOneCpuTasksLaunchTenFourCpuNodesAtTheUpscalingSpeed()
    {
        var h = new AutoscalerHarness(ClusterConfig(20, upscalingSpeed: 1, types: [("cpu4", Cpu4, 0, 10)]));
        var forty = new LoadSnapshot { PendingDemands = Demand((Shape("CPU", 1), 40)) };

        // None run yet: max(5, 1 × 0) pending at once.
        var update = await h.TickAsync(forty);
        Assert.Equal(5, update.Launched["cpu4"]);
        Assert.Equal(5, h.SetUp.Count);
        Assert.All(h.Provider.Nodes, n => Assert.Equal(("worker", "cpu4", "uninitialized"),
            (n.Tags["raysharp-node-kind"], n.Tags["raysharp-user-node-type"], n.Tags["raysharp-node-status"])));

        // They have not joined: their capacity is on its way, and the limit is reached anyway.
        update = await h.TickAsync(forty);
        Assert.Empty(update.Launched);
        Assert.Equal(5, h.Autoscaler.Summary.PendingNodes.Count);

        // They joined and run 20 tasks; 20 still wait: five more nodes.
        var joined = new LoadSnapshot { Nodes = h.AllJoined(n => h.Load(n, used: 4)), PendingDemands = Demand((Shape("CPU", 1), 20)) };
        update = await h.TickAsync(joined);
        Assert.Equal(5, update.Launched["cpu4"]);

        // All ten run full and work still waits: the type's max_workers is reached.
        update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(n => h.Load(n, used: 4)), PendingDemands = Demand((Shape("CPU", 1), 8)) });
        Assert.Empty(update.Launched);
        Assert.Equal(10, h.Launched("cpu4"));
        Assert.Equal(10, h.Autoscaler.Summary.ActiveNodes["cpu4"]);
    }

    [Fact]
    public async Task AFasterUpscalingSpeedAllowsMorePendingPerRunningNode()
    {
        var h = new AutoscalerHarness(ClusterConfig(50, upscalingSpeed: 3, types: [("cpu4", Cpu4, 0, 50)]));
        await h.TickAsync(new LoadSnapshot { PendingDemands = Demand((Shape("CPU", 4), 5)) });
        Assert.Equal(5, h.Launched("cpu4"));
        // Five run: 3 × 5 = 15 may be pending.
        var update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(n => h.Load(n, used: 4)), PendingDemands = Demand((Shape("CPU", 4), 30)) });
        Assert.Equal(15, update.Launched["cpu4"]);
    }

    [Fact]
    public async Task DemandThatFitsWhatIsFreeLaunchesNothing()
    {
        var h = new AutoscalerHarness(ClusterConfig(10, types: [("cpu4", Cpu4, 1, 10)]));
        await h.TickAsync(new LoadSnapshot());
        Assert.Equal(1, h.Launched("cpu4"));
        // One CPU of the node is used; three free take the three waiting tasks.
        var update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(n => h.Load(n, used: 1)), PendingDemands = Demand((Shape("CPU", 1), 3)) });
        Assert.Empty(update.Launched);
        Assert.Equal(1, h.Launched("cpu4"));
    }

    [Fact]
    public async Task APendingNodesCapacityIsNotLaunchedTwice()
    {
        var h = new AutoscalerHarness(ClusterConfig(10, types: [("cpu4", Cpu4, 0, 10)]));
        var two = new LoadSnapshot { PendingDemands = Demand((Shape("CPU", 1), 2)) };
        Assert.Equal(1, (await h.TickAsync(two)).Launched["cpu4"]);
        for (var tick = 0; tick < 3; tick++)
        {
            h.Clock.Advance(TimeSpan.FromSeconds(5));
            Assert.Empty((await h.TickAsync(two)).Launched);
        }
        var pending = Assert.Single(h.Autoscaler.Summary.PendingNodes);
        Assert.Equal(("10.0.0.1", "cpu4", "waiting-for-raylet"), (pending.Ip, pending.NodeType, pending.State));
        Assert.Equal(1, h.Launched("cpu4"));
    }

    [Fact]
    public async Task RunningTasksHoldResourcesAndAreNotDemand()
    {
        var h = new AutoscalerHarness(ClusterConfig(10, types: [("cpu4", Cpu4, 1, 10)]));
        await h.TickAsync(new LoadSnapshot());
        // Four tasks run on the node (it is full); four more wait: one node for the four waiting, not two.
        var update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(n => h.Load(n, used: 4)), PendingDemands = Demand((Shape("CPU", 1), 4)) });
        Assert.Equal(1, update.Launched["cpu4"]);
        // The same load with nothing waiting launches nothing.
        h.Clock.Advance(TimeSpan.FromSeconds(5));
        update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(n => h.Load(n, used: 4)) });
        Assert.Empty(update.Launched);
        Assert.Equal(2, h.Launched("cpu4"));
    }

    [Fact]
    public async Task RequestResourcesIsSizedAgainstTotalCapacity()
    {
        var h = new AutoscalerHarness(ClusterConfig(10, types: [("cpu4", Cpu4, 1, 10)]));
        await h.TickAsync(new LoadSnapshot());
        IReadOnlyList<IReadOnlyDictionary<string, double>> twelve = [Cpu4, Cpu4, Cpu4];
        // The node is busy, but request_resources asks for a cluster of 3 × 4 CPUs: it counts as one of them.
        var update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(n => h.Load(n, used: 4)), ResourceRequests = twelve });
        Assert.Equal(2, update.Launched["cpu4"]);
        // Once they run (idle), the request persists in the snapshot and launches nothing more.
        update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(), ResourceRequests = twelve });
        Assert.Empty(update.Launched);
        var constraint = Assert.Single(h.Autoscaler.Summary.Constraints);
        Assert.Equal(3, constraint.Count);
    }

    [Fact]
    public async Task AShapeNoTypeCanHoldIsReportedAndLaunchesNothing()
    {
        var h = new AutoscalerHarness(ClusterConfig(10, types: [("cpu4", Cpu4, 0, 10)]));
        var update = await h.TickAsync(new LoadSnapshot
        {
            PendingDemands = Demand((Shape("GPU", 1), 3)),
            InfeasibleDemands = Demand((Shape("CPU", 64), 1)),
            ResourceRequests = [Shape("CPU", 32)],
        });
        Assert.Empty(update.Launched);
        Assert.Empty(h.Provider.Creations);
        Assert.Equal(["{'GPU': 1.0} × 3", "{'CPU': 64.0} × 1", "{'CPU': 32.0} × 1"], update.Infeasible.Select(d => d.ToString()));
        Assert.Equal(3, h.Autoscaler.Summary.Infeasible.Count);
        Assert.Empty(h.Autoscaler.Summary.Demands);
        Assert.Contains(" {'GPU': 1.0}: 3", h.Autoscaler.Summary.Format());
    }

    [Fact]
    public async Task MinWorkersAreLaunchedWithoutDemandAndBeyondTheUpscalingLimit()
    {
        var h = new AutoscalerHarness(ClusterConfig(10, types: [("cpu4", Cpu4, 7, 10)]));
        var update = await h.TickAsync(new LoadSnapshot());
        Assert.Equal(7, update.Launched["cpu4"]);
        Assert.Empty((await h.TickAsync(new LoadSnapshot())).Launched);

        // Within the cluster's max_workers all the same.
        var capped = new AutoscalerHarness(ClusterConfig(3, types: [("cpu4", Cpu4, 7, 10)]));
        Assert.Equal(3, (await capped.TickAsync(new LoadSnapshot())).Launched["cpu4"]);
    }

    [Fact]
    public async Task TheClustersMaxWorkersCapsAllTypesTogether()
    {
        var h = CpuAndGpu(maxWorkers: 3);
        var demand = Demand((Shape("CPU", 4), 4), (Shape("GPU", 1), 4));
        var update = await h.TickAsync(new LoadSnapshot { PendingDemands = demand });
        Assert.Equal(3, update.Launched.Values.Sum());
        update = await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(n => h.Load(n, used: 8)), PendingDemands = demand });
        Assert.Empty(update.Launched);
        Assert.Equal(3, h.Provider.Nodes.Count);
        // A GPU node holds both shapes (it matches more of the demand's kinds), so the three are GPU nodes.
        Assert.Equal(3, h.Launched("gpu"));
    }

    [Fact]
    public async Task AFailedLaunchIsListedAndRetriedAfterADoublingBackoff()
    {
        var h = new AutoscalerHarness(ClusterConfig(10, types: [("cpu4", Cpu4, 0, 10)]));
        var demand = new LoadSnapshot { PendingDemands = Demand((Shape("CPU", 4), 1)) };
        h.Provider.FailNextCreates = 2;
        var start = h.Clock.GetUtcNow();
        Assert.Empty((await h.TickAsync(demand)).Launched);
        var failure = Assert.Single(h.Autoscaler.Summary.RecentFailures);
        Assert.Equal((start, "cpu4"), (failure.Time, failure.NodeType));
        Assert.Contains("quota exceeded", failure.Message);

        // Within 5 s the type is not tried; at 5 s it is (and fails again: now 10 s).
        h.Clock.Advance(TimeSpan.FromSeconds(4));
        await h.TickAsync(demand);
        Assert.Single(h.Provider.Creations);
        h.Clock.Advance(TimeSpan.FromSeconds(1));
        await h.TickAsync(demand);
        Assert.Equal(2, h.Provider.Creations.Count);
        h.Clock.Advance(TimeSpan.FromSeconds(9));
        await h.TickAsync(demand);
        Assert.Equal(2, h.Provider.Creations.Count);
        h.Clock.Advance(TimeSpan.FromSeconds(1));
        var update = await h.TickAsync(demand);
        Assert.Equal(1, update.Launched["cpu4"]);
        Assert.Equal(2, h.Autoscaler.Summary.RecentFailures.Count);
        Assert.Contains("Recent failures:\n 00:00:00 cpu4: launching 1 failed: quota exceeded", h.Autoscaler.Summary.Format().ReplaceLineEndings("\n"));
    }

    [Fact]
    public async Task AFailedSetupTerminatesTheNodeListsItAndBacksOff()
    {
        var h = new AutoscalerHarness(ClusterConfig(10, types: [("cpu4", Cpu4, 0, 10)])) { FailSetups = true };
        var demand = new LoadSnapshot { PendingDemands = Demand((Shape("CPU", 4), 1)) };
        await h.TickAsync(demand);
        var failure = Assert.Single(h.Autoscaler.Summary.RecentFailures);
        Assert.Contains("setup failed: ssh: connection refused", failure.Message);
        Assert.Equal("10.0.0.1", failure.Ip);

        // Next tick: the node is given back, and the type waits its backoff before another launch.
        h.FailSetups = false;
        var update = await h.TickAsync(demand);
        Assert.Equal(["node-1"], update.Terminated);
        Assert.Empty(update.Launched);
        h.Clock.Advance(TimeSpan.FromSeconds(5));
        update = await h.TickAsync(demand);
        Assert.Equal(1, update.Launched["cpu4"]);
        Assert.Single(h.Provider.Nodes);
    }

    [Fact]
    public async Task SetupsOfOneLaunchFailingTogetherBackOffOnceNotOncePerNode()
    {
        // Four nodes of one launch fail their setups (joins timing out on a loaded machine, say): that is one failed
        // launch, so the type waits 5 s, not 5 s × 2^3; the next launch failing doubles it.
        var h = new AutoscalerHarness(ClusterConfig(10, types: [("cpu4", Cpu4, 0, 10)])) { FailSetups = true };
        var demand = new LoadSnapshot { PendingDemands = Demand((Shape("CPU", 4), 4)) };
        Assert.Equal(4, (await h.TickAsync(demand)).Launched["cpu4"]);
        Assert.Equal(4, h.Autoscaler.Summary.RecentFailures.Count);
        Assert.Equal(4, (await h.TickAsync(demand)).Terminated.Count);
        h.Clock.Advance(TimeSpan.FromSeconds(5));
        Assert.Equal(4, (await h.TickAsync(demand)).Launched["cpu4"]);
        Assert.Equal(4, (await h.TickAsync(demand)).Terminated.Count);
        h.Clock.Advance(TimeSpan.FromSeconds(9));
        Assert.Empty((await h.TickAsync(demand)).Launched);
        h.FailSetups = false;
        h.Clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(4, (await h.TickAsync(demand)).Launched["cpu4"]);
    }

    [Fact]
    public async Task ANodeWhoseRayletDiedIsTerminatedAndReplaced()
    {
        var h = new AutoscalerHarness(ClusterConfig(10, types: [("cpu4", Cpu4, 0, 10)]));
        await h.TickAsync(new LoadSnapshot { PendingDemands = Demand((Shape("CPU", 4), 1)) });
        await h.TickAsync(new LoadSnapshot { Nodes = h.AllJoined(n => h.Load(n, used: 4)) });

        // Missing from a snapshot is not dead (a short read of the GCS must not cost the node).
        var missing = await h.TickAsync(new LoadSnapshot());
        Assert.Empty(missing.Terminated);
        Assert.Empty(missing.Launched);
        Assert.Equal("not-reporting", Assert.Single(h.Autoscaler.Summary.PendingNodes).State);

        // The raylet died; its task, retried, waits again: one node replaces it, not two.
        var update = await h.TickAsync(new LoadSnapshot
        {
            Nodes = h.AllJoined(n => h.Load(n, alive: false)),
            PendingDemands = Demand((Shape("CPU", 4), 1)),
        });
        Assert.Equal(["node-1"], update.Terminated);
        Assert.Equal(1, update.Launched["cpu4"]);
        Assert.Equal(["node-2"], h.Provider.Nodes.Select(n => n.Id));
        var failure = Assert.Single(h.Autoscaler.Summary.RecentFailures);
        Assert.Equal(("cpu4", "10.0.0.1"), (failure.NodeType, failure.Ip));
        Assert.Contains("raylet died", failure.Message);
    }
}
