using RaySharp;

/// <summary>
/// Placement groups through the public API, on the test's 3-host cluster. Each scenario prints one line per check
/// (<c>name value</c>); the test asserts them and the cluster's state, and starts or stops hosts at the signals.
/// </summary>
internal static class PlacementGroupScenarios
{
    private static readonly Dictionary<string, double> OneCpu = new() { ["CPU"] = 1 };

    public static int? Run(string scenario)
    {
        switch (scenario)
        {
            case "pg-api":
                Api();
                return 0;
            case "pg-after-driver":
                AfterDriver();
                return 0;
            default:
                return null;
        }
    }

    private static void Api()
    {
        var timeout = TimeSpan.FromSeconds(60);

        // STRICT_SPREAD over the two nodes there are: a bundle on each.
        var spread = Ray.PlacementGroup([OneCpu, OneCpu], PlacementStrategy.StrictSpread, name: "spread");
        Ready(spread, timeout);
        var info = spread.Info();
        Console.WriteLine($"spread-state {info.State}");
        Console.WriteLine($"spread-nodes {string.Join(",", info.Bundles.Select(b => b.NodeId))}");
        Console.WriteLine($"named-lookup {Ray.GetPlacementGroup("spread").Id == spread.Id}");

        // A task with a bundle index runs on that bundle's node, and knows its group.
        for (var i = 0; i < 2; i++)
        {
            var where = Ray.Get(Ray.Task(NodeAndGroup, new TaskOptions { Strategy = SchedulingStrategy.PlacementGroup(spread, i) }).Remote(), timeout);
            Console.WriteLine($"task-in-bundle-{i} {where == $"{info.Bundles[i].NodeId}/{spread.Id}"}");
        }

        // An actor in bundle 0 holding its one CPU: a task asking for a CPU of that bundle waits until the actor goes.
        var holder = Ray.Actor(() => new BundleProbe(), new ActorOptions { NumCpus = 1, Strategy = SchedulingStrategy.PlacementGroup(spread, 0) }).Remote();
        Console.WriteLine($"actor-in-bundle-0 {Ray.Get(holder.Node(), timeout) == info.Bundles[0].NodeId}");
        var blocked = Ray.Task(NodeAndGroup, new TaskOptions { Strategy = SchedulingStrategy.PlacementGroup(spread, 0) }).Remote();
        var (ready, _) = Ray.Wait([blocked], timeout: TimeSpan.FromSeconds(3));
        Console.WriteLine($"task-waits-for-bundle {ready.Count == 0}");
        Ray.Kill(holder);
        Console.WriteLine($"task-runs-after-actor {Ray.Get(blocked, timeout) == $"{info.Bundles[0].NodeId}/{spread.Id}"}");

        // Children of a task that captures them run in the group (any bundle); children of one that does not, outside.
        var captured = Ray.Get(Ray.Task(ChildGroup, new TaskOptions { NumCpus = 0.5, Strategy = SchedulingStrategy.PlacementGroup(spread, 1, captureChildTasks: true) }).Remote(), timeout);
        Console.WriteLine($"child-captured {captured == spread.Id}");
        var free = Ray.Get(Ray.Task(ChildGroup, new TaskOptions { NumCpus = 0.5, Strategy = SchedulingStrategy.PlacementGroup(spread, 1) }).Remote(), timeout);
        Console.WriteLine($"child-not-captured {free == "none"}");

        // Bad input says what is wrong.
        Console.WriteLine("bad-index " + Describe(() => SchedulingStrategy.PlacementGroup(spread, 2)));
        Console.WriteLine("empty-bundle " + Describe(() => Ray.PlacementGroup([new Dictionary<string, double>()])));
        Console.WriteLine("taken-name " + Describe(() => Ray.PlacementGroup([OneCpu], name: "spread")));

        // No node has 3 CPUs: STRICT_PACK waits, and is created once the test adds a node with 4.
        var big = Ray.PlacementGroup([new Dictionary<string, double> { ["CPU"] = 2 }, OneCpu], PlacementStrategy.StrictPack);
        Console.WriteLine($"big-waits {!big.Wait(TimeSpan.FromSeconds(2))} {big.Info().State}");
        Signal("add-node");
        Ready(big, TimeSpan.FromSeconds(90));
        var bigInfo = big.Info();
        Console.WriteLine($"big-created {bigInfo.State} {bigInfo.Bundles.Select(b => b.NodeId).Distinct().Count()} {bigInfo.Bundles[0].NodeId}");

        // Removing a group ends its actors.
        var inBig = Ray.Actor(() => new BundleProbe(), new ActorOptions { NumCpus = 2, Strategy = SchedulingStrategy.PlacementGroup(big, 0) }).Remote();
        Console.WriteLine($"actor-in-big {Ray.Get(inBig.Node(), timeout) == bigInfo.Bundles[0].NodeId}");
        Ray.RemovePlacementGroup(big);
        Console.WriteLine($"big-removed {Ray.PlacementGroups().All(g => g.Id != big.Id)} {Describe(() => big.Wait(TimeSpan.Zero))}");
        Console.WriteLine("actor-after-removal " + Describe(() => Ray.Get(inBig.Node(), timeout)));

        // SPREAD over the three nodes, an actor in each bundle; the test stops a worker node holding one of them.
        Ray.RemovePlacementGroup(spread);
        var three = Ray.PlacementGroup([OneCpu, OneCpu, OneCpu], PlacementStrategy.Spread);
        Ready(three, timeout);
        var before = three.Info();
        var probes = Enumerable.Range(0, 3).Select(i => Ray.Actor(() => new BundleProbe(),
            new ActorOptions { Strategy = SchedulingStrategy.PlacementGroup(three, i) }).Remote()).ToList();
        var pids = probes.Select(p => Ray.Get(p.Pid(), timeout)).ToList();
        Console.WriteLine($"three-nodes {before.Bundles.Select(b => b.NodeId).Distinct().Count()}");
        var head = Ray.Nodes().Single(n => n.IsHeadNode && n.Alive).NodeId;
        var victim = before.Bundles.First(b => b.NodeId != head);
        File.WriteAllText(Path.Combine(SignalDir, "victim"), victim.NodeId);
        Signal("stop-node");
        WaitFor("node-stopped");
        var deadline = DateTime.UtcNow + timeout;
        PlacementGroupInfo after;
        while (((after = three.Info()).State != PlacementGroupState.Created || after.Bundles[victim.Index].NodeId == victim.NodeId) && DateTime.UtcNow < deadline)
            Thread.Sleep(100);
        Console.WriteLine($"rescheduled {after.State}");
        var kept = before.Bundles.Where(b => b.Index != victim.Index).ToList();
        Console.WriteLine($"kept-bundles {kept.All(b => after.Bundles[b.Index].NodeId == b.NodeId)}");
        Console.WriteLine($"moved-bundle {after.Bundles[victim.Index].NodeId is { } moved && moved != victim.NodeId}");
        Console.WriteLine($"kept-actors {kept.All(b => Ray.Get(probes[b.Index].Pid(), timeout) == pids[b.Index])}");
        Ray.RemovePlacementGroup(three);

        // What outlives this driver: a detached group, not an owned one.
        var detached = Ray.PlacementGroup([OneCpu], name: "keeper", lifetime: ActorLifetime.Detached);
        var owned = Ray.PlacementGroup([OneCpu], name: "owned");
        Ready(detached, timeout);
        Ready(owned, timeout);
        Console.WriteLine("driver-done");
    }

    private static void Ready(PlacementGroup group, TimeSpan within)
    {
        if (!group.Ready().Wait(within)) throw new TimeoutException($"{group} was not created within {within}: {group.Info()}");
    }

    private static void AfterDriver()
    {
        var keeper = Ray.GetPlacementGroup("keeper");
        Console.WriteLine($"keeper {keeper.Info().State}");
        // The owned group goes once the GCS has seen its driver's job end.
        var owned = "";
        for (var i = 0; i < 300 && !owned.StartsWith("ArgumentException", StringComparison.Ordinal); i++, Thread.Sleep(100))
            owned = Describe(() => Ray.GetPlacementGroup("owned"));
        Console.WriteLine("owned " + owned);
        Ray.RemovePlacementGroup(keeper);
        Console.WriteLine($"left {Ray.PlacementGroups().Count}");
    }

    private static string NodeAndGroup() => $"{Ray.NodeId}/{Ray.GetCurrentPlacementGroup()?.Id}";

    /// <summary>A child with default options: in which group it ran.</summary>
    private static string ChildGroup() => Ray.Get(Ray.Task(CurrentGroup, new TaskOptions { NumCpus = 0.5 }).Remote(), TimeSpan.FromSeconds(60));

    private static string CurrentGroup() => Ray.GetCurrentPlacementGroup()?.Id ?? "none";

    private static string SignalDir => Environment.GetEnvironmentVariable("TESTDRIVER_SIGNAL_DIR")!;

    private static void Signal(string name)
    {
        Console.Out.Flush();
        TestSignals.Signal(name);
    }

    private static void WaitFor(string name)
    {
        Console.Out.Flush();
        TestSignals.WaitFor(name);
    }

    private static string Describe(Action action)
    {
        try
        {
            action();
            return "no-exception";
        }
        catch (Exception e)
        {
            return $"{e.GetType().Name}: {e.Message}";
        }
    }
}

public sealed class BundleProbe
{
    public string Node() => Ray.NodeId ?? "";

    public int Pid() => Environment.ProcessId;
}
