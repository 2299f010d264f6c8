using System.Diagnostics;
using RaySharp.Common;
using RaySharp.Tests.Infrastructure;
using Xunit.Abstractions;

namespace RaySharp.Tests;

/// <summary>Work finishes, correctly, while worker nodes are killed and come back.</summary>
public sealed class ChaosTests(ITestOutputHelper output) : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(4);

    public void Dispose() => _net.Dispose();

    /// <summary>How often a worker node's raylet is killed (and the node started again).</summary>
    private static readonly TimeSpan s_killEvery = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task TasksAndAnActorFinishCorrectlyWhileWorkerNodesAreKilledAndRestartedEveryTwentySeconds()
    {
        var head = _net[0];
        var workers = _net.Hosts.Skip(1).ToList();
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=1")).ExitCode);
        foreach (var w in workers) Assert.Equal(0, (await StartWorkerAsync(w)).ExitCode);

        var clock = Stopwatch.StartNew();
        using var chaos = new SignalledDriver(head, "chaos", "auto");
        var driver = chaos.Run;
        await chaos.WaitForAsync("submitted", TimeSpan.FromSeconds(60));

        var kills = 0;
        while (!driver.IsCompleted)
        {
            await Task.WhenAny(driver, Task.Delay(kills == 0 ? TimeSpan.FromSeconds(5) : s_killEvery));
            if (driver.IsCompleted) break;
            // The actor's node first, so that the actor surely restarts; then each worker node in turn.
            var victim = kills == 0 ? await ActorHostAsync(workers) : workers[kills % workers.Count];
            var raylet = LiveRaylet(victim);
            Posix.Kill(raylet, Posix.SIGKILL);
            kills++;
            output.WriteLine($"{clock.Elapsed.TotalSeconds:0.0} s: killed the raylet of {victim} (pid {raylet})");
            ClusterAssertions.Eventually(() => !Posix.IsAlive(raylet), TimeSpan.FromSeconds(5), "the raylet to die");
            var restarted = await StartWorkerAsync(victim);
            Assert.True(restarted.ExitCode == 0, restarted.ToString());
            output.WriteLine($"{clock.Elapsed.TotalSeconds:0.0} s: {victim} started again");
        }
        var run = await driver;
        output.WriteLine(run.Stdout);
        Assert.True(kills >= 1, "the run ended before any node was killed: it tests nothing");
        Assert.Contains("tasks 2000 wrong 0\n", run.Stdout);
        Assert.Matches(@"messages \d+ wrong 0\n", run.Stdout);
        // Per-caller order: every incarnation of the actor ran the driver's messages in the order they were sent.
        Assert.Contains("out-of-order 0\n", run.Stdout);
        Assert.Matches(@"actor-restarts [1-9]\d*\n", run.Stdout);
        // The first incarnation, and at least one more after a restart that ran messages.
        Assert.Matches(@"incarnations ([2-9]|\d\d+)\n", run.Stdout);

        // Nothing leaked: once idle, every live node's CPUs are all available again.
        var view = "";
        try
        {
            await ClusterAssertions.EventuallyAsync(async () =>
            {
                var alive = (await ClusterAssertions.StatusAsync(head)).Where(n => n.State == "ALIVE").ToList();
                view = string.Join("; ", alive.Select(n => $"{n.Ip} CPU {n.Available.GetValueOrDefault("CPU")}/{n.Total.GetValueOrDefault("CPU")}"));
                return alive.Count == 4 && alive.Sum(n => n.Available.GetValueOrDefault("CPU")) == alive.Sum(n => n.Total.GetValueOrDefault("CPU"));
            }, TimeSpan.FromSeconds(30), "every CPU of the cluster available again");
        }
        finally
        {
            output.WriteLine("alive nodes: " + view);
        }
        output.WriteLine($"{kills} kill(s); the run took {clock.Elapsed.TotalSeconds:0} s");

        foreach (var w in workers) await ClusterAssertions.StopAndAssertCleanAsync(w);
        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }

    /// <summary>The worker host the actor lives on, once it is placed.</summary>
    private async Task<TestHost> ActorHostAsync(IReadOnlyList<TestHost> workers)
    {
        string? ip = null;
        await ClusterAssertions.EventuallyAsync(async () =>
        {
            var listed = await Cli.RunAsync(_net[0], "list", "actors", "--format", "json");
            ip = System.Text.Json.JsonDocument.Parse(listed.Stdout).RootElement.EnumerateArray()
                .Where(a => a.GetProperty("state").GetString() == "ALIVE")
                .Select(a => a.GetProperty("node_ip_address").GetString()).SingleOrDefault(a => !string.IsNullOrEmpty(a));
            return ip is not null;
        }, TimeSpan.FromSeconds(60), "the actor alive on a worker node");
        return workers.Single(w => w.Ip == ip);
    }

    private Task<CliResult> StartWorkerAsync(TestHost worker) =>
        Cli.RunAsync(worker, "start", $"--address={_net[0].Ip}:6379", "--num-cpus=2", "--resources={\"worker\": 100}");

    /// <summary>The pid of the raylet of the host's newest session that is still alive.</summary>
    private static int LiveRaylet(TestHost host) =>
        ClusterAssertions.Sessions(host).Select(s => s.ReadPorts(Components.Raylet)).OfType<ComponentPorts>()
            .Select(p => p.Pid).Last(Posix.IsAlive);
}
