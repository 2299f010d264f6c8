using RaySharp.Common;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary><c>raysharp start --block</c>: the node lives exactly as long as the command.</summary>
public sealed class BlockModeTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(1);

    public void Dispose() => _net.Dispose();

    [Fact]
    public async Task InterruptingABlockingStartStopsEverything()
    {
        var head = _net[0];
        using var cli = Cli.StartBackground(head, "start", "--head", "--num-cpus=1", "--block");
        await WaitUntilUpAsync(head);
        Assert.False(cli.HasExited);

        Posix.Kill(CliPid(cli), 2 /* SIGINT, as Ctrl-C */);
        if (!cli.WaitForExit(TimeSpan.FromSeconds(30)))
        {
            var left = string.Join(", ", head.Pids());
            cli.Kill(entireProcessTree: true);
            Assert.Fail($"the CLI did not exit after SIGINT; processes left: {left}\n{await cli.StandardOutput.ReadToEndAsync()}\n{await cli.StandardError.ReadToEndAsync()}");
        }
        ClusterAssertions.Eventually(() => head.Pids().Count == 0, TimeSpan.FromSeconds(10), "every process of the node exiting");
    }

    [Fact]
    public async Task KillingABlockingStartWithSigkillTakesItsProcessesDown()
    {
        var head = _net[0];
        using var cli = Cli.StartBackground(head, "start", "--head", "--num-cpus=1", "--block");
        await WaitUntilUpAsync(head);

        // No chance to clean up: the children notice their supervisor is gone through their stdin pipe.
        Posix.Kill(CliPid(cli), Posix.SIGKILL);
        ClusterAssertions.Eventually(() => head.Pids().Count == 0, TimeSpan.FromSeconds(20), "every process of the node exiting");
    }

    [Fact]
    public async Task ABlockingStartExitsWhenOneOfItsProcessesDies()
    {
        var head = _net[0];
        using var cli = Cli.StartBackground(head, "start", "--head", "--num-cpus=1", "--block");
        await WaitUntilUpAsync(head);
        var gcs = ClusterAssertions.Sessions(head).Single().RecordedProcesses().Single(r => r.Component == Components.GcsServer);

        Posix.Kill(gcs.Pid, Posix.SIGKILL);
        Assert.True(cli.WaitForExit(TimeSpan.FromSeconds(30)), "the CLI did not exit after its GCS died");
        Assert.Equal(1, cli.ExitCode);
        Assert.Contains("gcs_server", await cli.StandardOutput.ReadToEndAsync());
        ClusterAssertions.Eventually(() => head.Pids().Count == 0, TimeSpan.FromSeconds(10), "every process of the node exiting");
    }

    private static Task WaitUntilUpAsync(TestHost head) =>
        ClusterAssertions.EventuallyAsync(async () => File.Exists(SessionDirectory.CurrentClusterFile(head.TempDir))
            && (await ClusterAssertions.StatusAsync(head)).Count == 1, TimeSpan.FromSeconds(30), "the blocking head coming up");

    [Fact]
    public async Task StopForceKillsEverythingAtOnce()
    {
        var head = _net[0];
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=2")).ExitCode);
        ClusterAssertions.Eventually(() => head.Pids().Count == 4, TimeSpan.FromSeconds(20), "GCS, raylet and two workers running");
        var stop = await Cli.RunAsync(head, "stop", "--force");
        Assert.Equal(0, stop.ExitCode);
        Assert.Contains("Stopped all 4 RaySharp processes", stop.Stdout);
        Assert.Empty(head.Pids());
        Assert.Empty(ClusterAssertions.Sessions(head).SelectMany(s => s.RecordedProcesses()));
    }

    /// <summary>`ip netns exec` execs the CLI in place, so the started process is the CLI itself.</summary>
    private static int CliPid(System.Diagnostics.Process p) => p.Id;
}
