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
                Console.WriteLine("gpu-task-ran-on " + Ray.Get(Ray.Task(NodeIp, new TaskOptions { NumGpus = 1 }).Remote(), TimeSpan.FromMinutes(4)));
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
            case "autoscale-spread":
                // N one-CPU tasks scheduled SPREAD, each holding its CPU until all N run (or 3 minutes pass): with
                // nodes of one CPU they need N nodes at once. Prints how many ran together, on how many nodes, how long.
                return Spread(int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture));
            default:
                return null;
        }
    }

    private static string NodeIp() => Ray.NodeIpAddress;

    private static int Spread(int count)
    {
        var barrier = Directory.CreateDirectory(Path.Combine("/tmp", "raysharp-spread-" + Guid.NewGuid().ToString("N"))).FullName;
        try
        {
            var watch = System.Diagnostics.Stopwatch.StartNew();
            var options = new TaskOptions { Strategy = SchedulingStrategy.Spread };
            var refs = Enumerable.Range(0, count).Select(_ => Ray.Task(NodeIpWhenAllRun, options).Remote(barrier, count)).ToList();
            var results = Ray.Get(refs, TimeSpan.FromMinutes(5));
            var together = results.Count(r => r.EndsWith("|together", StringComparison.Ordinal));
            var nodes = results.Select(r => r[..r.IndexOf('|', StringComparison.Ordinal)]).Distinct(StringComparer.Ordinal).Count();
            Console.WriteLine($"spread {results.Length} tasks, {together} together, on {nodes} nodes in {watch.ElapsedMilliseconds} ms");
            return 0;
        }
        finally
        {
            Directory.Delete(barrier, recursive: true);
        }
    }

    /// <summary>Checks in at the barrier folder and waits until <paramref name="count"/> tasks have; the node's address, and whether they all did.</summary>
    private static string NodeIpWhenAllRun(string barrier, int count)
    {
        File.WriteAllText(Path.Combine(barrier, Guid.NewGuid().ToString("N")), "");
        var deadline = DateTime.UtcNow.AddMinutes(3);
        while (Directory.GetFiles(barrier).Length < count)
        {
            if (DateTime.UtcNow > deadline) return Ray.NodeIpAddress + "|alone";
            Thread.Sleep(100);
        }
        return Ray.NodeIpAddress + "|together";
    }

    private static string SleepThenNodeIp()
    {
        Thread.Sleep(2000);
        return Ray.NodeIpAddress;
    }
}
