using System.Diagnostics;
using System.Text.Json;
using RaySharp.Common;

namespace RaySharp.Tests.Infrastructure;

/// <summary>One node as <c>raysharp status --format json</c> reports it.</summary>
internal sealed record StatusNode(string NodeId, string State, string Ip, bool IsHead, int Port, Dictionary<string, double> Total, Dictionary<string, double> Available, string DeathReason);

internal static class ClusterAssertions
{
    public static async Task<IReadOnlyList<StatusNode>> StatusAsync(TestHost host)
    {
        var result = await Cli.RunAsync(host, "status", "--format", "json");
        Assert.True(result.ExitCode == 0, "raysharp status failed: " + result);
        using var doc = JsonDocument.Parse(result.Stdout);
        return doc.RootElement.GetProperty("nodes").EnumerateArray().Select(n => new StatusNode(
            n.GetProperty("node_id").GetString()!,
            n.GetProperty("state").GetString()!,
            n.GetProperty("node_ip_address").GetString()!,
            n.GetProperty("is_head_node").GetBoolean(),
            n.GetProperty("node_manager_port").GetInt32(),
            n.GetProperty("resources_total").Deserialize<Dictionary<string, double>>()!,
            n.GetProperty("resources_available").Deserialize<Dictionary<string, double>>()!,
            n.GetProperty("death_reason").GetString() ?? "")).ToList();
    }

    /// <summary>Polls until <paramref name="condition"/> holds; fails with <paramref name="what"/> when time runs out.</summary>
    public static async Task EventuallyAsync(Func<Task<bool>> condition, TimeSpan within, string what)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            if (await condition()) return;
            if (sw.Elapsed > within) Assert.Fail($"{what} did not happen within {within.TotalSeconds} s");
            await Task.Delay(200);
        }
    }

    public static void Eventually(Func<bool> condition, TimeSpan within, string what) =>
        EventuallyAsync(() => Task.FromResult(condition()), within, what).GetAwaiter().GetResult();

    /// <summary>
    /// Waits until every alive node's raylet has every other alive node in its view (the one its spillback decisions
    /// choose from), instead of sleeping through a view refresh.
    /// </summary>
    public static async Task WaitForSpillbackViewsAsync(TestHost head, int nodes)
    {
        using var channels = new Rpc.RpcChannelPool(Cli.MemberOf($"{head.Ip}:6379"));
        var missing = "";
        var deadline = Stopwatch.StartNew();
        while (!await AllSeeAllAsync())
        {
            if (deadline.Elapsed > TimeSpan.FromSeconds(30)) Assert.Fail($"the raylets' views did not cover the cluster within 30 s: {missing}");
            await Task.Delay(200);
        }

        async Task<bool> AllSeeAllAsync()
        {
            var alive = (await StatusAsync(head)).Where(n => n.State == "ALIVE").ToList();
            if (alive.Count != nodes)
            {
                missing = $"{alive.Count} of {nodes} nodes alive";
                return false;
            }
            foreach (var node in alive)
            {
                var raylet = new Rpc.Protocol.NodeManagerService.NodeManagerServiceClient(channels.Get(node.Ip, node.Port));
                var known = (await raylet.GetNodeStatsAsync(new Rpc.Protocol.GetNodeStatsRequest())).RemoteNodeIds.ToHashSet();
                var unseen = alive.Where(n => n.NodeId != node.NodeId && !known.Contains(n.NodeId)).Select(n => n.Ip).ToList();
                if (unseen.Count > 0)
                {
                    missing = $"the raylet of {node.Ip} does not see {string.Join(", ", unseen)}";
                    return false;
                }
            }
            return true;
        }
    }

    /// <summary>The session directories a host's node processes wrote.</summary>
    public static IReadOnlyList<SessionDirectory> Sessions(TestHost host) => SessionDirectory.EnumerateAll(host.TempDir).ToList();

    /// <summary>Runs the test driver (RaySharp.TestDriver, one scenario per call) on a host and checks that it succeeded.</summary>
    public static async Task<CliResult> RunDriverAsync(TestHost host, params string[] args)
    {
        var run = await Cli.RunDllAsync(Cli.ProgramDll("RaySharp.TestDriver"), host.Namespace, host.TempDir, host.Environment, TimeSpan.FromSeconds(180), args);
        Assert.True(run.ExitCode == 0, run.ToString());
        return run;
    }

    /// <summary>Files of the given sessions left in /dev/shm.</summary>
    public static IReadOnlyList<string> SharedMemoryFiles(TestHost host) =>
        Directory.EnumerateFileSystemEntries("/dev/shm")
            .Where(f => Sessions(host).Any(s => Path.GetFileName(f).StartsWith("raysharp_" + s.Name, StringComparison.Ordinal)))
            .ToList();

    /// <summary>Stops a host with the CLI and checks that nothing of it is left: no process in its namespace, no shared memory.</summary>
    public static async Task StopAndAssertCleanAsync(TestHost host)
    {
        var stop = await Cli.RunAsync(host, "stop");
        Assert.True(stop.ExitCode == 0, $"raysharp stop on {host} failed: {stop}");
        Assert.Empty(host.Pids());
        Assert.Empty(SharedMemoryFiles(host));
        Assert.False(File.Exists(SessionDirectory.CurrentClusterFile(host.TempDir)), "current_cluster should be removed by stop");
    }
}
