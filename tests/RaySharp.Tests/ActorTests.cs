using System.Text.Json;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>Actors driven by a user program (RaySharp.TestDriver) on embedded and CLI-started clusters.</summary>
public sealed class ActorTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(3);

    public void Dispose() => _net.Dispose();

    [Fact]
    public async Task ActorsKeepStateInOrderTakeRefsAndHandlesAndReportErrors()
    {
        var run = await ClusterAssertions.RunDriverAsync(_net[0], "actors");
        Assert.Contains("ordered True last 10010\n", run.Stdout);
        Assert.Contains("lambda 10010\n", run.Stdout);
        Assert.Contains("lambda-arg 10015\n", run.Stdout);
        Assert.Contains("ref-arg 10115\n", run.Stdout);
        Assert.Contains("async-method 10116\n", run.Stdout);
        Assert.Contains("void-method True 0\n", run.Stdout);
        Assert.Contains("method-exception System.InvalidOperationException boom\n", run.Stdout);
        Assert.Contains("alive-after-exception 2\n", run.Stdout);
        Assert.Contains("shared-handle 40\n", run.Stdout);
        Assert.Contains("died: its constructor threw System.FormatException: no config", run.Stdout);
        Assert.Contains("killed ActorDiedException: The actor", run.Stdout);
        Assert.Contains("died: killed by Ray.Kill", run.Stdout);
        Assert.Contains("pending-limit PendingCallsLimitExceededException: actor", run.Stdout);
        // Alive: the shared counter and the sleeper; dead: the killed counter and the one whose constructor threw.
        Assert.True(run.Stdout.Contains("listed ALIVE=2,DEAD=2\n", StringComparison.Ordinal), run.Stdout);
        ClusterAssertions.Eventually(() => _net[0].Pids().Count == 0, TimeSpan.FromSeconds(15), "the embedded cluster and its actors stopping with the driver");
    }

    [Fact]
    public async Task AsyncActorsInterleaveThreadedActorsHonourMaxConcurrencyAndPlainActorsRunOneCallAtATime()
    {
        var run = await ClusterAssertions.RunDriverAsync(_net[0], "actor-concurrency");
        // All 100 calls inside at once (each waits for the others): they interleave at their awaits...
        Assert.Contains("async-interleaved 100 of 100 max-inside 100\n", run.Stdout);
        // ...and never run in parallel (the control, which leaves the actor's context, shows the probe sees it when they do).
        Assert.Contains("async-parallel overlaps 0 control-overlaps-seen True\n", run.Stdout);
        Assert.Contains("threaded-gathered 9 of 9 max 3\n", run.Stdout);
        Assert.Contains("serial-max 1\n", run.Stdout);
    }

    [Fact]
    public async Task ActorsRestartWithinMaxRestartsRetryCallsWithinMaxTaskRetriesAndDieWithTheirCauseAfterwards()
    {
        var run = await ClusterAssertions.RunDriverAsync(_net[0], "actor-lifecycle");
        Assert.Contains("restarted True value 0\n", run.Stdout);
        Assert.Contains("restarts-used ActorDiedException: The actor", run.Stdout);
        Assert.Contains("retried-call survived\n", run.Stdout);
        Assert.Contains("unretried-call ActorUnavailableException: actor", run.Stdout);
        Assert.Contains("after-restart 1\n", run.Stdout);
        Assert.Matches(@"worker-died ActorDiedException: The actor \w+ died: its worker process \(pid \d+ on [\d.]+\) died", run.Stdout);
        Assert.Contains("states ALIVE,DEAD\n", run.Stdout);
    }

    [Fact]
    public async Task ADetachedNamedActorOutlivesItsDriverAndIsFoundAndKilledFromAnother()
    {
        var head = _net[0];
        var started = await Cli.RunAsync(head, "start", "--head", "--num-cpus=2");
        Assert.True(started.ExitCode == 0, started.ToString());
        head.Environment["TESTDRIVER_NAMESPACE"] = "shared-space";

        var create = await ClusterAssertions.RunDriverAsync(head, "named-create", "auto");
        Assert.Contains("stored 42\n", create.Stdout);
        Assert.Contains("named-duplicate ArgumentException: an actor named 'registry' already exists in namespace 'shared-space'", create.Stdout);
        Assert.Contains("get-if-exists True\n", create.Stdout);
        Assert.Contains("owned 1\n", create.Stdout);

        // The creating driver is gone: its detached actor lives on, the one it owned went with it.
        var listed = await Cli.RunAsync(head, "list", "actors", "--format", "json");
        Assert.True(listed.ExitCode == 0, listed.ToString());
        var actors = JsonDocument.Parse(listed.Stdout).RootElement.EnumerateArray().ToDictionary(a => a.GetProperty("name").GetString()!, a => a);
        Assert.Equal("ALIVE", actors["registry"].GetProperty("state").GetString());
        Assert.Equal("DEAD", actors["owned"].GetProperty("state").GetString());
        Assert.Contains("its owner, the driver of job", actors["owned"].GetProperty("death_cause").GetString());

        var lookup = await ClusterAssertions.RunDriverAsync(head, "named-lookup", "auto");
        Assert.Matches(@"looked-up 42 from \d+", lookup.Stdout);
        Assert.Contains("after-kill ActorDiedException: The actor", lookup.Stdout);
        Assert.Contains("lookup-after-kill RayException: no live actor is named 'registry' in namespace 'shared-space'", lookup.Stdout);

        var text = await Cli.RunAsync(head, "list", "actors");
        Assert.Contains("DEAD: 2", text.Stdout);
        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }

    [Fact]
    public async Task AnActorWhoseHandlesAreAllGoneIsEndedAndOneStillHeldIsNot()
    {
        var run = await ClusterAssertions.RunDriverAsync(_net[0], "actor-gc");
        Assert.Contains("dropped-handle every handle to it went out of scope\n", run.Stdout);
        Assert.Contains("kept-handle 1\n", run.Stdout);
    }

    [Fact]
    public async Task TenThousandLightweightActorsShareOneProcessAndEachAnswers()
    {
        var run = await ClusterAssertions.RunDriverAsync(_net[0], "lightweight", "embedded", "10000");
        Assert.Contains("lightweight 10000 correct True processes 1 ", run.Stdout);
        Assert.Contains("lightweight-killed ActorDiedException: The actor", run.Stdout);
        Assert.Contains("neighbour 3\n", run.Stdout);
        Assert.Contains("lightweight-bad ArgumentException: a lightweight actor shares a process and holds no resources", run.Stdout);
        ClusterAssertions.Eventually(() => _net[0].Pids().Count == 0, TimeSpan.FromSeconds(15), "the embedded cluster stopping with the driver");
    }

    [Fact]
    public async Task ActorsArePlacedByGpuAndCustomResourcesAndAHandleWorksFromTasksOnOtherNodes()
    {
        var (head, gpuNode, specialNode) = (_net[0], _net[1], _net[2]);
        var started = await Cli.RunAsync(head, "start", "--head", "--num-cpus=2");
        Assert.True(started.ExitCode == 0, started.ToString());
        Assert.Equal(0, (await Cli.RunAsync(gpuNode, "start", $"--address={head.Ip}:6379", "--num-cpus=2", "--num-gpus=1")).ExitCode);
        Assert.Equal(0, (await Cli.RunAsync(specialNode, "start", $"--address={head.Ip}:6379", "--num-cpus=2", "--resources", "{\"special\": 1}")).ExitCode);
        await ClusterAssertions.WaitForSpillbackViewsAsync(head, 3);

        var run = await ClusterAssertions.RunDriverAsync(head, "actor-placement", "auto");
        Assert.Contains($"gpu-actor {gpuNode.Ip} 0\n", run.Stdout);
        Assert.Contains($"custom-actor {specialNode.Ip}\n", run.Stdout);
        var handle = run.Stdout.Split('\n').Single(l => l.StartsWith("handle-in-tasks ", StringComparison.Ordinal)).Split(' ');
        Assert.Equal("4", handle[1]);
        Assert.True(int.Parse(handle[3], System.Globalization.CultureInfo.InvariantCulture) >= 2, run.Stdout);

        foreach (var host in _net.Hosts.Reverse()) await ClusterAssertions.StopAndAssertCleanAsync(host);
    }
}
