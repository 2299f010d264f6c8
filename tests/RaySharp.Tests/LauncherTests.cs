using System.Security.Cryptography;
using System.Text.Json;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>
/// The cluster launcher end to end: `raysharp up/exec/submit/down` run here, in the test's own namespace, against hosts
/// that are reached only over SSH (a real sshd in each, with private /tmp, /dev/shm and home), or against process nodes.
/// </summary>
public sealed class LauncherTests : IDisposable
{
    private static readonly TimeSpan s_upTimeout = TimeSpan.FromMinutes(4);
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "raysharp-tests", "launcher-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4)));

    public LauncherTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>The CLI on this machine (the operator's), its launcher state under the test's folder.</summary>
    private Task<CliResult> RaySharpAsync(params string[] args) =>
        Cli.RunDllAsync(Cli.CliDll, netns: null, Path.Combine(_dir, "operator"), env: null, s_upTimeout, args);

    private string WriteConfig(string name, string yaml)
    {
        var file = Path.Combine(_dir, name);
        File.WriteAllText(file, yaml);
        return file;
    }

    private static async Task<List<string>> NodeIpsAsync(Task<CliResult> status)
    {
        var result = await status;
        Assert.True(result.ExitCode == 0, result.ToString());
        return JsonDocument.Parse(result.Stdout).RootElement.GetProperty("nodes").EnumerateArray()
            .Where(n => n.GetProperty("state").GetString() == "ALIVE").Select(n => n.GetProperty("node_ip_address").GetString()!).Order(StringComparer.Ordinal).ToList();
    }

    [Fact]
    public async Task UpBringsAHeadAndTwoWorkersUpOverSshSubmitRunsThereASecondUpSkipsSetupAndDownLeavesNothing()
    {
        using var net = TestNetwork.Create(3);
        using var ssh = await SshHosts.StartAsync(net);
        var appDir = Path.Combine(_dir, "app");
        Directory.CreateDirectory(Path.Combine(appDir, "conf"));
        File.WriteAllText(Path.Combine(appDir, "conf", "settings.json"), "{\"answer\": 42}");
        File.WriteAllText(Path.Combine(appDir, "scratch.tmp"), "left out");
        var config = WriteConfig("local.yaml", $"""
            cluster_name: ssh-lab
            provider:
              type: local
              head_ip: {net[0].Ip}
              worker_ips: [{net[1].Ip}, {net[2].Ip}]
            auth:
              ssh_user: root
              ssh_private_key: {ssh.PrivateKeyPath}
            file_mounts:
              ~/app: {appDir}
            rsync_exclude: ["*.tmp"]
            # Counts how often setup ran on each host, and shows the node's own environment.
            setup_commands:
              - echo "setup $(hostname) head=$RAYSHARP_HEAD_IP" >> ~/setup-runs
            """);

        var up = await RaySharpAsync("up", "-y", config);
        Assert.True(up.ExitCode == 0, up.ToString());
        foreach (var name in new[] { "head", $"worker-{net[1].Ip}", $"worker-{net[2].Ip}" })
        {
            Assert.Contains($"{name}: waiting-for-ssh", up.Stdout);
            Assert.Contains($"{name}: syncing-files", up.Stdout);
            Assert.Contains($"{name}: up-to-date", up.Stdout);
        }
        Assert.Contains($"Cluster 'ssh-lab' is up: head {net[0].Ip}", up.Stdout);
        // The token reached the nodes in their environment, never on a command line: no process of any host has it
        // there, and the launcher printed it nowhere. The cluster's folder here (token, node logs) is its owner's alone.
        var state = Path.Combine(_dir, "operator", "launcher", "ssh-lab");
        var token = File.ReadAllText(Path.Combine(state, "cluster_token")).Trim();
        Assert.DoesNotContain(token, up.Output);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(state));
        foreach (var host in net.Hosts)
        {
            var commandLines = host.Pids().Select(p => Common.Posix.ReadCommandLine(p) ?? "").ToList();
            Assert.Contains(commandLines, c => c.Contains("raysharp-node", StringComparison.Ordinal));
            Assert.DoesNotContain(commandLines, c => c.Contains(token, StringComparison.Ordinal));
        }

        // file_mounts reached every host (rsync_exclude honoured); the head holds the resolved config and its key.
        foreach (var host in net.Hosts)
        {
            var mounted = await ssh.RunAsync(host, "cat ~/app/conf/settings.json; ls ~/app");
            Assert.True(mounted.ExitCode == 0, mounted.ToString());
            Assert.Contains("{\"answer\": 42}", mounted.Stdout);
            Assert.DoesNotContain("scratch.tmp", mounted.Stdout);
        }
        var bootstrap = await ssh.RunAsync(net[0], "cat ~/raysharp_bootstrap_config.yaml");
        Assert.Contains("\"ssh_private_key\": \"~/raysharp_bootstrap_key.pem\"", bootstrap.Stdout);
        Assert.Contains($"\"worker_ips\": [\n      \"{net[1].Ip}\"", bootstrap.Stdout);
        Assert.Equal(File.ReadAllText(ssh.PrivateKeyPath), (await ssh.RunAsync(net[0], "cat ~/raysharp_bootstrap_key.pem")).Stdout);
        Assert.Equal("600", (await ssh.RunAsync(net[0], "stat -c %a ~/raysharp_bootstrap_key.pem")).Stdout.Trim());
        Assert.False((await ssh.RunAsync(net[1], "test -e ~/raysharp_bootstrap_key.pem")).ExitCode == 0, "only the head gets the key");

        // rsync-up to every node, rsync-down from the head.
        var extra = Path.Combine(_dir, "extra.txt");
        File.WriteAllText(extra, "extra file");
        Assert.Equal(0, (await RaySharpAsync("rsync-up", config, extra, "~/extra.txt", "--all-nodes")).ExitCode);
        foreach (var host in net.Hosts) Assert.Equal("extra file", (await ssh.RunAsync(host, "cat ~/extra.txt")).Stdout);
        var back = Path.Combine(_dir, "back", "settings.json");
        Assert.Equal(0, (await RaySharpAsync("rsync-down", config, "~/app/conf/settings.json", back)).ExitCode);
        Assert.Equal("{\"answer\": 42}", File.ReadAllText(back));

        var ips = net.Hosts.Select(h => h.Ip).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(ips, await NodeIpsAsync(RaySharpAsync("exec", config, "raysharp status --format json")));
        Assert.Equal(net[0].Ip, (await RaySharpAsync("get-head-ip", config)).Stdout.Trim());
        Assert.Equal(ips.Skip(1), (await RaySharpAsync("get-worker-ips", config)).Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Order(StringComparer.Ordinal));

        // exec runs on the head, and its exit code is the command's.
        var exec = await RaySharpAsync("exec", config, "hostname; exit 7");
        Assert.Equal(7, exec.ExitCode);
        Assert.Equal("head", exec.Stdout.Trim());

        // submit: the overview program, copied to the head and run there as a driver, reaches all three nodes.
        var submit = await RaySharpAsync("submit", config, Path.GetDirectoryName(Cli.ProgramDll("NodeIps"))!);
        Assert.True(submit.ExitCode == 0, submit.ToString());
        Assert.Contains("on 3 node(s)", submit.Stdout);
        foreach (var ip in ips) Assert.Contains(ip, submit.Stdout);

        // A second up with the same config: setup is skipped, RaySharp restarted, the same three nodes.
        var again = await RaySharpAsync("up", "-y", config);
        Assert.True(again.ExitCode == 0, again.ToString());
        Assert.Contains("head: setting-up (setup unchanged, restarting)", again.Stdout);
        Assert.DoesNotContain("syncing-files", again.Stdout);
        await ClusterAssertions.EventuallyAsync(async () => (await NodeIpsAsync(RaySharpAsync("exec", config, "raysharp status --format json"))).SequenceEqual(ips),
            TimeSpan.FromSeconds(60), "the three nodes to be alive again after the restart");
        foreach (var host in net.Hosts)
        {
            var runs = await ssh.RunAsync(host, "cat ~/setup-runs");
            Assert.Equal($"setup {host.Name} head={net[0].Ip}", runs.Stdout.Trim());
        }

        var down = await RaySharpAsync("down", "-y", config);
        Assert.True(down.ExitCode == 0, down.ToString());
        Assert.Contains("every node stopped and released", down.Stdout);
        foreach (var host in net.Hosts) await ssh.AssertNothingLeftAsync(host);
        Assert.Equal("", (await RaySharpAsync("get-worker-ips", config)).Stdout.Trim());
    }

    [Fact]
    public async Task AHostWithoutSshFailsWithinTheBoundAndAFailingSetupFailsOnlyItsNodeWithItsOutput()
    {
        using var net = TestNetwork.Create(3);
        // worker2 exists on the network but runs no sshd.
        using var ssh = await SshHosts.StartAsync([net[0], net[1]]);
        var config = WriteConfig("broken.yaml", $"""
            cluster_name: broken-lab
            provider:
              type: local
              head_ip: {net[0].Ip}
              worker_ips: [{net[1].Ip}, {net[2].Ip}]
            auth:
              ssh_user: root
              ssh_private_key: {ssh.PrivateKeyPath}
            worker_setup_commands:
              - if [ "$(hostname)" = worker1 ]; then echo "disk /data is full" >&2; exit 3; fi
            # What `up` reports is the subject here: a head without its autoscaler, which would retry the failed workers.
            head_start_ray_commands:
              - raysharp stop
              - RAYSHARP_AUTOSCALING_CONFIG= raysharp start --head --port=6379
            """);

        var up = await RaySharpAsync("up", "-y", "--ssh-timeout=5", config);
        Assert.True(up.ExitCode == 1, up.ToString());
        Assert.Contains("head: up-to-date", up.Stdout);
        Assert.Contains($"worker-{net[1].Ip}: update-failed", up.Stdout);
        Assert.Contains($"worker-{net[2].Ip}: update-failed (at waiting-for-ssh)", up.Stdout);
        // The setup failure names the command, its exit code and what it printed.
        Assert.Contains($"node worker-{net[1].Ip}: worker setup command `if [ \"$(hostname)\" = worker1 ]", up.Stderr);
        Assert.Contains("failed on root@" + net[1].Ip + " with exit code 3", up.Stderr);
        Assert.Contains("disk /data is full", up.Stderr);
        // The host without sshd: named, with the bound and what to check.
        Assert.Contains($"root@{net[2].Ip} did not answer over SSH within 5 s", up.Stderr);
        Assert.Contains("sshd listens on its port 22", up.Stderr);
        Assert.True(up.Elapsed < TimeSpan.FromSeconds(90), $"up took {up.Elapsed}, past the 5 s SSH bound and the time the other nodes need");

        // The head is up and the cluster usable, without the failed workers.
        Assert.Equal([net[0].Ip], await NodeIpsAsync(RaySharpAsync("exec", config, "raysharp status --format json")));

        var down = await RaySharpAsync("down", "-y", config);
        // worker2 cannot be reached to stop it (nothing runs there): named, and released all the same.
        Assert.Contains($"worker-{net[2].Ip}", down.Stderr);
        foreach (var host in new[] { net[0], net[1] }) await ssh.AssertNothingLeftAsync(host);
        Assert.Equal("", (await RaySharpAsync("get-worker-ips", config)).Stdout.Trim());
    }

    [Fact]
    public async Task TheProcessProviderBringsUpAHeadAndMinWorkersOnThisMachineAndDownRemovesThemAll()
    {
        var name = "proc-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(3));
        var yaml = $$"""
            cluster_name: {{name}}
            max_workers: 3
            provider:
              type: process
            available_node_types:
              head:
                resources: {CPU: 1}
                max_workers: 0
              worker:
                resources: {CPU: 2, accelerator: 1}
                min_workers: 2
            head_node_type: head
            """;
        var config = WriteConfig("process.yaml", yaml);
        try
        {
            var up = await RaySharpAsync("up", "-y", config);
            Assert.True(up.ExitCode == 0, up.ToString());
            var status = await RaySharpAsync("exec", config, "raysharp status --format json");
            Assert.True(status.ExitCode == 0, status.ToString());
            var nodes = JsonDocument.Parse(status.Stdout).RootElement.GetProperty("nodes").EnumerateArray().ToList();
            Assert.Equal(3, nodes.Count(n => n.GetProperty("state").GetString() == "ALIVE"));
            // Each node has an address of its own and the resources of its type.
            Assert.Equal(3, nodes.Select(n => n.GetProperty("node_ip_address").GetString()).Distinct().Count());
            var workers = nodes.Where(n => !n.GetProperty("is_head_node").GetBoolean()).ToList();
            Assert.Equal(2, workers.Count);
            foreach (var w in workers)
            {
                Assert.Equal(2, w.GetProperty("resources_total").GetProperty("CPU").GetDouble());
                Assert.Equal(1, w.GetProperty("resources_total").GetProperty("accelerator").GetDouble());
            }
            Assert.Equal(1, nodes.Single(n => n.GetProperty("is_head_node").GetBoolean()).GetProperty("resources_total").GetProperty("CPU").GetDouble());
            // The nodes' namespaces, as the launcher's state names them: they exist, one per node.
            var stateFile = Path.Combine(_dir, "operator", "launcher", name, "state.json");
            var namespaces = JsonDocument.Parse(File.ReadAllText(stateFile)).RootElement.GetProperty("Nodes").EnumerateArray().Select(n => n.GetProperty("Namespace").GetString()!).ToList();
            var listed = TestNetwork.Ip("netns", "list");
            Assert.Equal(3, namespaces.Distinct().Count(ns => listed.Contains(ns, StringComparison.Ordinal)));
            var prefix = namespaces[0][..^2];
            var pids = namespaces.SelectMany(ns => TestNetwork.Ip("netns", "pids", ns).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse)).ToList();
            Assert.NotEmpty(pids);
            var nodesDir = Path.Combine(_dir, "operator", "launcher", name, "nodes");
            var sessions = Directory.GetDirectories(nodesDir).SelectMany(Common.SessionDirectory.EnumerateAll).Select(s => s.Name).ToList();
            Assert.Equal(3, sessions.Count);

            // A changed worker setup updates the workers only: the head's setup is current, so it is just restarted.
            File.AppendAllText(config, "\nworker_setup_commands: [echo changed]\n");
            var changed = await RaySharpAsync("up", "-y", config);
            Assert.True(changed.ExitCode == 0, changed.ToString());
            Assert.Contains("head: setting-up (setup unchanged, restarting)", changed.Stdout);
            Assert.DoesNotContain("head: syncing-files", changed.Stdout);
            Assert.Contains("worker1: syncing-files", changed.Stdout);
            Assert.Contains("worker2: syncing-files", changed.Stdout);
            Assert.Contains("$ echo changed", File.ReadAllText(Path.Combine(_dir, "operator", "launcher", name, "logs", "worker1.log")));

            // --workers-only keeps the head and takes the workers down; the head's autoscaler then brings min_workers
            // back, as Ray's does.
            var workersDown = await RaySharpAsync("down", "-y", "--workers-only", config);
            Assert.True(workersDown.ExitCode == 0, workersDown.ToString());
            Assert.Contains("worker1: terminated", workersDown.Stdout);
            Assert.Contains("worker2: terminated", workersDown.Stdout);
            Assert.Equal(0, (await RaySharpAsync("get-head-ip", config)).ExitCode);
            await ClusterAssertions.EventuallyAsync(async () =>
            {
                var s = await RaySharpAsync("exec", config, "raysharp status --format json");
                return s.ExitCode == 0 && JsonDocument.Parse(s.Stdout).RootElement.GetProperty("nodes").EnumerateArray()
                    .Count(n => n.GetProperty("state").GetString() == "ALIVE" && !n.GetProperty("is_head_node").GetBoolean()) == 2;
            }, TimeSpan.FromMinutes(2), "the autoscaler to bring the two min_workers back");

            var down = await RaySharpAsync("down", "-y", config);
            Assert.True(down.ExitCode == 0, down.ToString());
            Assert.DoesNotContain(prefix, TestNetwork.Ip("netns", "list"), StringComparison.Ordinal);
            Assert.DoesNotContain(prefix, TestNetwork.Ip("link", "show"), StringComparison.Ordinal);
            Assert.DoesNotContain(pids, Common.Posix.IsAlive);
            Assert.DoesNotContain(Directory.EnumerateFileSystemEntries("/dev/shm"), f => sessions.Any(s => Path.GetFileName(f).StartsWith("raysharp_" + s, StringComparison.Ordinal)));
            Assert.Empty(Directory.EnumerateFileSystemEntries(nodesDir));
        }
        finally
        {
            // Whatever failed, the nodes go (with the config they were made with).
            File.WriteAllText(config, yaml);
            await RaySharpAsync("down", "-y", config);
        }
    }

    [Fact]
    public async Task BadConfigsAreRefusedByTheCliWithTheirLineAndColumn()
    {
        var malformed = WriteConfig("malformed.yaml", "provider:\n  type: process\n   bad: [1\n");
        var result = await RaySharpAsync("up", "-y", malformed);
        Assert.Equal(1, result.ExitCode);
        Assert.StartsWith($"Error: {malformed}:3:", result.Stderr);
        Assert.Contains("not valid YAML", result.Stderr);

        var typo = WriteConfig("typo.yaml", "provider: {type: process}\nidle_timeout_minute: 3\n");
        result = await RaySharpAsync("up", "-y", typo);
        Assert.Equal(1, result.ExitCode);
        Assert.Contains($"{typo}:2:1: the cluster config has no key 'idle_timeout_minute'; did you mean 'idle_timeout_minutes'?", result.Stderr);

        result = await RaySharpAsync("up", "-y", Path.Combine(_dir, "missing.yaml"));
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("cannot read the cluster config", result.Stderr);

        // Without -y and without a terminal, up asks for it instead of hanging on a prompt.
        var fine = WriteConfig("fine.yaml", "provider: {type: process}\n");
        result = await RaySharpAsync("up", fine);
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("Confirm with -y", result.Stderr);
    }
}
