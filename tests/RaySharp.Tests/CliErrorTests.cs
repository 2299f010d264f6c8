using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>Bad input fails with an error that names the problem and the fix, and starts nothing.</summary>
public sealed class CliErrorTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(2);

    public void Dispose() => _net.Dispose();

    [Fact]
    public async Task UnreachableAddressFailsWithinTenSecondsNamingTheAddressAndWhatToCheck()
    {
        // Nobody has .99 on the test network: connection attempts get no answer at all.
        var nowhere = $"{_net.Subnet}.99:6379";
        var result = await Cli.RunAsync(_net[1], "start", $"--address={nowhere}");
        Assert.NotEqual(0, result.ExitCode);
        Assert.True(result.Elapsed < TimeSpan.FromSeconds(10), $"took {result.Elapsed.TotalSeconds:0.0} s");
        Assert.Contains(nowhere, result.Stderr);
        Assert.Contains("firewall", result.Stderr);
        Assert.Contains("raysharp start --head", result.Stderr);
        Assert.Empty(_net[1].Pids());

        // A reachable host with nothing on the port: refused, same clear message.
        var refused = await Cli.RunAsync(_net[1], "start", $"--address={_net[0].Ip}:6379");
        Assert.NotEqual(0, refused.ExitCode);
        Assert.Contains($"{_net[0].Ip}:6379", refused.Stderr);
        Assert.Contains("refused", refused.Stderr, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task TheJoinTimeoutVariableGivesAJoiningNodeLongerToReachTheHead()
    {
        // What the launcher gives its workers (120 s): many nodes starting at once on a loaded machine need more than 8 s.
        var nowhere = $"{_net.Subnet}.99:6379";
        var env = new Dictionary<string, string>(_net[1].Environment, StringComparer.Ordinal) { ["RAYSHARP_JOIN_TIMEOUT_S"] = "12" };
        var result = await Cli.RunDllAsync(Cli.CliDll, _net[1].Namespace, _net[1].TempDir, env, TimeSpan.FromSeconds(60), "start", $"--address={nowhere}");
        Assert.NotEqual(0, result.ExitCode);
        Assert.True(result.Elapsed > TimeSpan.FromSeconds(11), $"took {result.Elapsed.TotalSeconds:0.0} s");
        Assert.Contains("within 12 s", result.Stderr);
        Assert.Empty(_net[1].Pids());
    }

    [Theory]
    [InlineData("{\"accelerator\": 2", "not valid JSON")]
    [InlineData("[1, 2]", "must be a JSON object")]
    [InlineData("{\"accelerator\": \"two\"}", "must be a number")]
    [InlineData("{\"accelerator\": -1}", "must not be negative")]
    [InlineData("{\"CPU\": 4}", "use --num-cpus instead")]
    public async Task MalformedResourcesJsonIsRejected(string json, string expected)
    {
        var result = await Cli.RunAsync(_net[0], "start", "--head", "--resources", json);
        Assert.Equal(1, result.ExitCode);
        Assert.Contains(expected, result.Stderr);
        Assert.Contains("--resources", result.Stderr);
        Assert.Empty(_net[0].Pids());
    }

    [Theory]
    [InlineData("--num-cpus=-1", "--num-cpus must be zero or more, got -1")]
    [InlineData("--num-cpus=two", "--num-cpus expects a whole number, got 'two'")]
    [InlineData("--num-gpus=-2", "--num-gpus must be zero or more")]
    [InlineData("--port=70000", "--port must be between 1 and 65535")]
    [InlineData("--node-ip-address=not-an-ip", "is not an IP address")]
    [InlineData("--no-such-flag", "--no-such-flag")]
    public async Task BadFlagsAreRejected(string flag, string expected)
    {
        var result = await Cli.RunAsync(_net[0], "start", "--head", flag);
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains(expected, result.Stderr);
        Assert.Empty(_net[0].Pids());
    }

    [Fact]
    public async Task StartNeedsHeadOrAddressButNotBoth()
    {
        var neither = await Cli.RunAsync(_net[0], "start");
        Assert.Equal(1, neither.ExitCode);
        Assert.Contains("raysharp start --head", neither.Stderr);
        var both = await Cli.RunAsync(_net[0], "start", "--head", "--address=10.0.0.1:6379");
        Assert.Equal(1, both.ExitCode);
        Assert.Contains("cannot be combined", both.Stderr);
    }

    [Fact]
    public async Task SecondHeadOnTheSamePortIsRefusedAndTheFirstKeepsRunning()
    {
        var head = _net[0];
        var first = await Cli.RunAsync(head, "start", "--head", "--port=6390", "--num-cpus=1");
        Assert.True(first.ExitCode == 0, first.ToString());
        var pidsBefore = head.Pids();

        var second = await Cli.RunAsync(head, "start", "--head", "--port=6390", "--num-cpus=1");
        Assert.Equal(1, second.ExitCode);
        Assert.Contains("already running", second.Stderr);
        Assert.Contains("raysharp stop", second.Stderr);
        Assert.Contains("--port", second.Stderr);
        Assert.Equal(pidsBefore.Order(), head.Pids().Order());
        Assert.Single(await ClusterAssertions.StatusAsync(head));

        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }

    [Fact]
    public async Task PortTakenBySomethingElseFallsBackToAFreePortAndSaysSo()
    {
        var head = _net[0];
        // Another RaySharp root on the same host holds 6379: to this one it is just a port in use.
        var other = new TestHost("other", head.Namespace, head.Ip, Path.Combine(head.TempDir, "..", "other-root"));
        var blocker = await Cli.RunAsync(other, "start", "--head", "--num-cpus=0");
        Assert.True(blocker.ExitCode == 0, blocker.ToString());

        var result = await Cli.RunAsync(head, "start", "--head", "--num-cpus=1");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("Port 6379 is already in use", result.Stdout);
        var match = System.Text.RegularExpressions.Regex.Match(result.Stdout, @"raysharp start --address='[\d.]+:(\d+)'");
        Assert.True(match.Success, result.Stdout);
        Assert.NotEqual("6379", match.Groups[1].Value);
        Assert.Single(await ClusterAssertions.StatusAsync(head));
        Assert.Single(await ClusterAssertions.StatusAsync(other));

        // Each root's stop touches its own processes only.
        var otherPids = head.Pids().Where(pid => Common.Posix.ReadCommandLine(pid)?.Contains("other-root") == true).ToList();
        Assert.NotEmpty(otherPids);
        Assert.Equal(0, (await Cli.RunAsync(head, "stop")).ExitCode);
        Assert.Equal(otherPids.Order(), head.Pids().Order());
        Assert.Equal(0, (await Cli.RunAsync(other, "stop")).ExitCode);
        Assert.Empty(head.Pids());
    }

    [Fact]
    public async Task StopWithNothingRunningSaysSoAndSucceeds()
    {
        var result = await Cli.RunAsync(_net[0], "stop");
        Assert.Equal(0, result.ExitCode);
        Assert.Contains("Did not find any active RaySharp processes", result.Stdout);
    }

    [Fact]
    public async Task StatusWithoutAClusterExplainsHowToStartOne()
    {
        var result = await Cli.RunAsync(_net[0], "status");
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("No RaySharp cluster found", result.Stderr);
        Assert.Contains("raysharp start --head", result.Stderr);
    }
}
