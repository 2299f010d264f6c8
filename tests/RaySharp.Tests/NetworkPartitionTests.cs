using System.Diagnostics;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>
/// A worker node partitioned from the head by its link going down for 10 s, then up again: its processes live on and
/// their connections stay open but carry nothing, the case a killed process never shows (that one closes its sockets).
/// </summary>
public sealed class NetworkPartitionTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(2);

    public void Dispose() => _net.Dispose();

    /// <param name="quickHealthChecks">
    /// False: the default health check (5 misses of a 3 s period) outlasts the partition, so the node rides it out.
    /// True: a 500 ms period with 3 misses declares the node dead while it is cut off, so its actor restarts elsewhere
    /// and the node must find out it is dead, and stop, once it is reachable again.
    /// </param>
    /// <param name="shortTcpTimeout">
    /// TCP gives up on unacknowledged data after 2 s (not 30 s) in every process: connections to the cut-off node break
    /// during the partition, and reconnecting fails (no route to it) until it is over. The calls must be retried once
    /// it is, to the same actor: a failed connect is not an actor's death.
    /// </param>
    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public async Task AWorkerNodeCutOffForTenSecondsLeavesNoCallHangingAndRejoinsOrIsCleanedUp(bool quickHealthChecks, bool shortTcpTimeout)
    {
        var head = _net[0];
        var worker = _net[1];
        if (shortTcpTimeout)
        {
            foreach (var host in _net.Hosts) host.Environment["RAYSHARP_TCP_USER_TIMEOUT_MS"] = "2000";
        }
        if (quickHealthChecks)
        {
            head.Environment["RAYSHARP_health_check_period_ms"] = "500";
            head.Environment["RAYSHARP_health_check_failure_threshold"] = "3";
        }
        var started = await Cli.RunAsync(head, "start", "--head", "--port=6379", "--num-cpus=2");
        Assert.True(started.ExitCode == 0, started.ToString());
        var joined = await Cli.RunAsync(worker, "start", $"--address={head.Ip}:6379", "--num-cpus=2");
        Assert.True(joined.ExitCode == 0, joined.ToString());

        using var driver = new SignalledDriver(head, "partition", "auto");
        await driver.WaitForAsync("ready", TimeSpan.FromSeconds(60));
        _net.SetLink(worker, up: false);
        var down = Stopwatch.StartNew();
        try
        {
            driver.Signal("down");
            // Everything the driver does that does not need the cut-off node finishes while it is cut off.
            await driver.WaitForAsync("during-done", TimeSpan.FromSeconds(9));
            Assert.True(down.Elapsed < TimeSpan.FromSeconds(10), $"the head's own calls took {down.Elapsed} under the partition");
            // The partition itself lasts 10 s: this wait is the fault being injected, not a synchronisation.
            await Task.Delay(TimeSpan.FromSeconds(10) - down.Elapsed);
        }
        finally
        {
            _net.SetLink(worker, up: true);
        }
        driver.Signal("up");
        await driver.WaitForAsync("after-done", TimeSpan.FromSeconds(150));

        // The node either rejoined (alive, and the actor still there, its state intact) or was declared dead and
        // cleaned up (nothing of RaySharp left running on it, the actor restarted on the head).
        var nodes = await ClusterAssertions.StatusAsync(head);
        var state = nodes.Single(n => n.Ip == worker.Ip).State;
        if (quickHealthChecks) Assert.Equal("DEAD", state);
        if (state == "DEAD")
            ClusterAssertions.Eventually(() => worker.Pids().Count == 0, TimeSpan.FromSeconds(30), "the dead node's processes to exit");
        driver.Signal("settled");
        var run = await driver.Run;
        var output = run.Stdout;

        Assert.Contains($"remote-before 1 on {worker.Ip}", output);
        Assert.Contains("local-during 20", output);
        Assert.Contains($"task-during {head.Ip}", output);
        // Each call made to the cut-off actor completed or failed with a reason, within its retry bound; none hung.
        var outcomes = Lines(output, "remote-during ");
        Assert.Equal(3, outcomes.Count);
        Assert.DoesNotContain(outcomes, o => o.StartsWith("hung", StringComparison.Ordinal));
        Assert.All(outcomes, o => Assert.True(o.StartsWith("ok ", StringComparison.Ordinal) || o.StartsWith("failed Actor", StringComparison.Ordinal), o));
        var pinned = Assert.Single(Lines(output, "pinned-during "));
        Assert.True(pinned.StartsWith("ok ", StringComparison.Ordinal) || pinned.StartsWith("failed ", StringComparison.Ordinal), pinned);
        // The calls that completed did so in the order they were made (per-caller order held across the partition).
        var steps = outcomes.Where(o => o.StartsWith("ok ", StringComparison.Ordinal)).Select(o => int.Parse(o[3..], System.Globalization.CultureInfo.InvariantCulture)).ToList();
        Assert.Equal(steps.Order(), steps);
        var after = Assert.Single(Lines(output, "remote-after "));
        var final = Assert.Single(Lines(output, "remote-final "));
        if (shortTcpTimeout) Assert.All(outcomes, o => Assert.StartsWith("ok ", o));
        if (state == "ALIVE")
        {
            Assert.Equal(outcomes.All(o => o.StartsWith("ok ", StringComparison.Ordinal)), after.StartsWith("5 ", StringComparison.Ordinal));
            Assert.EndsWith($"on {worker.Ip}", after);
            Assert.Equal($"on {worker.Ip}", final);
            var fromWorker = await ClusterAssertions.StatusAsync(worker);
            Assert.Equal(2, fromWorker.Count(n => n.State == "ALIVE"));
        }
        else
        {
            // The driver let go of the dead node's actor when the GCS declared the node dead, though its process was
            // still running behind the partition: calls reach the incarnation the GCS restarted on the head, never
            // the old one the cluster no longer counts.
            Assert.EndsWith($"on {head.Ip}", after);
            Assert.Equal($"on {head.Ip}", final);
        }

        await ClusterAssertions.StopAndAssertCleanAsync(worker);
        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }

    private static List<string> Lines(string output, string prefix) =>
        output.Split('\n').Select(l => l.TrimEnd('\r')).Where(l => l.StartsWith(prefix, StringComparison.Ordinal)).Select(l => l[prefix.Length..]).ToList();
}
