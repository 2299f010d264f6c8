using RaySharp.Common;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>A head and two worker nodes, each in its own network namespace with its own IP and session root.</summary>
public sealed class MultiNodeClusterTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(3);

    public void Dispose() => _net.Dispose();

    [Fact]
    public async Task ThreeNodesJoinAndStatusShowsTheirIpsAndResources()
    {
        var head = _net[0];
        var w1 = _net[1];
        var w2 = _net[2];

        var started = await Cli.RunAsync(head, "start", "--head", "--port=6379", "--num-cpus=2", "--resources", "{\"head_only\": 1}");
        Assert.True(started.ExitCode == 0, started.ToString());
        Assert.Contains($"raysharp start --address='{head.Ip}:6379'", started.Stdout);
        Assert.Contains($"Local node IP: {head.Ip}", started.Stdout);

        var join1 = await Cli.RunAsync(w1, "start", $"--address={head.Ip}:6379", "--num-cpus=3", "--num-gpus=1");
        Assert.True(join1.ExitCode == 0, join1.ToString());
        var join2 = await Cli.RunAsync(w2, "start", "--address", $"{head.Ip}:6379", "--num-cpus", "1", "--resources", "{\"accelerator\": 2.5, \"ssd\": 1}");
        Assert.True(join2.ExitCode == 0, join2.ToString());

        // Every host sees the same cluster through the network, each from its own namespace.
        foreach (var host in new[] { head, w1 })
        {
            var nodes = await ClusterAssertions.StatusAsync(host.Name == "head" ? head : w1);
            Assert.Equal(3, nodes.Count(n => n.State == "ALIVE"));
        }
        var all = await ClusterAssertions.StatusAsync(w2);
        var byIp = all.ToDictionary(n => n.Ip);
        Assert.Equal(new[] { head.Ip, w1.Ip, w2.Ip }.Order(), byIp.Keys.Order());

        Assert.True(byIp[head.Ip].IsHead);
        Assert.Equal(2, byIp[head.Ip].Total["CPU"]);
        Assert.Equal(1, byIp[head.Ip].Total["head_only"]);
        Assert.False(byIp[head.Ip].Total.ContainsKey("GPU"));

        Assert.False(byIp[w1.Ip].IsHead);
        Assert.Equal(3, byIp[w1.Ip].Total["CPU"]);
        Assert.Equal(1, byIp[w1.Ip].Total["GPU"]);

        Assert.Equal(1, byIp[w2.Ip].Total["CPU"]);
        Assert.Equal(2.5, byIp[w2.Ip].Total["accelerator"]);
        Assert.Equal(1, byIp[w2.Ip].Total["ssd"]);
        Assert.Equal(1, byIp[w2.Ip].Total["node:" + w2.Ip]);

        // The human-readable status names every node and sums the resources.
        var text = await Cli.RunAsync(head, "status");
        Assert.Equal(0, text.ExitCode);
        foreach (var h in _net.Hosts) Assert.Contains(h.Ip, text.Stdout);
        Assert.Contains("0.0/6.0 CPU", text.Stdout);
        Assert.Contains("0.0/1.0 GPU", text.Stdout);
        Assert.Contains("0.0/2.5 accelerator", text.Stdout);

        // Each node prestarted one worker per CPU; they are its processes, in its namespace.
        ClusterAssertions.Eventually(() => WorkerPids(w1).Count == 3, TimeSpan.FromSeconds(20), "three workers on worker1");
        Assert.All(WorkerPids(w1), pid => Assert.Contains(pid, w1.Pids()));

        // Stopping one worker node: its node is reported dead at once (it unregisters), the others stay alive.
        await ClusterAssertions.StopAndAssertCleanAsync(w2);
        var afterStop = await ClusterAssertions.StatusAsync(head);
        Assert.Equal("DEAD", afterStop.Single(n => n.Ip == w2.Ip).State);
        Assert.Equal(2, afterStop.Count(n => n.State == "ALIVE"));

        await ClusterAssertions.StopAndAssertCleanAsync(w1);
        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }

    [Fact]
    public async Task KilledRayletIsMarkedDeadWithinTheHealthCheckWindowAndItsWorkersExit()
    {
        var head = _net[0];
        var worker = _net[1];
        // 500 ms x 3 misses: the node must be declared dead about 1.5 s after its raylet dies.
        head.Environment["RAYSHARP_health_check_period_ms"] = "500";
        head.Environment["RAYSHARP_health_check_failure_threshold"] = "3";

        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=1")).ExitCode);
        var join = await Cli.RunAsync(worker, "start", $"--address={head.Ip}:6379", "--num-cpus=2");
        Assert.True(join.ExitCode == 0, join.ToString());
        ClusterAssertions.Eventually(() => WorkerPids(worker).Count == 2, TimeSpan.FromSeconds(20), "two workers on the worker node");
        var workers = WorkerPids(worker);
        var raylet = ClusterAssertions.Sessions(worker).Single().RecordedProcesses().Single(r => r.Component == Components.Raylet).Pid;

        Assert.True(Posix.Kill(raylet, Posix.SIGKILL));
        var killedAt = DateTime.UtcNow;

        await ClusterAssertions.EventuallyAsync(async () =>
            (await ClusterAssertions.StatusAsync(head)).Single(n => n.Ip == worker.Ip).State == "DEAD",
            TimeSpan.FromSeconds(10), "the GCS marking the node dead");
        var detectedAfter = DateTime.UtcNow - killedAt;
        var dead = (await ClusterAssertions.StatusAsync(head)).Single(n => n.Ip == worker.Ip);
        Assert.Contains("health check failed 3 times", dead.DeathReason);
        // Window: 3 periods plus connection and polling slack; far below the 15 s of the defaults.
        Assert.True(detectedAfter < TimeSpan.FromSeconds(8), $"detected after {detectedAfter.TotalSeconds:0.0} s");

        // Workers notice their raylet is gone (their stdin pipe closes) and exit by themselves.
        ClusterAssertions.Eventually(() => workers.All(pid => !Posix.IsAlive(pid)), TimeSpan.FromSeconds(10), "the orphaned workers exiting");
        Assert.Empty(worker.Pids());

        // The head's node is unaffected.
        Assert.Equal("ALIVE", (await ClusterAssertions.StatusAsync(head)).Single(n => n.Ip == head.Ip).State);
        await ClusterAssertions.StopAndAssertCleanAsync(worker);
        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }

    [Fact]
    public async Task WorkerNodesStopThemselvesWhenTheHeadIsGoneForTooLong()
    {
        var head = _net[0];
        var worker = _net[1];
        worker.Environment["RAYSHARP_gcs_rpc_server_reconnect_timeout_s"] = "2";
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=0")).ExitCode);
        Assert.Equal(0, (await Cli.RunAsync(worker, "start", $"--address={head.Ip}:6379", "--num-cpus=1")).ExitCode);
        ClusterAssertions.Eventually(() => WorkerPids(worker).Count == 1, TimeSpan.FromSeconds(20), "a worker on the worker node");

        var gcs = ClusterAssertions.Sessions(head).Single().RecordedProcesses().Single(r => r.Component == Components.GcsServer).Pid;
        Assert.True(Posix.Kill(gcs, Posix.SIGKILL));

        // No orphans: the raylet gives up on the GCS after its reconnect timeout and takes its workers with it.
        ClusterAssertions.Eventually(() => worker.Pids().Count == 0, TimeSpan.FromSeconds(20), "the headless worker node stopping itself");
        Assert.Contains("unreachable for more than 2 s",
            File.ReadAllText(ClusterAssertions.Sessions(worker).Single().LogFile(Components.Raylet)));
        await ClusterAssertions.StopAndAssertCleanAsync(worker);
        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }

    private static List<int> WorkerPids(TestHost host) =>
        ClusterAssertions.Sessions(host).SelectMany(s => s.RecordedProcesses()).Where(r => r.Component == Components.Worker)
            .Select(r => r.Pid).Where(Posix.IsAlive).ToList();
}
