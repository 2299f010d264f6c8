using System.Text.Json;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>The GCS's actor table as `raysharp list actors` shows it.</summary>
public sealed class ActorTableTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(1);

    public void Dispose() => _net.Dispose();

    private static async Task<Dictionary<string, string>> StatesAsync(TestHost host)
    {
        var listed = await Cli.RunAsync(host, "list", "actors", "--format", "json");
        Assert.True(listed.ExitCode == 0, listed.ToString());
        return JsonDocument.Parse(listed.Stdout).RootElement.EnumerateArray()
            .ToDictionary(a => a.GetProperty("name").GetString()!, a => a.GetProperty("state").GetString()!);
    }

    [Fact]
    public async Task OnlyTheNewestDeadActorsOfAJobStayListedAndLiveOnesAreUntouched()
    {
        var head = _net[0];
        head.Environment["RAYSHARP_max_dead_actors_per_job"] = "2";
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=2")).ExitCode);
        using var driver = new SignalledDriver(head, "dead-actors", "auto");
        await driver.WaitForAsync("ready", TimeSpan.FromSeconds(120));

        // Five killed, one alive: the two last killed are kept, the live one untouched.
        Assert.Equal(new Dictionary<string, string> { ["dead-3"] = "DEAD", ["dead-4"] = "DEAD", ["alive"] = "ALIVE" }, await StatesAsync(head));
        Assert.Contains("DEAD: 2", (await Cli.RunAsync(head, "list", "actors")).Stdout);

        // The driver exits and its live actor dies with the job: the oldest dead one makes room for it.
        driver.Signal("listed");
        Assert.Contains("alive 1\n", (await driver.Run).Stdout);
        await ClusterAssertions.EventuallyAsync(async () => (await StatesAsync(head)).GetValueOrDefault("alive") == "DEAD",
            TimeSpan.FromSeconds(30), "the driver's live actor to die with its job");
        Assert.Equal(new Dictionary<string, string> { ["dead-4"] = "DEAD", ["alive"] = "DEAD" }, await StatesAsync(head));
        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }
}
