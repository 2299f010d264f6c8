// The cluster overview's first program, in C#: 1000 tasks that each sleep 10 ms and return the IP of the node they ran
// on; the set of IPs shows which nodes joined the cluster.
//   dotnet run --project examples/NodeIps            # the local cluster, or an embedded one if none runs
//   dotnet run --project examples/NodeIps -- auto    # the cluster started with `raysharp start`
using System.Diagnostics;
using RaySharp;

using var ray = Ray.Init(args.FirstOrDefault());
var stopwatch = Stopwatch.StartNew();
var refs = Enumerable.Range(0, 1000).Select(_ => Ray.Task(NodeIp).Remote()).ToList();
var ips = Ray.Get(refs).ToHashSet();
Console.WriteLine($"{refs.Count} tasks in {stopwatch.Elapsed.TotalSeconds:0.00} s on {ips.Count} node(s): {string.Join(", ", ips.Order())}");

static string NodeIp()
{
    Thread.Sleep(10);
    return Ray.NodeIpAddress;
}
