using System.Text.RegularExpressions;
using RaySharp.Common;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>Objects lost with their node are made again from their lineage; tasks that cannot be retried say the node died.</summary>
public sealed class LineageTests(Xunit.Abstractions.ITestOutputHelper output) : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(3);

    public void Dispose() => _net.Dispose();

    [Fact]
    public async Task AChainOfThreeTasksIsRebuiltAfterTheNodeHoldingAllItsResultsDied()
    {
        var (head, victim, survivor) = (_net[0], _net[1], _net[2]);
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=1")).ExitCode);
        Assert.Equal(0, (await Cli.RunAsync(victim, "start", $"--address={head.Ip}:6379", "--num-cpus=2")).ExitCode);
        Assert.Equal(0, (await Cli.RunAsync(survivor, "start", $"--address={head.Ip}:6379", "--num-cpus=1")).ExitCode);

        using var driver = new SignalledDriver(head, "lineage", "auto", victim.Ip);
        await driver.WaitForAsync("computed", TimeSpan.FromSeconds(90));

        var raylet = ClusterAssertions.Sessions(victim).Single().ReadPorts(Components.Raylet)!.Pid;
        Posix.Kill(raylet, Posix.SIGKILL);
        driver.Signal("killed");

        var run = await driver.Run;
        output.WriteLine(run.Stdout);
        Assert.Contains("chain-ready 1\n", run.Stdout);
        Assert.Contains("chain length 300000 first 2 last 300001\n", run.Stdout);
        // Each task ran twice: once to make its result, once to make it again. (Where the second run happens depends on
        // timing: a worker of the dead raylet can still take a task in the instant before it exits.)
        Assert.Equal(2, Regex.Matches(run.Stdout, @"ran Seed on ").Count);
        Assert.Equal(4, Regex.Matches(run.Stdout, @"ran AddOne on ").Count);
        Assert.Matches(@"put-there ObjectLostException: .* It cannot be rebuilt: it was made by Ray.Put", run.Stdout);
        // The driver is told of the node's death.
        Assert.Matches($@"RaySharp: node {Regex.Escape(victim.Ip)} \(\w+\) died: ", run.Stderr);
        Assert.Matches(@"doomed NodeDiedException attempts=1 The task's node died before it answered: task SleepThenNodeIp \(\w+\) lost its node", run.Stdout);

        await ClusterAssertions.StopAndAssertCleanAsync(survivor);
        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }
}
