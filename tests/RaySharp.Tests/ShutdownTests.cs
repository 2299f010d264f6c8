using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>A driver that shuts down with work in flight.</summary>
public sealed class ShutdownTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(1);

    public void Dispose() => _net.Dispose();

    [Fact]
    public async Task ShutdownFailsEveryPendingTaskAndActorCallInsteadOfLeavingThemWaiting()
    {
        var host = _net[0];
        var run = await ClusterAssertions.RunDriverAsync(host, "shutdown-pending", "embedded");
        Assert.Contains("settled True", run.Stdout);
        // 8 tasks and 3 calls, running or queued: each fails with the reason, none is left waiting or cancelled.
        var outcome = Assert.Single(run.Stdout.Split('\n'), l => l.StartsWith("outcome ", StringComparison.Ordinal));
        Assert.Equal("outcome 11 RayException", outcome.TrimEnd());
        Assert.Contains("with-reason 11", run.Stdout);
        // The embedded cluster went with the driver.
        Assert.Empty(host.Pids());
        Assert.Empty(ClusterAssertions.SharedMemoryFiles(host));
    }
}
