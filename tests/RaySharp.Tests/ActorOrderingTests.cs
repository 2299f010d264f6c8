using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>Calls from one caller run in the order they were sent, across a restart of the actor too.</summary>
public sealed class ActorOrderingTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(1);

    public void Dispose() => _net.Dispose();

    [Fact]
    public async Task CallsFromOneCallerRunInSubmissionOrderAfterTheActorRestarts()
    {
        var run = await ClusterAssertions.RunDriverAsync(_net[0], "restart-order");
        Assert.Contains("restarted True restarts 1\n", run.Stdout);
        Assert.Contains("answers 300 wrong 0\n", run.Stdout);
        Assert.Contains("out-of-order 0\n", run.Stdout);
        // The restarted actor began with the call that killed its predecessor, or with one just before it whose answer
        // died with the process (retried, as MaxTaskRetries allows), and ran the rest in order from there.
        var starts = System.Text.RegularExpressions.Regex.Match(run.Stdout, @"incarnation-starts 0,(\d+)\n");
        Assert.True(starts.Success, run.Stdout);
        Assert.InRange(int.Parse(starts.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), 1, 100);
        ClusterAssertions.Eventually(() => _net[0].Pids().Count == 0, TimeSpan.FromSeconds(15), "the embedded cluster stopping with the driver");
    }
}
