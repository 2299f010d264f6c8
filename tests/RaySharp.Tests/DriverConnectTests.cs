using RaySharp.Common;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>
/// A user's program (examples/ClusterInfo) connecting with <c>Ray.Init</c>: to an embedded cluster it starts and stops,
/// to the cluster started by the CLI ("auto"), or to a head by address from another host.
/// </summary>
public sealed class DriverConnectTests : IDisposable
{
    private const string Example = "ClusterInfo";
    private readonly TestNetwork _net = TestNetwork.Create(2);

    public void Dispose() => _net.Dispose();

    [Fact]
    public async Task InitWithoutAClusterStartsAnEmbeddedOneAndStopsItOnExit()
    {
        var host = _net[0];
        var run = await Cli.RunProgramAsync(host, Example);
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains($"this node's IP is {host.Ip}", run.Stdout);
        var cpus = Environment.ProcessorCount;
        Assert.Matches($@"node \w+ {host.Ip.Replace(".", @"\.")} ALIVE head CPU={cpus}", run.Stdout);
        Assert.Contains($"cluster CPU={cpus} available CPU={cpus}", run.Stdout);
        // Nothing of the embedded cluster outlives the driver, and it left no pointer for `raysharp status`.
        Assert.Empty(host.Pids());
        Assert.False(File.Exists(SessionDirectory.CurrentClusterFile(host.TempDir)));
        Assert.Empty(ClusterAssertions.SharedMemoryFiles(host));
    }

    [Fact]
    public async Task AKilledDriverTakesItsEmbeddedClusterDown()
    {
        var host = _net[0];
        using var driver = Cli.StartDllBackground(Cli.ProgramDll(Example), host, "--hold");
        var line = "";
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!line.Contains("HOLDING") && DateTime.UtcNow < deadline) line = await driver.StandardOutput.ReadLineAsync() ?? throw new InvalidOperationException("driver exited: " + await driver.StandardError.ReadToEndAsync());
        // Driver, GCS, raylet and one worker per CPU.
        ClusterAssertions.Eventually(() => host.Pids().Count == 3 + Environment.ProcessorCount, TimeSpan.FromSeconds(20), "the embedded cluster's workers starting");

        Posix.Kill(driver.Id, Posix.SIGKILL);
        ClusterAssertions.Eventually(() => host.Pids().Count == 0, TimeSpan.FromSeconds(20), "the embedded cluster stopping after its driver died");
    }

    [Fact]
    public async Task AutoJoinsTheClusterStartedByTheCliAndLeavesItRunning()
    {
        var head = _net[0];
        var worker = _net[1];
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=1")).ExitCode);
        Assert.Equal(0, (await Cli.RunAsync(worker, "start", $"--address={head.Ip}:6379", "--num-cpus=2", "--resources", "{\"ssd\": 1}")).ExitCode);
        var pidsBefore = head.Pids().Order().ToList();

        var auto = await Cli.RunProgramAsync(head, Example, "auto");
        Assert.True(auto.ExitCode == 0, auto.ToString());
        Assert.Contains($"Connected to the GCS at {head.Ip}:6379 as job 00000001", auto.Stdout);
        Assert.Contains("cluster CPU=3", auto.Stdout);
        Assert.Matches($@"{worker.Ip.Replace(".", @"\.")} ALIVE CPU=2, ssd=1", auto.Stdout);

        // Init() with no address also finds the local cluster instead of starting its own.
        var plain = await Cli.RunProgramAsync(head, Example);
        Assert.Contains($"Connected to the GCS at {head.Ip}:6379 as job 00000002", plain.Stdout);

        // From another host, by address.
        var remote = await Cli.RunProgramAsync(worker, Example, $"{head.Ip}:6379");
        Assert.True(remote.ExitCode == 0, remote.ToString());
        Assert.Contains($"this node's IP is {worker.Ip}", remote.Stdout);
        Assert.Contains("job 00000003", remote.Stdout);

        // The drivers came and went; the cluster is untouched.
        Assert.Equal(pidsBefore, head.Pids().Order().ToList());
        Assert.Equal(2, (await ClusterAssertions.StatusAsync(head)).Count(n => n.State == "ALIVE"));
        await ClusterAssertions.StopAndAssertCleanAsync(worker);
        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }

    [Fact]
    public async Task AutoWithoutAClusterAndAWrongAddressFailClearly()
    {
        var auto = await Cli.RunProgramAsync(_net[0], Example, "auto");
        Assert.Equal(1, auto.ExitCode);
        Assert.Contains("found no RaySharp cluster", auto.Stderr);
        Assert.Contains("raysharp start --head", auto.Stderr);

        var wrong = await Cli.RunProgramAsync(_net[1], Example, $"{_net[0].Ip}:6379");
        Assert.Equal(1, wrong.ExitCode);
        Assert.Contains($"{_net[0].Ip}:6379", wrong.Stderr);
        Assert.Contains("firewall", wrong.Stderr);

        var malformed = await Cli.RunProgramAsync(_net[0], Example, "head:notaport");
        Assert.Equal(1, malformed.ExitCode);
        Assert.Contains("not a port number", malformed.Stderr);
        Assert.Empty(_net[0].Pids());
        Assert.Empty(_net[1].Pids());
    }
}
