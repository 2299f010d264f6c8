using RaySharp.Common;
using RaySharp.Rpc.Clients;
using RaySharp.Tests.Infrastructure;
using Xunit.Abstractions;

namespace RaySharp.Tests;

/// <summary>
/// Placement groups through the public API on a 3-host namespace cluster (drivers of RaySharp.TestDriver): tasks and
/// actors with a bundle index run on that bundle's node and hold its resources; children are captured when asked; a
/// group that no node can hold is created when one joins; removal ends the group's actors; stopping a node reschedules
/// just its bundle; a detached group outlives its driver and an owned one does not; and at the end every node has all
/// of its resources back.
/// </summary>
public sealed class PlacementGroupApiTests(ITestOutputHelper output) : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(3);

    public void Dispose() => _net.Dispose();

    [Fact]
    public async Task BundlesPlaceTasksAndActorsWaitForANodeRescheduleOnNodeDeathAndOnlyDetachedGroupsOutliveTheirDriver()
    {
        var (head, w1, w2) = (_net[0], _net[1], _net[2]);
        var address = $"{head.Ip}:6379";
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=2")).ExitCode);
        Assert.Equal(0, (await Cli.RunAsync(w1, "start", $"--address={address}", "--num-cpus=2")).ExitCode);
        using var channels = new Rpc.RpcChannelPool(Cli.MemberOf(address));
        var gcs = new GcsClient(channels, address);
        await ClusterAssertions.EventuallyAsync(async () => (await gcs.GetAllNodesAsync(aliveOnly: true)).Count == 2, TimeSpan.FromSeconds(30), "two nodes");

        head.Environment["TESTDRIVER_NAMESPACE"] = "pg";
        using var driver = new SignalledDriver(head, "pg-api", address);
        await driver.WaitForAsync("add-node", TimeSpan.FromSeconds(120));
        Assert.Equal(0, (await Cli.RunAsync(w2, "start", $"--address={address}", "--num-cpus=4")).ExitCode);
        await driver.WaitForAsync("stop-node", TimeSpan.FromSeconds(120));
        var victimId = driver.Read("victim");
        var victimIp = (await gcs.GetAllNodesAsync(aliveOnly: true)).Single(n => n.NodeId == victimId).NodeIpAddress;
        var victim = victimIp == w1.Ip ? w1 : w2;
        Assert.Equal(victim.Ip, victimIp);
        Assert.Equal(0, (await Cli.RunAsync(victim, "stop")).ExitCode);
        driver.Signal("node-stopped");
        var run = await driver.Run;
        output.WriteLine(run.Stdout);

        var lines = run.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(l => l.Split(' ', 2)).Where(p => p.Length == 2).GroupBy(p => p[0]).ToDictionary(g => g.Key, g => g.Last()[1]);
        string Line(string key) => lines.TryGetValue(key, out var value) ? value : throw new Xunit.Sdk.XunitException($"no '{key}' line in:\n{run.Stdout}");

        Assert.Equal("Created", Line("spread-state"));
        Assert.Equal(2, Line("spread-nodes").Split(',').Distinct().Count());
        foreach (var check in new[] { "named-lookup", "task-in-bundle-0", "task-in-bundle-1", "actor-in-bundle-0", "task-waits-for-bundle",
                     "task-runs-after-actor", "child-captured", "child-not-captured", "actor-in-big", "kept-bundles", "moved-bundle", "kept-actors" })
            Assert.True(Line(check) == "True", $"{check}: {Line(check)}");
        Assert.Contains("ArgumentOutOfRangeException", Line("bad-index"));
        Assert.Contains("bundles 0 to 1", Line("bad-index"));
        Assert.Contains("ArgumentException: bundle 0 asks for nothing", Line("empty-bundle"));
        Assert.Contains("ArgumentException", Line("taken-name"));
        Assert.Contains("spread", Line("taken-name"));
        Assert.Equal("True Pending", Line("big-waits"));
        // STRICT_PACK of 3 CPUs: on one node, the one with 4 that joined.
        var w2Node = (await gcs.GetAllNodesAsync(aliveOnly: false)).Where(n => n.NodeIpAddress == w2.Ip).OrderBy(n => n.StartTimeMs).First().NodeId;
        Assert.Equal($"Created 1 {w2Node}", Line("big-created"));
        Assert.StartsWith("True InvalidOperationException", Line("big-removed"));
        Assert.Contains("ActorDied", Line("actor-after-removal"));
        Assert.Equal("3", Line("three-nodes"));
        Assert.Equal("Created", Line("rescheduled"));
        Assert.Contains("driver-done", run.Stdout);

        // Another driver: the detached group is still there, the owned one went with its driver.
        var after = await ClusterAssertions.RunDriverAsync(head, "pg-after-driver", address);
        output.WriteLine(after.Stdout);
        Assert.Contains("keeper Created", after.Stdout);
        Assert.Contains("owned ArgumentException: no placement group is named 'owned' in namespace 'pg'", after.Stdout);
        Assert.Contains("left 0", after.Stdout);

        // Every bundle gone: each live node has all its CPUs and no group resource.
        await ClusterAssertions.EventuallyAsync(async () => (await gcs.GetAllNodesAsync(aliveOnly: true)).All(n =>
                n.ResourcesAvailable.GetValueOrDefault(ResourceSet.Cpu) == n.ResourcesTotal.GetValueOrDefault(ResourceSet.Cpu)
                && !n.ResourcesTotal.Keys.Any(BundleResources.IsGroupResource)),
            TimeSpan.FromSeconds(30), "every node to have all its resources back");
    }
}
