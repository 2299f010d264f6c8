using RaySharp;

/// <summary>Drivers for the autoscaler's end-to-end tests: work that only a node the autoscaler launches can run.</summary>
internal static class AutoscalerScenarios
{
    public static int? Run(string scenario, string[] args)
    {
        switch (scenario)
        {
            case "autoscale-gpu":
                // The cluster has no GPU: this runs once the autoscaler has launched a node of a type that has one.
                Console.WriteLine("gpu-task-ran-on " + Ray.Get(Ray.Task(NodeIp, new TaskOptions { NumGpus = 1 }).Remote(), TimeSpan.FromMinutes(args.Length > 2 ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 4)));
                return 0;
            case "autoscale-request":
                Ray.RequestResources(numCpus: int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture));
                Console.WriteLine("requested " + args[2]);
                return 0;
            case "autoscale-withdraw":
                Ray.RequestResources();
                Console.WriteLine("withdrawn");
                return 0;
            case "autoscale-infeasible":
                // No node type has two GPUs: the task waits, and the autoscaler says so, while this driver lives.
                _ = Ray.Task(NodeIp, new TaskOptions { NumGpus = 2 }).Remote();
                Console.WriteLine("submitted");
                Console.Out.Flush();
                Thread.Sleep(TimeSpan.FromSeconds(int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture)));
                Environment.Exit(0);
                return 0;
            case "autoscale-many":
                // 40 tasks of one CPU, two seconds each, on a head of one CPU: the autoscaler adds cpu4 nodes for them.
                var refs = Enumerable.Range(0, 40).Select(_ => Ray.Task(SleepThenNodeIp).Remote()).ToList();
                var ips = Ray.Get(refs, TimeSpan.FromMinutes(5));
                Console.WriteLine($"ran {ips.Length} on {ips.Distinct().Count()} nodes");
                return 0;
            case "autoscale-drain":
                Drain(args[2]);
                return 0;
            case "autoscale-spread":
                // N one-CPU tasks scheduled SPREAD, each holding its CPU for args[3] ms (5000): with nodes of one CPU,
                // they run at once only on N nodes. Prints on how many nodes they ran, how many ran at once at most, how long.
                return Spread(int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture),
                    args.Length > 3 ? int.Parse(args[3], System.Globalization.CultureInfo.InvariantCulture) : 5000);
            default:
                return null;
        }
    }

    private static string NodeIp() => Ray.NodeIpAddress;

    /// <summary>
    /// A task held on the node at <paramref name="drainedIp"/> while the test's drain of it is refused; once the test
    /// has drained the node, tasks that either worker could run (SPREAD, each waiting for the others) must all go to
    /// the other one.
    /// </summary>
    private static void Drain(string drainedIp)
    {
        var signals = Environment.GetEnvironmentVariable("TESTDRIVER_SIGNAL_DIR")!;
        var pool = new Dictionary<string, double> { ["pool"] = 1 };
        var node = Ray.Nodes().Single(n => n.Alive && n.NodeIpAddress == drainedIp);
        var held = Ray.Task(RunUntilReleased, new TaskOptions { Resources = pool, Strategy = SchedulingStrategy.NodeAffinity(node.NodeId) }).Remote(signals);
        Console.WriteLine("held-on " + Ray.Get(held, TimeSpan.FromMinutes(1)));
        TestSignals.WaitFor("drained");
        var spread = new TaskOptions { Resources = pool, Strategy = SchedulingStrategy.Spread };
        var after = Ray.Get(Enumerable.Range(0, 3).Select(_ => Ray.Task(SleepThenNodeIpShort, spread).Remote()).ToList(), TimeSpan.FromMinutes(1));
        Console.WriteLine("after-drain " + string.Join(",", after.Distinct().Order(StringComparer.Ordinal)));
    }

    private static string RunUntilReleased(string signals)
    {
        File.WriteAllText(Path.Combine(signals, "running"), "");
        var deadline = DateTime.UtcNow.AddMinutes(1);
        while (!File.Exists(Path.Combine(signals, "release")) && DateTime.UtcNow < deadline) Thread.Sleep(20);
        return Ray.NodeIpAddress;
    }

    private static string SleepThenNodeIpShort()
    {
        Thread.Sleep(300);
        return Ray.NodeIpAddress;

    }

    private static int Spread(int count, int holdMs)
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var options = new TaskOptions { Strategy = SchedulingStrategy.Spread };
        var refs = Enumerable.Range(0, count).Select(_ => Ray.Task(HoldThenNodeIp, options).Remote(holdMs)).ToList();
        var runs = Ray.Get(refs, TimeSpan.FromMinutes(10)).Select(r => r.Split('|')).Select(p => (Ip: p[0], Start: long.Parse(p[1], System.Globalization.CultureInfo.InvariantCulture), End: long.Parse(p[2], System.Globalization.CultureInfo.InvariantCulture))).ToList();
        var took = watch.ElapsedMilliseconds;
        // The most tasks running at one moment: sweep the starts (+1) and ends (-1), ends first at a tie.
        var atOnce = 0;
        var running = 0;
        foreach (var (_, step) in runs.SelectMany(r => new[] { (r.Start, 1), (r.End, -1) }).OrderBy(e => e.Item1).ThenBy(e => e.Item2))
            atOnce = Math.Max(atOnce, running += step);
        Console.WriteLine($"spread {runs.Count} tasks on {runs.Select(r => r.Ip).Distinct(StringComparer.Ordinal).Count()} nodes, {atOnce} at once at most, in {took} ms");
        return 0;
    }

    /// <summary>Holds its CPU for <paramref name="ms"/>; the node's address and when it ran (Unix ms, this machine's clock).</summary>
    private static string HoldThenNodeIp(int ms)
    {
        var start = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        Thread.Sleep(ms);
        return $"{Ray.NodeIpAddress}|{start}|{DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()}";
    }

    private static string SleepThenNodeIp()
    {
        Thread.Sleep(2000);
        return Ray.NodeIpAddress;
    }
}
