using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>Remote tasks run by user programs (examples/NodeIps, RaySharp.TestDriver) on real clusters.</summary>
public sealed class RemoteTaskTests : IDisposable
{
    private const string Driver = "RaySharp.TestDriver";
    private readonly TestNetwork _net = TestNetwork.Create(3);

    public void Dispose() => _net.Dispose();

    /// <summary>A head and two worker nodes started with the CLI, each with its own flags.</summary>
    private async Task StartClusterAsync(string[] head, string[] worker1, string[] worker2)
    {
        var started = await Cli.RunAsync(_net[0], ["start", "--head", .. head]);
        Assert.True(started.ExitCode == 0, started.ToString());
        foreach (var (host, flags) in new[] { (_net[1], worker1), (_net[2], worker2) })
        {
            var joined = await Cli.RunAsync(host, ["start", $"--address={_net[0].Ip}:6379", .. flags]);
            Assert.True(joined.ExitCode == 0, joined.ToString());
        }
        // Spillback decisions use each raylet's view of the others: wait until every raylet sees every node.
        await ClusterAssertions.WaitForSpillbackViewsAsync(_net[0], 3);
    }

    [Fact]
    public async Task TheOverviewProgramSeesEveryNodeOfAThreeNodeCluster()
    {
        var head = _net[0];
        await StartClusterAsync(["--num-cpus=2"], ["--num-cpus=2"], ["--num-cpus=2"]);

        var run = await Cli.RunProgramAsync(head, "NodeIps", "auto");
        Assert.True(run.ExitCode == 0, run.ToString());
        var ips = string.Join(", ", _net.Hosts.Select(h => h.Ip).Order(StringComparer.Ordinal));
        Assert.Contains($"1000 tasks in", run.Stdout);
        Assert.Contains($"on 3 node(s): {ips}", run.Stdout);

        foreach (var host in _net.Hosts.Reverse()) await ClusterAssertions.StopAndAssertCleanAsync(host);
    }

    [Fact]
    public async Task SpreadUsesEveryNodeAndNodeAffinityPinsTasksToOne()
    {
        var head = _net[0];
        // Three tasks on a 6-CPU head stay under the hybrid policy's 50% threshold: the default keeps them all local.
        await StartClusterAsync(["--num-cpus=6"], ["--num-cpus=2"], ["--num-cpus=2"]);

        var run = await Cli.RunProgramAsync(head, Driver, "spread", "auto");
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains($"default {head.Ip}\n", run.Stdout);
        Assert.Contains("spread " + string.Join(",", _net.Hosts.Select(h => h.Ip).Order(StringComparer.Ordinal)) + "\n", run.Stdout);
        var last = _net.Hosts.Select(h => h.Ip).Order(StringComparer.Ordinal).Last();
        Assert.Contains($"affinity {last}\n", run.Stdout);

        foreach (var host in _net.Hosts.Reverse()) await ClusterAssertions.StopAndAssertCleanAsync(host);
    }

    [Fact]
    public async Task WorkerDeathsAreRetriedExceptionsOnlyWhenAskedAndInfeasibleTasksAreReportedAndWait()
    {
        var run = await Cli.RunProgramAsync(_net[0], Driver, "failures");
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("retried after a crash", run.Stdout);
        Assert.Contains("gave-up WorkerCrashedException attempts=2 The task's worker process died before it answered", run.Stdout);
        Assert.Matches(@"lost its worker process on each of its 2 attempt\(s\) \(pid \d+ on [\d.]+, pid \d+ on [\d.]+; last: .*\) and no retries are left", run.Stdout);
        Assert.Contains("retry-exceptions ok 42 attempts=3\n", run.Stdout);
        Assert.Contains("no-retry-exceptions failed System.IO.IOException attempts=1\n", run.Stdout);
        Assert.Contains("retry-listed ok 42 attempts=2\n", run.Stdout);
        Assert.Contains("retry-unlisted failed System.IO.IOException attempts=1\n", run.Stdout);
        Assert.Contains("retry-budget failed System.IO.IOException attempts=2\n", run.Stdout);
        Assert.Contains("infeasible ready=0 waiting=1", run.Stdout);
        Assert.Contains("Warning: tasks need {CPU: 1, unobtainium: 1}, which no node of the cluster has", run.Stderr);
        ClusterAssertions.Eventually(() => _net[0].Pids().Count == 0, TimeSpan.FromSeconds(15), "the embedded cluster stopping after its driver exited");
    }

    [Fact]
    public async Task NestedTasksDoNotDeadlockASingleCpuNodeAndErrorsPropagateTwoLevels()
    {
        var run = await Cli.RunProgramAsync(_net[0], Driver, "nested");
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("nested 55", run.Stdout);
        // Driver -> Outer -> Middle -> Inner throws: the driver sees the chain, with the original type and message.
        Assert.Contains("nested-error RaySharp.RayTaskException | inner: True True", run.Stdout);
        Assert.Empty(_net[0].Pids());
    }

    [Fact]
    public async Task TaskOutputReachesTheDriverPrefixedWithItsWorkerNestedTasksIncluded()
    {
        var run = await Cli.RunProgramAsync(_net[0], Driver, "output");
        Assert.True(run.ExitCode == 0, run.ToString());
        var ip = _net[0].Ip.Replace(".", @"\.");
        Assert.Matches($@"\(Chatty pid=\d+, ip={ip}\) hello 0 from a task\n\(Chatty pid=\d+, ip={ip}\) hello 1 from a task\n", run.Stdout);
        Assert.Matches($@"\(Chatty pid=\d+, ip={ip}\) a warning from a task", run.Stderr);
        Assert.Contains("chatty returned 2", run.Stdout);
        // The second Chatty ran nested in Outer's task: its lines still reach the driver, under its own prefix.
        Assert.Contains("outer returned 2", run.Stdout);
        Assert.Equal(2, System.Text.RegularExpressions.Regex.Matches(run.Stdout, $@"\(Chatty pid=\d+, ip={ip}\) hello 0 from a task\n").Count);
        Assert.Equal(2, System.Text.RegularExpressions.Regex.Matches(run.Stderr, $@"\(Chatty pid=\d+, ip={ip}\) a warning from a task").Count);
    }

    [Fact]
    public async Task TaskOutputIsStreamedWhileTheTaskRuns()
    {
        var signal = Path.Combine(_net[0].TempDir, "release-" + Guid.NewGuid().ToString("N"));
        using var driver = Cli.StartDllBackground(Cli.ProgramDll(Driver), _net[0], "stream", "embedded", signal);
        // The task waits for the signal file; the test writes it only after the task's first line reached the driver.
        var seen = new List<string>();
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!seen.Any(l => l.Contains("waiting for")))
        {
            var line = await driver.StandardOutput.ReadLineAsync().WaitAsync(deadline - DateTime.UtcNow)
                ?? throw new InvalidOperationException("driver exited: " + string.Join("\n", seen) + await driver.StandardError.ReadToEndAsync());
            seen.Add(line);
        }
        Assert.Matches($@"^\(WaitForFile pid=\d+, ip={_net[0].Ip.Replace(".", @"\.")}\) waiting for ", seen[^1]);
        await File.WriteAllTextAsync(signal, "go");
        var rest = await driver.StandardOutput.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Contains(") released", rest);
        Assert.Contains("stream done 1", rest);
        Assert.True(driver.WaitForExit(TimeSpan.FromSeconds(30)));
        Assert.Equal(0, driver.ExitCode);
    }

    [Fact]
    public async Task HundredMebibyteArgumentsAndResultsArriveIntact()
    {
        var run = await Cli.RunProgramAsync(_net[0], Driver, "large");
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("large-arg True", run.Stdout);
        Assert.Contains("large-put-arg True", run.Stdout);
        Assert.Contains("large-result 13107200 True", run.Stdout);
    }

    [Fact]
    public async Task TenThousandTasksQueuedOnOneNodeAllComplete()
    {
        var run = await Cli.RunProgramAsync(_net[0], Driver, "many");
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains($"many 10000 sum {Enumerable.Range(0, 10_000).Sum(x => (long)x)}", run.Stdout);
        Assert.Empty(_net[0].Pids());
    }

    [Fact]
    public async Task TypedArgumentsAndResultsRoundTripOnAnEmbeddedCluster()
    {
        var run = await Cli.RunProgramAsync(_net[0], Driver, "types");
        Assert.True(run.ExitCode == 0, run.ToString());
        var lines = run.Stdout.Split('\n', StringSplitOptions.TrimEntries);
        Assert.Contains("int 42", lines);
        Assert.Contains("string ababab", lines);
        Assert.Contains("array 3,2,1", lines);
        Assert.Contains("record Point { X = 11, Y = 12, Label = p }", lines);
        Assert.Contains("nested a=3,b=0", lines);
        Assert.Contains("lambda 6", lines);
        Assert.Contains("async 81", lines);
        Assert.Contains("await 3", lines);
        Assert.Contains($"zero-arg {_net[0].Ip}", lines);
        Assert.Contains("method-group 42 Point { X = 1, Y = 1, Label = g }", lines);
        Assert.Contains("method-group-async 9", lines);
        Assert.Empty(_net[0].Pids());
    }

    [Fact]
    public async Task PutRefArgumentsAndWaitBehaveAsInRay()
    {
        var run = await Cli.RunProgramAsync(_net[0], Driver, "objects");
        Assert.True(run.ExitCode == 0, run.ToString());
        var lines = run.Stdout.Split('\n', StringSplitOptions.TrimEntries);
        Assert.Contains("put-get 41", lines);
        Assert.Contains("put-arg 42", lines);
        Assert.Contains("chained 13", lines);
        Assert.Contains("put-record Point { X = 4, Y = 5, Label = put }", lines);
        Assert.Contains("wait-1 ready=10 not-ready=1", lines);
        Assert.Contains("wait-timeout ready=1 not-ready=1", lines);
        Assert.Contains("wait-all ready=3000,10", lines);
        Assert.Contains("dependency-failed task failed on purpose with 1", lines);
        Assert.Contains("context True", lines);
        Assert.Contains("nested-refs 6", lines);
        Assert.Contains("nested-refs-forwarded 60", lines);
        Assert.Contains("returned-refs 10", lines);
        Assert.Contains("returned-large-ref 1000000", lines);
        Assert.Empty(_net[0].Pids());
    }

    [Fact]
    public async Task ErrorsNameTheProblemAndTheWorkerSurvivesATaskException()
    {
        var run = await Cli.RunProgramAsync(_net[0], Driver, "errors");
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains($"task-exception System.InvalidOperationException | task failed on purpose with 7 | {_net[0].Ip} | stack has Fail: True", run.Stdout);
        Assert.Contains("bad-argument argument 'f' of type System.Func`1[System.Int32] cannot be serialized for a remote task", run.Stdout);
        Assert.Contains("capturing-lambda", run.Stdout);
        Assert.Contains("captures variables", run.Stdout);
        Assert.Contains("was not ready within 0.001 s", run.Stdout);
        Assert.Contains("after-error 5", run.Stdout);
        Assert.Empty(_net[0].Pids());
    }

    [Fact]
    public async Task TasksRunWhereTheirCustomResourcesAndGpusAre()
    {
        var head = _net[0];
        // Inherited by every node's processes: the workers must clear it for tasks that asked for no GPU.
        foreach (var host in _net.Hosts) host.Environment["CUDA_VISIBLE_DEVICES"] = "5,6";
        await StartClusterAsync(["--num-cpus=1"], ["--num-cpus=1", "--resources", "{\"special\": 1}"], ["--num-cpus=1", "--num-gpus=1"]);

        var run = await Cli.RunProgramAsync(head, Driver, "placement", "auto");
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains($"special {_net[1].Ip}\n", run.Stdout);
        Assert.Contains($"gpu {_net[2].Ip}\n", run.Stdout);
        // The one GPU of that node, by index, to every task that asked for it; none to tasks that did not.
        Assert.Contains("cuda 0\n", run.Stdout);
        foreach (var host in _net.Hosts) Assert.Contains($"cuda-none {host.Ip}=[]\n", run.Stdout);
        foreach (var host in _net.Hosts) Assert.Contains($"actor-cuda-none {host.Ip}=[]\n", run.Stdout);

        foreach (var host in _net.Hosts.Reverse()) await ClusterAssertions.StopAndAssertCleanAsync(host);
    }
}
