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
        // The restarted actor ran the call that killed its predecessor first, then the rest in order.
        Assert.Contains("incarnation-starts 0,100\n", run.Stdout);
        ClusterAssertions.Eventually(() => _net[0].Pids().Count == 0, TimeSpan.FromSeconds(15), "the embedded cluster stopping with the driver");
    }
}
