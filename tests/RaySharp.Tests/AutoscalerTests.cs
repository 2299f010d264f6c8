using System.Security.Cryptography;
using System.Text.Json;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>
/// The autoscaler end to end: `raysharp up` starts a head whose monitor launches nodes of the cluster YAML's types as
/// drivers on the head ask for work, and removes them once idle; on the process provider (each node in a network
/// namespace of its own, set up by the launcher's updater) and on the local one (a pool of hosts with their own sshd,
/// which the head reaches over SSH). Real processes throughout; the drivers are the test driver program.
/// </summary>
public sealed class AutoscalerTests : IDisposable
{
    private static readonly TimeSpan s_commandTimeout = TimeSpan.FromMinutes(5);
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "raysharp-tests", "autoscaler-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4)));

    public AutoscalerTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    private Task<CliResult> RaySharpAsync(params string[] args) =>
        Cli.RunDllAsync(Cli.CliDll, netns: null, Path.Combine(_dir, "operator"), env: null, s_commandTimeout, args);

    /// <summary>The test driver run on the head (in its namespace, joining its cluster), as `raysharp exec` runs any command there.</summary>
    private Task<CliResult> DriverOnHeadAsync(string config, params string[] args) =>
        RaySharpAsync("exec", config, $"dotnet {Cli.ProgramDll("RaySharp.TestDriver")} {string.Join(' ', args)}");

    private async Task<(List<(string Ip, bool Head, double Gpus)> Alive, string Autoscaler)> StatusAsync(string config)
    {
        var status = await RaySharpAsync("exec", config, "raysharp status --format json");
        Assert.True(status.ExitCode == 0, status.ToString());
        var root = JsonDocument.Parse(status.Stdout).RootElement;
        var alive = root.GetProperty("nodes").EnumerateArray().Where(n => n.GetProperty("state").GetString() == "ALIVE")
            .Select(n => (n.GetProperty("node_ip_address").GetString()!, n.GetProperty("is_head_node").GetBoolean(),
                n.GetProperty("resources_total").TryGetProperty("GPU", out var g) ? g.GetDouble() : 0)).ToList();
        return (alive, root.TryGetProperty("autoscaler", out var a) && a.ValueKind == JsonValueKind.String ? a.GetString()! : "");
    }

    /// <summary>The launcher's nodes by type, as its state file lists them (the autoscaler's launches included).</summary>
    private static Dictionary<string, int> NodesByType(string stateFile) =>
        JsonDocument.Parse(File.ReadAllText(stateFile)).RootElement.GetProperty("Nodes").EnumerateArray()
            .Where(n => !n.GetProperty("Terminated").GetBoolean())
            .GroupBy(n => n.GetProperty("Tags").GetProperty("raysharp-user-node-type").GetString()!)
            .ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);

    /// <summary>
    /// Brings up a process-provider cluster of a 1-CPU head, a <c>cpu4</c> type (max 2) and a <c>gpu</c> type of one
    /// CPU and one GPU (max 1), with <paramref name="settings"/> (YAML lines) besides, runs <paramref name="body"/> with
    /// the config's path and the launcher's state file, and takes the cluster down whatever happened.
    /// </summary>
    private async Task OnClusterAsync(string settings, Func<string, string, Task> body, string? nodeTypes = null)
    {
        var name = "auto-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(3));
        var config = Path.Combine(_dir, name + ".yaml");
        File.WriteAllText(config, $"cluster_name: {name}\n{settings}" + (nodeTypes ?? """
            provider:
              type: process
            available_node_types:
              head:
                resources: {CPU: 1}
                max_workers: 0
              cpu4:
                resources: {CPU: 4}
                max_workers: 2
              gpu:
                resources: {CPU: 1, GPU: 1}
                max_workers: 1
            head_node_type: head

            """));
        try
        {
            var up = await RaySharpAsync("up", "-y", config);
            Assert.True(up.ExitCode == 0, up.ToString());
            await body(config, Path.Combine(_dir, "operator", "launcher", name, "state.json"));
        }
        finally
        {
            await RaySharpAsync("down", "-y", config);
        }
    }

    [Fact]
    public async Task WorkNeedingAGpuLaunchesAGpuNodeIdleNodesGoRequestResourcesKeepsNodesAndAnImpossibleShapeLaunchesNothing()
    {
        await OnClusterAsync("max_workers: 3\nidle_timeout_minutes: 0.25\n", async (config, stateFile) =>
        {
            var (alive, _) = await StatusAsync(config);
            var head = Assert.Single(alive);
            Assert.True(head.Head);

            // A task needing a GPU: the monitor launches the gpu type (not cpu4, which has none) and the task runs there.
            var gpu = await DriverOnHeadAsync(config, "autoscale-gpu", "auto");
            Assert.True(gpu.ExitCode == 0, gpu.ToString());
            var ranOn = gpu.Stdout.Split('\n').Single(l => l.StartsWith("gpu-task-ran-on ", StringComparison.Ordinal))["gpu-task-ran-on ".Length..].Trim();
            Assert.NotEqual(head.Ip, ranOn);
            // The driver was told why its task waited, and that a node that fits is on its way.
            Assert.Contains("the autoscaler can launch a node of type 'gpu' for them", gpu.Output, StringComparison.Ordinal);
            Assert.Equal(new Dictionary<string, int> { ["head"] = 1, ["gpu"] = 1 }, NodesByType(stateFile));
            (alive, var text) = await StatusAsync(config);
            Assert.Contains(alive, n => n.Ip == ranOn && n.Gpus == 1);
            Assert.Contains("Node status", text, StringComparison.Ordinal);

            // Idle past idle_timeout_minutes (15 s), the gpu node is stopped and given back; the head stays.
            await ClusterAssertions.EventuallyAsync(async () => !NodesByType(stateFile).ContainsKey("gpu"), TimeSpan.FromSeconds(90), "the idle gpu node to be terminated");
            await ClusterAssertions.EventuallyAsync(async () => (await StatusAsync(config)).Alive.Count == 1, TimeSpan.FromSeconds(60), "the head to be the one node alive");

            // RequestResources(8 CPUs) with 1 on the head: two cpu4 nodes, kept while the request holds, though idle.
            Assert.Equal(0, (await DriverOnHeadAsync(config, "autoscale-request", "auto", "8")).ExitCode);
            await ClusterAssertions.EventuallyAsync(async () => NodesByType(stateFile).GetValueOrDefault("cpu4") == 2 && (await StatusAsync(config)).Alive.Count == 3,
                TimeSpan.FromMinutes(3), "two cpu4 nodes to join for the request");
            await Task.Delay(TimeSpan.FromSeconds(25)); // past the idle timeout
            Assert.Equal(2, NodesByType(stateFile).GetValueOrDefault("cpu4"));
            Assert.False(NodesByType(stateFile).ContainsKey("gpu"), "CPU-only demand never launches the gpu type");
            Assert.Contains("{'CPU': 1.0}: 8 from request_resources()", (await StatusAsync(config)).Autoscaler, StringComparison.Ordinal);
            Assert.Equal(0, (await DriverOnHeadAsync(config, "autoscale-withdraw", "auto")).ExitCode);
            await ClusterAssertions.EventuallyAsync(async () => !NodesByType(stateFile).ContainsKey("cpu4"), TimeSpan.FromSeconds(90), "the cpu4 nodes to go once the request is withdrawn");

            // Two GPUs on one node: no type has them. The autoscaler says so and launches nothing.
            var waiting = DriverOnHeadAsync(config, "autoscale-infeasible", "auto", "25");
            await ClusterAssertions.EventuallyAsync(async () => (await StatusAsync(config)).Autoscaler.Contains("'GPU': 2.0", StringComparison.Ordinal),
                TimeSpan.FromSeconds(60), "the impossible shape to be reported");
            Assert.Contains("no node type", (await StatusAsync(config)).Autoscaler, StringComparison.OrdinalIgnoreCase);
            Assert.Equal(new Dictionary<string, int> { ["head"] = 1 }, NodesByType(stateFile));
            var impossible = await waiting;
            Assert.Equal(0, impossible.ExitCode);
            Assert.Contains("no node type the autoscaler can launch has either", impossible.Output, StringComparison.Ordinal);

            var down = await RaySharpAsync("down", "-y", config);
            Assert.True(down.ExitCode == 0, down.ToString());
            Assert.Empty(NodesByType(stateFile));
        });
    }

    [Fact]
    public async Task APendingStrictSpreadGroupLaunchesANodePerBundleAndTheNodesGoOnceItIsRemoved()
    {
        const string types = """
            provider:
              type: process
            available_node_types:
              head:
                resources: {CPU: 0}
                max_workers: 0
              cpu1:
                resources: {CPU: 1}
                max_workers: 3
            head_node_type: head

            """;
        await OnClusterAsync("max_workers: 3\nidle_timeout_minutes: 0.1\n", async (config, stateFile) =>
        {
            var status = await RaySharpAsync("exec", config, "raysharp status --format json");
            Assert.True(status.ExitCode == 0, status.ToString());
            var address = JsonDocument.Parse(status.Stdout).RootElement.GetProperty("gcs_address").GetString()!;
            var token = File.ReadAllText(Path.Combine(Path.GetDirectoryName(stateFile)!, Common.ClusterToken.FileName)).Trim();
            using var channels = new Rpc.RpcChannelPool(new Rpc.RpcSecurityOptions { ClusterToken = token });
            var groups = new Rpc.Protocol.PlacementGroupInfoGcsService.PlacementGroupInfoGcsServiceClient(channels.Get(address));

            // No node has a CPU: only nodes the autoscaler launches for the group, one per bundle, can hold it.
            var id = Common.UniqueId.New();
            var spec = new Rpc.Protocol.PlacementGroupTableData { PlacementGroupId = id, Strategy = Rpc.Protocol.PlacementStrategy.StrictSpread, Name = "spread" };
            for (var i = 0; i < 2; i++) spec.Bundles.Add(new Rpc.Protocol.BundleSpec { BundleIndex = i, Resources = { ["CPU"] = 1 } });
            Assert.True((await groups.CreatePlacementGroupAsync(new Rpc.Protocol.CreatePlacementGroupRequest { Spec = spec })).Accepted);
            await ClusterAssertions.EventuallyAsync(async () =>
                    (await groups.GetPlacementGroupAsync(new Rpc.Protocol.GetPlacementGroupRequest { PlacementGroupId = id })).Info.State == Rpc.Protocol.PlacementGroupState.Created,
                TimeSpan.FromMinutes(3), "the group to be created on launched nodes");
            var info = (await groups.GetPlacementGroupAsync(new Rpc.Protocol.GetPlacementGroupRequest { PlacementGroupId = id })).Info;
            Assert.Equal(2, info.Bundles.Select(b => b.NodeId).Distinct(StringComparer.Ordinal).Count());
            Assert.Equal(new Dictionary<string, int> { ["head"] = 1, ["cpu1"] = 2 }, NodesByType(stateFile));

            // Past the idle timeout (6 s) the nodes stay while they hold the bundles, and go once the group is removed.
            await Task.Delay(TimeSpan.FromSeconds(12));
            Assert.Equal(2, NodesByType(stateFile).GetValueOrDefault("cpu1"));
            Assert.True((await groups.RemovePlacementGroupAsync(new Rpc.Protocol.RemovePlacementGroupRequest { PlacementGroupId = id })).Found);
            await ClusterAssertions.EventuallyAsync(async () => !NodesByType(stateFile).ContainsKey("cpu1"), TimeSpan.FromSeconds(90), "the idle cpu1 nodes to be terminated");
        }, types);
    }

    [Fact]
    public async Task FortyOneCpuTasksScaleTheCpuTypeUpWithinItsMaxWorkersAndNeverLaunchTheGpuType()
    {
        await OnClusterAsync("max_workers: 4\nupscaling_speed: 1.0\n", async (config, stateFile) =>
        {
            var most = new Dictionary<string, int>(StringComparer.Ordinal);
            var driver = DriverOnHeadAsync(config, "autoscale-many", "auto");
            while (!driver.IsCompleted)
            {
                foreach (var (type, count) in NodesByType(stateFile)) most[type] = Math.Max(most.GetValueOrDefault(type), count);
                await Task.WhenAny(driver, Task.Delay(500));
            }
            var run = await driver;
            Assert.True(run.ExitCode == 0, run.ToString());
            // Every task ran; more than the head ran them; cpu4 grew to its max_workers and no further; no gpu node.
            var line = run.Stdout.Split('\n').Single(l => l.StartsWith("ran ", StringComparison.Ordinal));
            Assert.StartsWith("ran 40 on ", line, StringComparison.Ordinal);
            Assert.True(int.Parse(line.Split(' ')[3], System.Globalization.CultureInfo.InvariantCulture) >= 2, line);
            Assert.Equal(2, most.GetValueOrDefault("cpu4"));
            Assert.False(most.ContainsKey("gpu"), "CPU-only tasks launched a gpu node");
        });
    }

    [Fact]
    public async Task OnTheLocalProviderAPoolHostIsStartedOverSshWhenWorkNeedsItStoppedWhenIdleAndDownFindsWhatTheHeadLaunched()
    {
        using var net = TestNetwork.Create(3);
        using var ssh = await SshHosts.StartAsync(net);
        var config = Path.Combine(_dir, "pool.yaml");
        var appDir = Path.Combine(_dir, "app");
        Directory.CreateDirectory(appDir);
        File.WriteAllText(Path.Combine(appDir, "settings.json"), "{\"answer\": 42}");
        File.WriteAllText(config, $$"""
            cluster_name: ssh-pool
            file_mounts:
              ~/app: {{appDir}}
            max_workers: 2
            idle_timeout_minutes: 0.25
            provider:
              type: local
              head_ip: {{net[0].Ip}}
              worker_ips: [{{net[1].Ip}}, {{net[2].Ip}}]
            auth:
              ssh_user: root
              ssh_private_key: {{ssh.PrivateKeyPath}}
            available_node_types:
              head:
                resources: {CPU: 1}
                max_workers: 0
              pool:
                resources: {CPU: 1, GPU: 1}
                max_workers: 2
            head_node_type: head
            """);
        var pool = new[] { net[1], net[2] };
        try
        {
            var up = await RaySharpAsync("up", "-y", config);
            Assert.True(up.ExitCode == 0, up.ToString());
            var (alive, _) = await StatusAsync(config);
            Assert.Equal([net[0].Ip], alive.Select(n => n.Ip));
            foreach (var host in pool) await ssh.AssertNothingLeftAsync(host);

            // Work that needs a GPU: the head's autoscaler takes a host of the pool, sets it up over SSH (RaySharp
            // shipped from the head) and the task runs there.
            var gpu = await DriverOnHeadAsync(config, "autoscale-gpu", "auto", "2");
            Assert.True(gpu.ExitCode == 0, gpu.ToString());
            var ranOn = gpu.Stdout.Split('\n').Single(l => l.StartsWith("gpu-task-ran-on ", StringComparison.Ordinal))["gpu-task-ran-on ".Length..].Trim();
            var used = Assert.Single(pool, h => h.Ip == ranOn);
            Assert.Contains(used.Pids(), p => (Common.Posix.ReadCommandLine(p) ?? "").Contains("raysharp-node", StringComparison.Ordinal));
            Assert.Contains((await StatusAsync(config)).Alive, n => n.Ip == ranOn && n.Gpus == 1);
            // The file mounts reached it too, from the head's copy of them.
            Assert.Equal("{\"answer\": 42}", (await ssh.RunAsync(used, "cat ~/app/settings.json")).Stdout);

            // Idle past the timeout (15 s): RaySharp is stopped on that host, which goes back to the pool.
            await ClusterAssertions.EventuallyAsync(async () => (await StatusAsync(config)).Alive.Count == 1, TimeSpan.FromSeconds(90), "the idle pool host to leave the cluster");
            await ClusterAssertions.EventuallyAsync(async () =>
            {
                try { await ssh.AssertNothingLeftAsync(used); return true; }
                catch (Xunit.Sdk.XunitException) { return false; }
            }, TimeSpan.FromSeconds(30), "RaySharp to be stopped on the idle pool host");

            // Launched again, and `down` straight after: the operator's state never listed this node, but down reads
            // back what the head's autoscaler did and stops it too.
            gpu = await DriverOnHeadAsync(config, "autoscale-gpu", "auto", "2");
            Assert.True(gpu.ExitCode == 0, gpu.ToString());
            var down = await RaySharpAsync("down", "-y", config);
            Assert.True(down.ExitCode == 0, down.ToString());
            foreach (var host in net.Hosts) await ssh.AssertNothingLeftAsync(host);
            Assert.Equal("", (await RaySharpAsync("get-worker-ips", config)).Stdout.Trim());
        }
        catch (Exception e)
        {
            // The head's autoscaler log, which no other place keeps (the hosts' /tmp goes with them).
            var log = await RaySharpAsync("exec", config, "tail -n 80 /tmp/raysharp/session_latest/logs/monitor.out /tmp/raysharp/session_latest/logs/monitor.err");
            throw new InvalidOperationException(e.Message + "\n--- the head's autoscaler log ---\n" + log.Output, e);
        }
        finally
        {
            await RaySharpAsync("down", "-y", config);
        }
    }
}
