using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>A node serving an object dies in the middle of a transfer: the reader finishes from another copy.</summary>
public sealed class ObjectTransferFailoverTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(4);

    public void Dispose() => _net.Dispose();

    [Fact]
    public async Task AReadSurvivesItsSourceNodeDyingMidTransferWhenAnotherCopyExists()
    {
        var (head, primary, copy, reader) = (_net[0], _net[1], _net[2], _net[3]);
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=1")).ExitCode);
        // The copy's node serves slowly (an injected fault), so that it can be killed in the middle of serving.
        copy.Environment["RAYSHARP_testing_object_chunk_delay_ms"] = "400";
        foreach (var worker in new[] { primary, copy, reader })
        {
            var joined = await Cli.RunAsync(worker, "start", $"--address={head.Ip}:6379", "--num-cpus=1");
            Assert.True(joined.ExitCode == 0, joined.ToString());
        }

        using var driver = Cli.StartDllBackground(Cli.ProgramDll("RaySharp.TestDriver"), head, "store-failover", "auto", primary.Ip, copy.Ip, reader.Ip);
        var output = new System.Text.StringBuilder();
        var pulling = new TaskCompletionSource();
        driver.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (output) output.AppendLine(e.Data);
            if (e.Data == "pulling") pulling.TrySetResult();
        };
        driver.BeginOutputReadLine();
        var stderr = driver.StandardError.ReadToEndAsync();
        await pulling.Task.WaitAsync(TimeSpan.FromSeconds(120));
        // The reader pulls from the copy first (copies before the primary); 50 chunks at 400 ms, 4 at a time, take ~5 s.
        // Killed once it has served some (and so is in the middle of serving the rest).
        await ClusterAssertions.EventuallyAsync(async () =>
        {
            var memory = await Cli.RunAsync(head, "memory", "--format", "json");
            return memory.ExitCode == 0 && System.Text.Json.JsonDocument.Parse(memory.Stdout).RootElement.EnumerateArray()
                .Any(n => n.GetProperty("node_ip_address").GetString() == copy.Ip && n.GetProperty("served_bytes").GetInt64() > 0);
        }, TimeSpan.FromSeconds(30), "the copy's node to serve its first chunks to the reader");
        var killed = await Cli.RunAsync(copy, "stop", "--force");
        Assert.Equal(0, killed.ExitCode);

        Assert.True(driver.WaitForExit(TimeSpan.FromSeconds(90)), "the driver did not finish: " + output);
        driver.WaitForExit();
        var text = output.ToString();
        Assert.True(driver.ExitCode == 0, text + await stderr);
        Assert.Contains("copy True", text);
        Assert.Contains("failover True", text);
        var readerLog = string.Concat(ClusterAssertions.Sessions(reader).Select(s => File.ReadAllText(Path.Combine(s.Path, "logs", "raylet.out"))));
        Assert.Contains($"from {copy.Ip}:", readerLog);
        Assert.Contains("its chunks are asked of another holder", readerLog);

        foreach (var h in new[] { reader, primary, head }) await ClusterAssertions.StopAndAssertCleanAsync(h);
    }

    private const int SIGSTOP = 19;
    private const int SIGCONT = 18;

    [Fact]
    public async Task AReadSurvivesItsSourceRayletFreezingMidTransferWhenAnotherCopyExists()
    {
        var (head, primary, copy, reader) = (_net[0], _net[1], _net[2], _net[3]);
        await using var run = await FrozenHolderRun.StartAsync(head, primary, copy, reader, retrySignal: null);
        await run.WaitForCopyToServeAsync();
        // Frozen, not killed: its sockets stay open and its kernel keeps acknowledging what the reader sends, so only
        // the reader's chunk timeout (2 s here) can tell; it then asks the primary's node.
        run.Freeze(run.CopyRaylet);

        var text = await run.WaitForDriverAsync();
        Assert.Contains("copy True", text);
        Assert.Contains("failover True", text);
        var readerLog = RayletLog(reader);
        Assert.Contains($"from {copy.Ip}:", readerLog);
        Assert.Contains("sent no chunk", readerLog);

        // Stopping the node whose raylet is still frozen: SIGTERM cannot end it, the grace period's SIGKILL does.
        await ClusterAssertions.StopAndAssertCleanAsync(copy);
        run.Thawed(run.CopyRaylet);
        foreach (var h in new[] { reader, primary, head }) await ClusterAssertions.StopAndAssertCleanAsync(h);
    }

    [Fact]
    public async Task APullThatTimesOutOnEveryHolderLeavesNothingBehindSoALaterReadSucceeds()
    {
        var (head, primary, copy, reader) = (_net[0], _net[1], _net[2], _net[3]);
        var signal = Path.Combine(head.TempDir, "read-again");
        // The primary's node serves slowly too, so that it can be frozen once the reader has turned to it: at 2 s a
        // chunk, the rest of the object takes it well over the time the test needs to see it serving and freeze it
        // (at 1 s, a loaded machine once saw the pull finish first). The reader waits 5 s for a chunk, more than 2.
        primary.Environment["RAYSHARP_testing_object_chunk_delay_ms"] = "2000";
        await using var run = await FrozenHolderRun.StartAsync(head, primary, copy, reader, signal, chunkTimeoutMs: 5000);
        await run.WaitForCopyToServeAsync();
        var servedToCopy = await FrozenHolderRun.ServedBytesAsync(head, primary);
        Assert.True(servedToCopy > 0, $"the primary's node served the copy {servedToCopy} bytes");
        run.Freeze(run.CopyRaylet);
        // The reader gives up on the copy and asks the primary's node; frozen once it has served the reader some chunks,
        // every holder has timed out on a chunk (the primary's node last), so the pull fails.
        await ClusterAssertions.EventuallyAsync(async () => await FrozenHolderRun.ServedBytesAsync(head, primary) > servedToCopy,
            TimeSpan.FromSeconds(30), "the primary's node to serve chunks to the reader");
        run.Freeze(run.PrimaryRaylet);
        await run.WaitForLineAsync("first-read failed", TimeSpan.FromSeconds(60));

        // The primary's node answers again. The failed pull must have left no half-pulled object on the reader's node:
        // the next read found it there and waited for a seal that never came (it hung).
        Common.Posix.Kill(run.PrimaryRaylet, SIGCONT);
        run.Thawed(run.PrimaryRaylet);
        File.WriteAllText(signal, "");
        var text = await run.WaitForDriverAsync();
        Assert.Contains("failover True", text);
        // The first read failed as a pull that no holder could serve, the primary's node timing out last.
        Assert.Contains($"from any node holding it: {primary.Ip}:", text);
        Assert.Contains("sent no chunk", text);

        await ClusterAssertions.StopAndAssertCleanAsync(copy);
        run.Thawed(run.CopyRaylet);
        foreach (var h in new[] { reader, primary, head }) await ClusterAssertions.StopAndAssertCleanAsync(h);
    }

    private static string RayletLog(TestHost host) =>
        string.Concat(ClusterAssertions.Sessions(host).Select(s => File.ReadAllText(Path.Combine(s.Path, "logs", "raylet.out"))));

    /// <summary>
    /// The failover scenario with raylets frozen by SIGSTOP: every wait bounded, and whatever it froze killed (and
    /// continued) on dispose, so a failing run leaves no stopped process behind.
    /// </summary>
    private sealed class FrozenHolderRun : IAsyncDisposable
    {
        private readonly System.Diagnostics.Process _driver;
        private readonly System.Text.StringBuilder _output = new();
        private readonly TaskCompletionSource _ended = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly List<(string Prefix, TaskCompletionSource Seen)> _waits = [];
        private readonly Task<string> _stderr;
        private readonly HashSet<int> _frozen = [];
        private readonly TestHost _head;
        private readonly TestHost _copy;

        public int CopyRaylet { get; }
        public int PrimaryRaylet { get; }

        private FrozenHolderRun(System.Diagnostics.Process driver, TestHost head, TestHost copy, int copyRaylet, int primaryRaylet)
        {
            _driver = driver;
            _head = head;
            _copy = copy;
            CopyRaylet = copyRaylet;
            PrimaryRaylet = primaryRaylet;
            driver.OutputDataReceived += (_, e) =>
            {
                if (e.Data is null)
                {
                    _ended.TrySetResult();
                    return;
                }
                lock (_output)
                {
                    _output.AppendLine(e.Data);
                    foreach (var (prefix, seen) in _waits) if (e.Data.StartsWith(prefix, StringComparison.Ordinal)) seen.TrySetResult();
                }
            };
            driver.BeginOutputReadLine();
            _stderr = driver.StandardError.ReadToEndAsync();
        }

        public string Output
        {
            get { lock (_output) return _output.ToString(); }
        }

        public static async Task<FrozenHolderRun> StartAsync(TestHost head, TestHost primary, TestHost copy, TestHost reader, string? retrySignal, int chunkTimeoutMs = 2000)
        {
            // A frozen node misses its health checks: not declared dead (and the primary copy lost) while the test holds it.
            head.Environment[Gcs.GcsServerOptions.HealthCheckFailureThresholdEnv] = "20";
            Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=1")).ExitCode);
            // The copy's node serves slowly (an injected fault), so that it can be frozen in the middle of serving.
            copy.Environment["RAYSHARP_testing_object_chunk_delay_ms"] = "400";
            reader.Environment[Raylet.RayletOptions.ObjectChunkTimeoutEnv] = chunkTimeoutMs.ToString(System.Globalization.CultureInfo.InvariantCulture);
            foreach (var worker in new[] { primary, copy, reader })
            {
                var joined = await Cli.RunAsync(worker, "start", $"--address={head.Ip}:6379", "--num-cpus=1");
                Assert.True(joined.ExitCode == 0, joined.ToString());
            }
            var args = new List<string> { "store-failover", "auto", primary.Ip, copy.Ip, reader.Ip };
            if (retrySignal is not null) args.Add(retrySignal);
            var driver = Cli.StartDllBackground(Cli.ProgramDll("RaySharp.TestDriver"), head, [.. args]);
            return new FrozenHolderRun(driver, head, copy, RayletPid(copy), RayletPid(primary));
        }

        private static int RayletPid(TestHost host) =>
            ClusterAssertions.Sessions(host).Select(s => s.ReadPorts(Common.Components.Raylet)).Single(p => p is not null)!.Pid;

        public async Task WaitForLineAsync(string prefix, TimeSpan within)
        {
            var seen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            lock (_output)
            {
                if (_output.ToString().Split('\n').Any(l => l.StartsWith(prefix, StringComparison.Ordinal))) return;
                _waits.Add((prefix, seen));
            }
            if (await Task.WhenAny(seen.Task, _ended.Task, Task.Delay(within)) != seen.Task)
                Assert.Fail($"the driver did not print '{prefix}' within {within.TotalSeconds} s: {Output}{await StderrAsync()}");
        }

        /// <summary>Waits until the reader is pulling and the copy's node has served it some chunks (so is in the middle of serving the rest).</summary>
        public async Task WaitForCopyToServeAsync()
        {
            await WaitForLineAsync("pulling", TimeSpan.FromSeconds(120));
            // 50 chunks at 400 ms, 4 at a time, take ~5 s.
            await ClusterAssertions.EventuallyAsync(async () => await ServedBytesAsync(_head, _copy) > 0,
                TimeSpan.FromSeconds(30), "the copy's node to serve its first chunks to the reader");
        }

        /// <summary>Bytes of objects the node has served to other nodes, as `raysharp memory` reports them (-1: not known now).</summary>
        public static async Task<long> ServedBytesAsync(TestHost head, TestHost node)
        {
            var memory = await Cli.RunAsync(head, "memory", "--format", "json");
            if (memory.ExitCode != 0) return -1;
            return System.Text.Json.JsonDocument.Parse(memory.Stdout).RootElement.EnumerateArray()
                .Where(n => n.GetProperty("node_ip_address").GetString() == node.Ip)
                .Select(n => n.TryGetProperty("served_bytes", out var b) ? b.GetInt64() : -1).DefaultIfEmpty(-1).First();
        }

        public void Freeze(int pid)
        {
            _frozen.Add(pid);
            Assert.True(Common.Posix.Kill(pid, SIGSTOP), $"could not stop process {pid}");
        }

        /// <summary>The process runs again (continued, or killed by the test's `raysharp stop`): nothing to undo for it.</summary>
        public void Thawed(int pid) => _frozen.Remove(pid);

        /// <summary>Waits for the driver to exit and for its output to end; returns the output, having checked it exited 0.</summary>
        public async Task<string> WaitForDriverAsync()
        {
            var exited = _driver.WaitForExitAsync();
            if (await Task.WhenAny(exited, Task.Delay(TimeSpan.FromSeconds(90))) != exited)
                Assert.Fail("the driver did not finish within 90 s: " + Output);
            // Its last lines may still be on their way to the handler.
            await _ended.Task.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.True(_driver.ExitCode == 0, Output + await StderrAsync());
            return Output;
        }

        private async Task<string> StderrAsync()
        {
            try { return await _stderr.WaitAsync(TimeSpan.FromSeconds(5)); }
            catch (TimeoutException) { return "(stderr still open)"; }
        }

        public ValueTask DisposeAsync()
        {
            // Never leave a stopped process behind, whatever failed: killed (a stopped process takes SIGKILL too), then continued.
            foreach (var pid in _frozen)
            {
                Common.Posix.Kill(pid, Common.Posix.SIGKILL);
                Common.Posix.Kill(pid, SIGCONT);
            }
            if (!_driver.HasExited) _driver.Kill(entireProcessTree: true);
            _driver.Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
