using System.Text.Json;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>
/// Large values through each node's shared-memory store: read in place on the node, pulled once per node across the
/// network, spilled to disk when the store is too small, and freed when nothing references them.
/// </summary>
public sealed class ObjectStoreTests : IDisposable
{
    private const string Driver = "RaySharp.TestDriver";
    private readonly TestNetwork _net = TestNetwork.Create(3);

    public void Dispose() => _net.Dispose();

    [Fact]
    public async Task LargeValuesGoThroughSharedMemoryAreReadInPlaceAndFreedWhenNoLongerReferenced()
    {
        var host = _net[0];
        var run = await ClusterAssertions.RunDriverAsync(host, "store");
        Assert.Contains("shm-grew True\n", run.Stdout);
        Assert.Contains("put-get 26214400 True\n", run.Stdout);
        Assert.Contains("zero-copy True True\n", run.Stdout);
        Assert.Contains("task-arg True\n", run.Stdout);
        Assert.Contains("task-zero-copy True\n", run.Stdout);
        Assert.Contains("large-value-arg True\n", run.Stdout);
        Assert.Contains("large-result 13107200 True\n", run.Stdout);
        // Dropped refs free the objects on the node while the driver still runs (the worker's zero-copy view included).
        Assert.Contains("freed True\n", run.Stdout);
        ClusterAssertions.Eventually(() => host.Pids().Count == 0 && ClusterAssertions.SharedMemoryFiles(host).Count == 0,
            TimeSpan.FromSeconds(15), "the embedded cluster stopping with the driver and removing its shared memory");
    }

    [Fact]
    public async Task AnObjectIsPulledOncePerNodeThatReadsItAndRaysharpMemoryShowsThePulls()
    {
        var (head, w1, w2) = (_net[0], _net[1], _net[2]);
        // The head serves chunks a little slowly (an injected delay), so the two nodes' pulls overlap.
        head.Environment["RAYSHARP_testing_object_chunk_delay_ms"] = "40";
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=2")).ExitCode);
        head.Environment.Remove("RAYSHARP_testing_object_chunk_delay_ms");
        foreach (var worker in new[] { w1, w2 })
        {
            var joined = await Cli.RunAsync(worker, "start", $"--address={head.Ip}:6379", "--num-cpus=2");
            Assert.True(joined.ExitCode == 0, joined.ToString());
        }

        var run = await ClusterAssertions.RunDriverAsync(head, "store-nodes", "auto");
        foreach (var worker in new[] { w1, w2 })
        {
            Assert.Equal(3, run.Stdout.Split('\n').Count(l => l == $"remote-hash {worker.Ip} True"));
        }
        Assert.Contains("remote-result True\n", run.Stdout);
        Assert.Contains("fan-out 50 True nodes=3\n", run.Stdout);

        var memory = await Cli.RunAsync(head, "memory", "--format", "json");
        Assert.True(memory.ExitCode == 0, memory.ToString());
        var nodes = JsonDocument.Parse(memory.Stdout).RootElement.EnumerateArray()
            .ToDictionary(n => n.GetProperty("node_ip_address").GetString()!, n => n);
        // The 200 MiB object: one transfer to each worker node for its 4 readers (3 pinned tasks and the spread ones).
        Assert.Equal(1, nodes[w1.Ip].GetProperty("num_pulls").GetInt32());
        Assert.Equal(1, nodes[w2.Ip].GetProperty("num_pulls").GetInt32());
        Assert.InRange(nodes[w2.Ip].GetProperty("pulled_bytes").GetInt64(), 200L << 20, (200L << 20) + 1_000);
        // The 100 MiB result made on a worker node, read by the driver on the head.
        Assert.Equal(1, nodes[head.Ip].GetProperty("num_pulls").GetInt32());
        // Broadcast: the two nodes pulling the object together took part of it from each other, not all from the head.
        var servedByHead = nodes[head.Ip].GetProperty("served_bytes").GetInt64();
        var servedByPeers = nodes[w1.Ip].GetProperty("served_bytes").GetInt64() + nodes[w2.Ip].GetProperty("served_bytes").GetInt64();
        Assert.True(servedByHead < 2 * (200L << 20), $"the head served {servedByHead} bytes: both copies came from it");
        Assert.True(servedByPeers > 100L << 20, $"the worker nodes served {servedByPeers} bytes (the 100 MiB result and chunks of the broadcast)");
        var text = await Cli.RunAsync(head, "memory");
        Assert.Contains("Largest objects per node", text.Stdout);
        foreach (var h in _net.Hosts) Assert.Contains(h.Ip, text.Stdout);

        foreach (var h in new[] { w2, w1, head }) await ClusterAssertions.StopAndAssertCleanAsync(h);
    }

    [Fact]
    public async Task ObjectsOfADriverThatCrashesAreFreedOnItsNode()
    {
        var head = _net[0];
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=1")).ExitCode);
        var signal = Path.Combine(head.TempDir, "crash-now");
        using var driver = Cli.StartDllBackground(Cli.ProgramDll(Driver), head, "store-crash", "auto", signal);
        var stored = await driver.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(120));
        Assert.Equal("stored True", stored);
        var before = JsonDocument.Parse((await Cli.RunAsync(head, "memory", "--format", "json")).Stdout).RootElement.EnumerateArray().Single();
        Assert.Equal(1, before.GetProperty("num_objects").GetInt32());
        Assert.True(before.GetProperty("used_bytes").GetInt64() >= 200L << 20);
        await File.WriteAllTextAsync(signal, "now");
        Assert.True(driver.WaitForExit(TimeSpan.FromSeconds(30)), "the driver did not crash");
        Assert.NotEqual(0, driver.ExitCode);
        // The GCS sees the driver's connection close and ends its job; the raylet frees the job's objects.
        await ClusterAssertions.EventuallyAsync(async () =>
        {
            var memory = await Cli.RunAsync(head, "memory", "--format", "json");
            var node = JsonDocument.Parse(memory.Stdout).RootElement.EnumerateArray().Single();
            return node.GetProperty("num_objects").GetInt32() == 0 && node.GetProperty("used_bytes").GetInt64() == 0;
        }, TimeSpan.FromSeconds(20), "the crashed driver's 200 MiB object freed");
        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }

    [Fact]
    public async Task AStoreSmallerThanItsLiveObjectsSpillsThemToDiskAndReadsEveryOneBackIntact()
    {
        var head = _net[0];
        var started = await Cli.RunAsync(head, "start", "--head", "--num-cpus=2", "--object-store-memory=268435456");
        Assert.True(started.ExitCode == 0, started.ToString());

        var run = await ClusterAssertions.RunDriverAsync(head, "store-spill", "auto");
        Assert.Contains("spill-roundtrip 10/10\n", run.Stdout);
        Assert.Contains("spill-task-reads 10/10\n", run.Stdout);
        Assert.Matches(@"too-large object \w+ needs 305\.2 MiB but the object store \(256 MiB\)", run.Stdout);
        Assert.Contains("--object-store-memory", run.Stdout);
        Assert.Contains("after-full 10/10\n", run.Stdout);

        var session = ClusterAssertions.Sessions(head).Single();
        var raylet = await File.ReadAllTextAsync(Path.Combine(session.Path, "logs", "raylet.out"));
        Assert.Contains("Spilled object", raylet);
        Assert.Contains("Restored object", raylet);
        // The job is over: its objects are freed, spilled copies included.
        ClusterAssertions.Eventually(() => !Directory.Exists(Path.Combine(session.Path, "spill"))
            || !Directory.EnumerateFiles(Path.Combine(session.Path, "spill"), "*", SearchOption.AllDirectories).Any(),
            TimeSpan.FromSeconds(15), "spill files removed once the job's objects are freed");

        var badFlag = await Cli.RunAsync(head, "start", "--head", "--port=6380", "--object-store-memory=lots");
        Assert.NotEqual(0, badFlag.ExitCode);
        Assert.Contains("--object-store-memory expects a number of bytes, got 'lots'", badFlag.Stderr);

        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }
}
