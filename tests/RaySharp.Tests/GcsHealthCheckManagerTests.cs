using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using RaySharp.Gcs;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Tests;

/// <summary>Failure detection on a fake clock: no sleeping, exact periods.</summary>
public sealed class GcsHealthCheckManagerTests
{
    private static readonly TimeSpan s_period = TimeSpan.FromSeconds(3);

    /// <summary>Moves the fake clock one period forward in small steps, so a wait armed a moment late still fires.</summary>
    private static async Task AdvancePeriod(FakeTimeProvider time, TimeSpan period)
    {
        for (var i = 0; i < 10; i++)
        {
            time.Advance(period / 10);
            await Task.Delay(2);
        }
    }

    private static async Task WaitUntil(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) Assert.Fail("the health checker did not reach the expected state");
            await Task.Delay(5);
        }
    }

    [Fact]
    public async Task ANodeIsDeclaredDeadAfterThresholdConsecutiveMissesAndNotBefore()
    {
        var time = new FakeTimeProvider();
        var options = new GcsServerOptions { HealthCheckPeriod = s_period, HealthCheckFailureThreshold = 5 };
        var checks = 0;
        string? deadReason = null;
        await using var manager = new GcsHealthCheckManager(options, time,
            (_, _) => { Interlocked.Increment(ref checks); return Task.FromException(new IOException("connection refused")); },
            (_, reason) => { deadReason = reason; return Task.CompletedTask; },
            NullLogger<GcsHealthCheckManager>.Instance);
        manager.AddNode(new NodeInfo { NodeId = "n1" });

        for (var i = 1; i <= 4; i++)
        {
            await AdvancePeriod(time, s_period);
            await WaitUntil(() => Volatile.Read(ref checks) == i);
        }
        Assert.Null(deadReason);
        await AdvancePeriod(time, s_period);
        await WaitUntil(() => deadReason is not null);
        Assert.Equal(5, checks);
        Assert.Contains("5 times in a row", deadReason);
        Assert.Contains("connection refused", deadReason);
        Assert.Empty(manager.WatchedNodes);
    }

    [Fact]
    public async Task AnAnswerResetsTheMissCount()
    {
        var time = new FakeTimeProvider();
        var options = new GcsServerOptions { HealthCheckPeriod = s_period, HealthCheckFailureThreshold = 3 };
        var checks = 0;
        var dead = false;
        await using var manager = new GcsHealthCheckManager(options, time,
            (_, _) =>
            {
                var n = Interlocked.Increment(ref checks);
                // Miss, miss, answer, miss, miss: never three in a row.
                return n % 3 == 0 ? Task.CompletedTask : Task.FromException(new IOException("timeout"));
            },
            (_, _) => { dead = true; return Task.CompletedTask; },
            NullLogger<GcsHealthCheckManager>.Instance);
        manager.AddNode(new NodeInfo { NodeId = "n1" });

        for (var i = 1; i <= 5; i++)
        {
            await AdvancePeriod(time, s_period);
            await WaitUntil(() => Volatile.Read(ref checks) == i);
        }
        Assert.False(dead);
        Assert.Single(manager.WatchedNodes);
    }

    [Fact]
    public async Task ACheckThatHangsCountsAsMissedAfterTheTimeout()
    {
        var time = new FakeTimeProvider();
        var options = new GcsServerOptions { HealthCheckPeriod = s_period, HealthCheckFailureThreshold = 1, HealthCheckTimeout = TimeSpan.FromSeconds(1) };
        var started = 0;
        string? reason = null;
        await using var manager = new GcsHealthCheckManager(options, time,
            async (_, ct) => { Interlocked.Increment(ref started); await Task.Delay(Timeout.Infinite, ct); },
            (_, r) => { reason = r; return Task.CompletedTask; },
            NullLogger<GcsHealthCheckManager>.Instance);
        manager.AddNode(new NodeInfo { NodeId = "n1" });

        await AdvancePeriod(time, s_period);
        await WaitUntil(() => Volatile.Read(ref started) == 1);
        Assert.Null(reason);
        await AdvancePeriod(time, TimeSpan.FromSeconds(1));
        await WaitUntil(() => reason is not null);
        Assert.Contains("no answer within 1000 ms", reason);
    }
}
