using System.Text.Json;
using RaySharp.Common;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>The GCS keeps its tables in a real Redis, on a host of its own, and can be killed and started again.</summary>
public sealed class ControlStoreTests(Xunit.Abstractions.ITestOutputHelper output) : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(3);

    public void Dispose() => _net.Dispose();

    [Fact]
    public async Task AGcsKilledWithSigkillAndStartedAgainOnRedisLosesNothing()
    {
        var (head, worker, redisHost) = (_net[0], _net[1], _net[2]);
        using var redis = await RedisServer.StartAsync(redisHost);
        var started = await Cli.RunAsync(head, "start", "--head", "--num-cpus=2", $"--redis-address={redis.Address}");
        Assert.True(started.ExitCode == 0, started.ToString());
        Assert.Equal(0, (await Cli.RunAsync(worker, "start", $"--address={head.Ip}:6379", "--num-cpus=2")).ExitCode);
        var before = (await ClusterAssertions.StatusAsync(head)).Where(n => n.State == "ALIVE").Select(n => n.NodeId).Order().ToList();
        Assert.Equal(2, before.Count);

        head.Environment["TESTDRIVER_NAMESPACE"] = "control-store";
        using var driver = new SignalledDriver(head, "gcs-restart", "auto");
        await driver.WaitForAsync("submitted", TimeSpan.FromSeconds(60));

        // kill -9 the GCS while its actor lives and its tasks run.
        var session = ClusterAssertions.Sessions(head).Single();
        var gcsPid = session.ReadPorts(Components.GcsServer)!.Pid;
        var down = System.Diagnostics.Stopwatch.StartNew();
        Posix.Kill(gcsPid, Posix.SIGKILL);
        ClusterAssertions.Eventually(() => !Posix.IsAlive(gcsPid), TimeSpan.FromSeconds(5), "the GCS to die");
        var unreachable = await Cli.RunAsync(head, "status");
        Assert.NotEqual(0, unreachable.ExitCode);
        // The driver calls its actor now, with no GCS, and says when the answer came.
        driver.Signal("gcs-down");
        await driver.WaitForAsync("called-during", TimeSpan.FromSeconds(60));
        Assert.False(Posix.IsAlive(gcsPid));
        Assert.NotEqual(0, (await Cli.RunAsync(head, "status")).ExitCode);

        // Started again by the same command on the head: it finds its state in Redis.
        var restarted = await Cli.RunAsync(head, "start", "--head", $"--redis-address={redis.Address}");
        Assert.True(restarted.ExitCode == 0, restarted.ToString());
        Assert.Contains("restarted it on", restarted.Stdout);
        output.WriteLine($"GCS down {down.Elapsed.TotalSeconds:0.0} s (the restart command itself took {restarted.Elapsed.TotalSeconds:0.0} s)");
        driver.Signal("restarted");

        var run = await driver.Run;
        output.WriteLine(run.Stdout);
        Assert.Contains("actor-before 1\n", run.Stdout);
        Assert.Contains("actor-during 2\n", run.Stdout);
        Assert.Contains("tasks 200 wrong 0\n", run.Stdout);
        Assert.Contains("actor-after 3\n", run.Stdout);
        Assert.Contains("actor-lookup 4\n", run.Stdout);
        Assert.Contains("new-tasks 2470\n", run.Stdout);
        Assert.Contains("new-actor 6\n", run.Stdout);
        Assert.Contains("nodes 2\n", run.Stdout);
        Assert.Contains("objects True True\n", run.Stdout);
        // The head's raylet listed its copy of the object made on the other node in the new GCS's location table again
        // (that table is not stored), so readers elsewhere find it as before.
        Assert.Matches(@"copied 200000 object \w+", run.Stdout);
        Assert.Matches(@"The GCS was restarted \(restart 1\); listed [1-9]\d* object copies of this node again",
            File.ReadAllText(session.LogFile(Components.Raylet)));

        // The same nodes, none dead; the detached actor alive, no restart of it needed.
        var after = await ClusterAssertions.StatusAsync(head);
        Assert.Equal(before, after.Where(n => n.State == "ALIVE").Select(n => n.NodeId).Order().ToList());
        Assert.DoesNotContain(after, n => n.State == "DEAD");
        var listed = await Cli.RunAsync(head, "list", "actors", "--format", "json");
        var survivor = JsonDocument.Parse(listed.Stdout).RootElement.EnumerateArray().Single(a => a.GetProperty("name").GetString() == "survivor");
        Assert.Equal("ALIVE", survivor.GetProperty("state").GetString());
        Assert.Equal(0, survivor.GetProperty("num_restarts").GetInt32());
        // The driver registered again with the new GCS, which therefore keeps its job running.
        var gcsLog = File.ReadAllText(session.LogFile(Components.GcsServer));
        Assert.Contains("GCS restarted on the stored state of cluster", gcsLog);
        Assert.Matches(@"The driver of job \w+ reconnected", gcsLog);
        Assert.Contains("found actor", gcsLog);
        var statusText = await Cli.RunAsync(head, "status");
        Assert.Contains($"redis {redis.Address}", statusText.Stdout);

        Assert.NotEmpty((await redis.CliAsync("--scan", "--pattern", $"raysharp:{session.Name}:*")).Trim());
        await ClusterAssertions.StopAndAssertCleanAsync(worker);
        await ClusterAssertions.StopAndAssertCleanAsync(head);
        // Stopped on purpose, the cluster takes its state out of Redis.
        Assert.Empty((await redis.CliAsync("--scan", "--pattern", $"raysharp:{session.Name}:*")).Trim());
    }

    [Fact]
    public async Task AGcsStoppedWithSigtermByAnythingButRaysharpStopKeepsTheStateInRedis()
    {
        var (head, redisHost) = (_net[0], _net[2]);
        using var redis = await RedisServer.StartAsync(redisHost);
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=1", $"--redis-address={redis.Address}")).ExitCode);
        var session = ClusterAssertions.Sessions(head).Single();
        var pattern = $"raysharp:{session.Name}:*";
        var stored = (await redis.CliAsync("--scan", "--pattern", pattern)).Split('\n', StringSplitOptions.RemoveEmptyEntries).Length;
        Assert.True(stored > 0, "the GCS stored nothing in Redis");

        // A supervisor (systemd, Kubernetes) stopping the GCS with SIGTERM: a graceful stop, not the cluster's end.
        var gcsPid = session.ReadPorts(Components.GcsServer)!.Pid;
        Posix.Kill(gcsPid, Posix.SIGTERM);
        ClusterAssertions.Eventually(() => !Posix.IsAlive(gcsPid), TimeSpan.FromSeconds(20), "the GCS to stop");
        Assert.Equal(stored, (await redis.CliAsync("--scan", "--pattern", pattern)).Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);

        // Started again, it takes the cluster over from that state: the same node, alive.
        var restarted = await Cli.RunAsync(head, "start", "--head", $"--redis-address={redis.Address}");
        Assert.True(restarted.ExitCode == 0, restarted.ToString());
        Assert.Contains("restarted it on", restarted.Stdout);
        Assert.Contains("GCS restarted on the stored state of cluster", File.ReadAllText(session.LogFile(Components.GcsServer)));
        await ClusterAssertions.EventuallyAsync(async () => (await ClusterAssertions.StatusAsync(head)).Count(n => n.State == "ALIVE") == 1,
            TimeSpan.FromSeconds(20), "the head's node alive under the restarted GCS");

        // `raysharp stop` is the cluster's end: then the state goes.
        await ClusterAssertions.StopAndAssertCleanAsync(head);
        Assert.Empty((await redis.CliAsync("--scan", "--pattern", pattern)).Trim());
    }
}
