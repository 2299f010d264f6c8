// Connects to a RaySharp cluster and prints what it is made of.
//   dotnet run --project examples/ClusterInfo                 # the local cluster, or an embedded one if none runs
//   dotnet run --project examples/ClusterInfo -- auto         # the cluster started with `raysharp start` (required)
//   dotnet run --project examples/ClusterInfo -- 10.0.0.1:6379
using RaySharp;

var address = args.FirstOrDefault(a => !a.StartsWith("--", StringComparison.Ordinal));
try
{
    using var ray = Ray.Init(address);
    Console.WriteLine($"Connected to the GCS at {Ray.GcsAddress} as job {Ray.JobId}; this node's IP is {Ray.NodeIpAddress}.");
    foreach (var node in Ray.Nodes())
    {
        var resources = string.Join(", ", node.Resources.Where(r => !r.Key.StartsWith("node:", StringComparison.Ordinal))
            .OrderBy(r => r.Key, StringComparer.Ordinal).Select(r => $"{r.Key}={r.Value}"));
        Console.WriteLine($"node {node.NodeId[..8]} {node.NodeIpAddress} {(node.Alive ? "ALIVE" : "DEAD")}{(node.IsHeadNode ? " head" : "")} {resources}");
    }
    Console.WriteLine($"cluster CPU={Ray.ClusterResources().GetValueOrDefault("CPU")} available CPU={Ray.AvailableResources().GetValueOrDefault("CPU")}");
    if (args.Contains("--hold"))
    {
        // Used by the tests to kill a driver mid-run.
        Console.WriteLine("HOLDING");
        Thread.Sleep(Timeout.Infinite);
    }
}
catch (RayException e)
{
    Console.Error.WriteLine("Error: " + e.Message);
    return 1;
}
return 0;
