using RaySharp.Autoscaler.Config;

namespace RaySharp.Tests;

/// <summary>The cluster YAML: Ray's keys, the defaults, and errors that name the line, the column and the fix.</summary>
public sealed class ClusterConfigTests
{
    private const string File = "/configs/cluster.yaml";

    private static ClusterConfig Parse(string yaml) => ClusterConfigLoader.Parse(yaml, File);

    private static string ErrorOf(string yaml) => Assert.Throws<ClusterConfigException>(() => Parse(yaml)).Message;

    [Fact]
    public void AConfigWithOnlyAProviderAndAuthGetsRaysDefaults()
    {
        var config = Parse("""
            provider: {type: local, head_ip: 10.0.0.1, worker_ips: [10.0.0.2, 10.0.0.3]}
            auth: {ssh_user: ubuntu}
            """);
        Assert.Equal("default", config.ClusterName);
        Assert.Equal("ubuntu", config.Auth.SshUser);
        Assert.Null(config.Auth.SshPrivateKey);
        // As Ray's local provider: max_workers defaults to the listed workers, all of which are wanted.
        Assert.Equal(2, config.MaxWorkers);
        Assert.Equal(1.0, config.UpscalingSpeed);
        Assert.Equal(5, config.IdleTimeoutMinutes);
        Assert.Equal("ray.head.default", config.HeadNodeType);
        var worker = Assert.Single(config.WorkerTypes);
        Assert.Equal("ray.worker.default", worker.Key);
        Assert.Equal(2, worker.Value.MinWorkers);
        Assert.Equal(ClusterConfig.DefaultHeadStartCommands, config.HeadStartRayCommands);
        Assert.Equal(ClusterConfig.DefaultWorkerStartCommands, config.WorkerStartRayCommands);
        Assert.Empty(config.SetupCommands);
    }

    [Fact]
    public void RaysKeysAreReadWithTheirValues()
    {
        var config = Parse("""
            cluster_name: lab-1
            max_workers: 6
            upscaling_speed: 2.5
            idle_timeout_minutes: 0.5
            provider:
              type: process
              use_network_namespaces: false
              subnet: 10.240.3
            available_node_types:
              head.small:
                resources: {CPU: 2}
                max_workers: 0
              gpu:
                resources: {CPU: 8, GPU: 1, accelerator: 2}
                min_workers: 1
                max_workers: 3
                node_config: {instance: big, disks: [a, b]}
                worker_setup_commands: [echo gpu]
            head_node_type: head.small
            file_mounts: {"~/data": ./data}
            cluster_synced_files: [~/shared]
            rsync_exclude: ["*.tmp"]
            initialization_commands: [echo init]
            setup_commands: echo one command
            head_setup_commands: [echo head]
            worker_setup_commands: [echo worker]
            head_start_ray_commands: [raysharp stop, raysharp start --head]
            worker_start_ray_commands: [raysharp start --address=$RAYSHARP_HEAD_IP:6379]
            """);
        Assert.Equal("lab-1", config.ClusterName);
        Assert.Equal(6, config.MaxWorkers);
        Assert.Equal(2.5, config.UpscalingSpeed);
        Assert.Equal(0.5, config.IdleTimeoutMinutes);
        Assert.False(config.Provider.UseNetworkNamespaces);
        Assert.Equal("10.240.3", config.Provider.Subnet);
        var gpu = config.AvailableNodeTypes["gpu"];
        Assert.Equal(new Dictionary<string, double> { ["CPU"] = 8, ["GPU"] = 1, ["accelerator"] = 2 }, gpu.Resources);
        Assert.Equal((1, 3), (gpu.MinWorkers, gpu.MaxWorkers));
        Assert.Equal("big", gpu.NodeConfig["instance"]);
        Assert.Equal(["echo gpu"], gpu.WorkerSetupCommands!);
        Assert.Null(config.AvailableNodeTypes["head.small"].WorkerSetupCommands);
        Assert.Equal("head.small", config.HeadNodeType);
        Assert.Equal("./data", config.FileMounts["~/data"]);
        Assert.Equal(["~/shared"], config.ClusterSyncedFiles);
        Assert.Equal(["*.tmp"], config.RsyncExclude);
        Assert.Equal(["echo one command"], config.SetupCommands);
        Assert.Equal(["raysharp stop", "raysharp start --head"], config.HeadStartRayCommands);
        Assert.Equal(["raysharp start --address=$RAYSHARP_HEAD_IP:6379"], config.WorkerStartRayCommands);
    }

    [Fact]
    public void MalformedYamlNamesTheFileLineAndColumn()
    {
        var message = ErrorOf("""
            cluster_name: a
            provider:
              type: process
                worker_ips: [1
            """);
        Assert.StartsWith($"{File}:4:", message);
        Assert.Contains("not valid YAML", message);
    }

    [Fact]
    public void AnUnknownKeyIsNamedWithTheClosestKnownOne()
    {
        var message = ErrorOf("""
            provider: {type: process}
            max_worker: 3
            """);
        Assert.StartsWith($"{File}:2:1:", message);
        Assert.Contains("no key 'max_worker'; did you mean 'max_workers'?", message);

        message = ErrorOf("""
            provider: {type: process}
            available_node_types:
              head:
                resources: {CPU: 1}
                min_worker: 1
            head_node_type: head
            """);
        Assert.StartsWith($"{File}:5:5:", message);
        Assert.Contains("available_node_types.head has no key 'min_worker'; did you mean 'min_workers'?", message);

        message = ErrorOf("provider: {type: lokal, head_ip: 10.0.0.1}");
        Assert.StartsWith($"{File}:1:18:", message);
        Assert.Contains("provider.type 'lokal' is not a provider RaySharp has: one of local, process; did you mean 'local'?", message);

        // Nothing close: no suggestion, but the known keys.
        message = ErrorOf("provider: {type: process}\nzzz: 1");
        Assert.DoesNotContain("did you mean", message);
        Assert.Contains("known keys: cluster_name, max_workers", message);
    }

    [Theory]
    [InlineData("cluster_name: x", "1:1", "`provider` is missing")]
    [InlineData("provider: {type: local}", "1:11", "provider.head_ip is missing")]
    [InlineData("provider: {type: process}\nmax_workers: many", "2:14", "max_workers must be a whole number, not 'many'")]
    [InlineData("provider: {type: process}\nmax_workers: -1", "2:14", "max_workers must be 0 or more")]
    [InlineData("provider: {type: process}\nsetup_commands: {a: b}", "2:17", "setup_commands must be a list")]
    [InlineData("provider: {type: process}\ncluster_name: 'a b'", "2:15", "cluster_name 'a b' may hold only")]
    [InlineData("provider: {type: process}\navailable_node_types: {h: {}}\nhead_node_type: hed", "3:17", "head_node_type 'hed' is not one of available_node_types (h); did you mean 'h'?")]
    [InlineData("provider: {type: process}\navailable_node_types: {h: {}}", "2:23", "head_node_type is missing")]
    [InlineData("provider: {type: process}\navailable_node_types: {h: {}, w: {min_workers: 3, max_workers: 2}}\nhead_node_type: h", "2:48", "min_workers (3) is more than its max_workers (2)")]
    [InlineData("provider: {type: process}\nmax_workers: 1\navailable_node_types: {h: {}, w: {min_workers: 2, max_workers: 2}}\nhead_node_type: h", "2:14", "min_workers add up to 2, more than max_workers (1)")]
    [InlineData("provider: {type: local, head_ip: 10.0.0.1, worker_ips: [10.0.0.2]}\nmax_workers: 5\navailable_node_types: {h: {}, w: {min_workers: 2}}\nhead_node_type: h", "1:11", "provider.worker_ips lists 1 machines")]
    [InlineData("provider: {type: local, head_ip: 10.0.0.1, worker_ips: [10.0.0.2, 10.0.0.2]}", "1:56", "lists 10.0.0.2 twice")]
    [InlineData("provider: {type: local, head_ip: 'a;b'}", "1:34", "'a;b' is not a host name or IP address")]
    [InlineData("provider: {type: process, head_ip: 10.0.0.1}", "1:36", "provider.head_ip is a key of the `local` provider")]
    [InlineData("provider: {type: process}\ndocker: {image: x}", "2:9", "`docker` is not supported")]
    [InlineData("provider: {type: process}\nauth: {ssh_private_key: /nonexistent/key}", "2:25", "/nonexistent/key does not exist; make one with `ssh-keygen")]
    [InlineData("provider: {type: process}\nprovider: {type: local}", "2:1", "Duplicate key")]
    [InlineData("", "1:1", "the file is empty")]
    public void BadValuesAreRefusedAtTheirPlaceWithWhatToDo(string yaml, string at, string expected)
    {
        var message = ErrorOf(yaml);
        Assert.StartsWith($"{File}:{at}: ", message);
        Assert.Contains(expected, message);
    }

    [Fact]
    public void TheExamplesParse()
    {
        var local = ClusterConfigLoader.Parse(System.IO.File.ReadAllText(Path.Combine(Infrastructure.Cli.RepoRoot, "examples", "clusters", "local.yaml")).Replace("~/.ssh/id_ed25519", "/etc/hostname", StringComparison.Ordinal), File);
        Assert.Equal(("local", 2), (local.Provider.Type, local.WorkerTypes.Single().Value.MinWorkers));
        var process = ClusterConfigLoader.LoadFile(Path.Combine(Infrastructure.Cli.RepoRoot, "examples", "clusters", "process.yaml"));
        Assert.Equal(("process", 2), (process.Provider.Type, process.AvailableNodeTypes["worker"].MinWorkers));
    }

    [Theory]
    [InlineData("max_workers", "max_workers", 0)]
    [InlineData("max_worker", "max_workers", 1)]
    [InlineData("kitten", "sitting", 3)]
    public void DistanceIsLevenshtein(string a, string b, int expected) => Assert.Equal(expected, ClusterConfigLoader.Distance(a, b));
}
