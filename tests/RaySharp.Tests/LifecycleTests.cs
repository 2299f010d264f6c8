using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>Lifetimes of drivers and workers: a driver shutting down with work in flight, workers serving many jobs.</summary>
public sealed class LifecycleTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(2);

    public void Dispose() => _net.Dispose();

    [Fact]
    public async Task ShutdownFailsEveryPendingTaskAndActorCallInsteadOfLeavingThemWaiting()
    {
        var host = _net[0];
        var run = await ClusterAssertions.RunDriverAsync(host, "shutdown-pending", "embedded");
        Assert.Contains("settled True", run.Stdout);
        // 8 tasks and 3 calls, running or queued: each fails with the reason, none is left waiting or cancelled.
        var outcome = Assert.Single(run.Stdout.Split('\n'), l => l.StartsWith("outcome ", StringComparison.Ordinal));
        Assert.Equal("outcome 11 RayException", outcome.TrimEnd());
        Assert.Contains("with-reason 11", run.Stdout);
        // The embedded cluster went with the driver.
        Assert.Empty(host.Pids());
        Assert.Empty(ClusterAssertions.SharedMemoryFiles(host));
    }

    [Fact]
    public async Task AWorkerServesAtMostMaxJobsPerWorkerJobsThenAFreshOneTakesOver()
    {
        var host = _net[0];
        host.Environment["RAYSHARP_max_jobs_per_worker"] = "2";
        var started = await Cli.RunAsync(host, "start", "--head", "--num-cpus=1");
        Assert.True(started.ExitCode == 0, started.ToString());
        var pids = new List<int>();
        for (var job = 0; job < 5; job++)
        {
            var run = await ClusterAssertions.RunDriverAsync(host, "worker-pid", "auto");
            var line = Assert.Single(run.Stdout.Split('\n'), l => l.StartsWith("worker-pid ", StringComparison.Ordinal));
            pids.Add(int.Parse(line["worker-pid ".Length..].Trim(), System.Globalization.CultureInfo.InvariantCulture));
        }
        // However the pool's workers came and went, none ran tasks of more than two of the five jobs: a worker that has
        // served two is stopped rather than leased to a third (each job's code stays loaded in a worker for good). On
        // this one-CPU node the pool would otherwise reuse one worker for every job.
        var jobsPerWorker = pids.GroupBy(p => p).ToDictionary(g => g.Key, g => g.Count());
        Assert.True(jobsPerWorker.Values.All(n => n <= 2), "jobs per worker pid: " + string.Join(", ", jobsPerWorker.Select(kv => $"{kv.Key}={kv.Value}")));
        await ClusterAssertions.StopAndAssertCleanAsync(host);
    }

    [Fact]
    public async Task ARayletWhoseWorkersKeepDyingKeepsNoDescriptorOfTheDeadOnes()
    {
        var host = _net[0];
        var started = await Cli.RunAsync(host, "start", "--head", "--num-cpus=1");
        Assert.True(started.ExitCode == 0, started.ToString());
        var raylet = ClusterAssertions.Sessions(host).Single().RecordedProcesses().Single(r => r.Component == Common.Components.Raylet).Pid;
        // Pipes only: the runtime opens more assemblies (and sockets) as it goes, a worker's stdin is a pipe.
        int Pipes() => Directory.GetFiles($"/proc/{raylet}/fd").Count(f =>
        {
            try { return new FileInfo(f).LinkTarget?.StartsWith("pipe:", StringComparison.Ordinal) == true; }
            catch (IOException) { return false; }
        });
        int Workers() => ClusterAssertions.Sessions(host).Single().RecordedProcesses().Count(r => r.Component == Common.Components.Worker);
        // One driver first, so the raylet's connections to the GCS and a driver's first lease are all set up.
        await ClusterAssertions.RunDriverAsync(host, "crash-workers", "auto", "1");
        var before = Pipes() - Workers();
        var run = await ClusterAssertions.RunDriverAsync(host, "crash-workers", "auto", "12");
        Assert.Contains("crashed 12", run.Stdout);
        // Each live worker holds one descriptor in the raylet (its stdin pipe); a dead one must hold none (its pipe and
        // process handle went with its exit, not at some later garbage collection).
        var after = Pipes() - Workers();
        Assert.True(after - before < 3, $"the raylet holds {after - before} more pipes after 12 of its workers died ({before} -> {after}, live workers aside)");
        await ClusterAssertions.StopAndAssertCleanAsync(host);
    }

    /// <summary>The ids of the objects a node's store holds, by <c>raysharp memory</c>, with their kind of copy.</summary>
    private static async Task<Dictionary<string, string>> StoredObjectsAsync(TestHost from, TestHost node)
    {
        var memory = await Cli.RunAsync(from, "memory", "--format", "json");
        Assert.True(memory.ExitCode == 0, memory.ToString());
        return System.Text.Json.JsonDocument.Parse(memory.Stdout).RootElement.EnumerateArray()
            .Single(n => n.GetProperty("node_ip_address").GetString() == node.Ip)
            .GetProperty("objects").EnumerateArray()
            .ToDictionary(o => o.GetProperty("object_id").GetString()!, o => o.GetProperty("copy").GetString()!);
    }

    [Fact]
    public async Task WhenTheOwnerFreesAnObjectTheCopiesOnNodesThatPulledItGoToo()
    {
        var head = _net[0];
        var worker = _net[1];
        Assert.True((await Cli.RunAsync(head, "start", "--head", "--num-cpus=1")).ExitCode == 0);
        var joined = await Cli.RunAsync(worker, "start", $"--address={head.Ip}:6379", "--num-cpus=1");
        Assert.True(joined.ExitCode == 0, joined.ToString());
        using var driver = new SignalledDriver(head, "copies-freed", "auto");
        await driver.WaitForAsync("copied", TimeSpan.FromSeconds(60));
        var id = (await StoredObjectsAsync(head, head)).Single(o => o.Value == "primary").Key;
        Assert.Equal("secondary", (await StoredObjectsAsync(head, worker))[id]);

        driver.Signal("drop");
        await driver.WaitForAsync("dropped", TimeSpan.FromSeconds(30));
        // The driver is alive and its job goes on: only the owner's free reaches the copy.
        await ClusterAssertions.EventuallyAsync(async () => !(await StoredObjectsAsync(head, worker)).ContainsKey(id),
            TimeSpan.FromSeconds(20), $"the worker node's copy of {id} freed");
        Assert.False((await StoredObjectsAsync(head, head)).ContainsKey(id), "the primary is freed too");
        Assert.False(driver.Run.IsCompleted, "the driver should still be running");
        driver.Signal("done");
        var run = await driver.Run;
        Assert.Contains("read-there True", run.Stdout);
        foreach (var h in new[] { worker, head }) await ClusterAssertions.StopAndAssertCleanAsync(h);
    }
}
