using System.Text.Json;
using RaySharp.Common;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>How the GCS tells a driver whose connection dropped from one that is gone.</summary>
public sealed class DriverDisconnectTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(1);

    public void Dispose() => _net.Dispose();

    private static async Task<JsonElement> ActorAsync(TestHost host, string name)
    {
        var listed = await Cli.RunAsync(host, "list", "actors", "--format", "json");
        Assert.True(listed.ExitCode == 0, listed.ToString());
        return JsonDocument.Parse(listed.Stdout).RootElement.EnumerateArray().Single(a => a.GetProperty("name").GetString() == name).Clone();
    }

    [Fact]
    public async Task ADriverWhoseConnectionDropsRegistersAgainAndKeepsItsActorsWhileAKilledDriverEndsItsJob()
    {
        var head = _net[0];
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=2")).ExitCode);
        var session = ClusterAssertions.Sessions(head).Single();
        var gcsLog = () => File.ReadAllText(session.LogFile(Components.GcsServer));
        using var driver = new SignalledDriver(head, "driver-drop", "auto");
        await driver.WaitForAsync("dropped", TimeSpan.FromSeconds(60));

        // The driver registered again over a new connection (before or after the GCS read the old one's end), and
        // the GCS kept the job.
        await ClusterAssertions.EventuallyAsync(() => Task.FromResult(gcsLog().Contains("registered again over a new connection; the job goes on")),
            TimeSpan.FromSeconds(60), "the GCS to keep the job of the driver that registered again");
        Assert.DoesNotContain("ending the job", gcsLog());
        var kept = await ActorAsync(head, "kept");
        Assert.Equal("ALIVE", kept.GetProperty("state").GetString());
        driver.Signal("kept");
        await driver.WaitForAsync("answered", TimeSpan.FromSeconds(60));

        // Killed, the driver only drops its connection too: its job ends after the grace period, and its actor with
        // it, the actor's worker stopped and its CPU free again.
        var workerPid = kept.GetProperty("pid").GetInt32();
        var driverPid = head.Pids().Single(p => File.ReadAllText($"/proc/{p}/cmdline").Contains("RaySharp.TestDriver", StringComparison.Ordinal));
        Assert.True(Posix.Kill(driverPid, Posix.SIGKILL));
        await Assert.ThrowsAnyAsync<Exception>(() => driver.Run);
        await ClusterAssertions.EventuallyAsync(async () => (await ActorAsync(head, "kept")).GetProperty("state").GetString() == "DEAD",
            TimeSpan.FromSeconds(60), "the killed driver's actor to die with its job");
        Assert.Contains("its owner, the driver of job", (await ActorAsync(head, "kept")).GetProperty("death_cause").GetString());
        Assert.Matches(@"The driver of job \w+ did not register again within 5 s of its connection closing; ending the job", gcsLog());
        ClusterAssertions.Eventually(() => !Posix.IsAlive(workerPid), TimeSpan.FromSeconds(30), "the actor's worker to stop");
        await ClusterAssertions.EventuallyAsync(async () => (await ClusterAssertions.StatusAsync(head)).Single().Available.GetValueOrDefault("CPU") == 2,
            TimeSpan.FromSeconds(30), "the actor's CPU to be free again");
        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }
}
