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
            default:
                return null;
        }
    }

    private static string NodeIp() => Ray.NodeIpAddress;

    private static string SleepThenNodeIp()
    {
        Thread.Sleep(2000);
        return Ray.NodeIpAddress;
    }
}
