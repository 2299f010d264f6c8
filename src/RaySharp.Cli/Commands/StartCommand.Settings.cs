using System.Globalization;
using System.Net;
using RaySharp.Common;

namespace RaySharp.Cli.Commands;

/// <summary>The settings of <c>raysharp start</c>, after parsing and before validation.</summary>
internal sealed record StartSettings
{
    public bool Head { get; init; }
    public string? Address { get; init; }
    public int? Port { get; init; }
    public int? NumCpus { get; init; }
    public double? NumGpus { get; init; }
    public string? Resources { get; init; }
    public string? NodeIpAddress { get; init; }
    public string? TempDir { get; init; }
    public bool Block { get; init; }
    public int NodeManagerPort { get; init; }
    public int MinWorkerPort { get; init; } = 10002;
    public int MaxWorkerPort { get; init; } = 19999;
    public int ObjectManagerPort { get; init; }
    public long? ObjectStoreMemory { get; init; }
    public string? PlasmaDirectory { get; init; }
    public string? ObjectSpillingDirectory { get; init; }
    public string? RedisAddress { get; init; }
    public string? RedisPassword { get; init; }
    /// <summary>The cluster YAML the head's autoscaler runs with; null: no autoscaler.</summary>
    public string? AutoscalingConfig { get; init; }
    public string? Token { get; init; }
    public string? TokenFile { get; init; }
    /// <summary><c>token</c> (the default) or <c>none</c>.</summary>
    public string? Auth { get; init; }
    public string? TlsCert { get; init; }
    public string? TlsKey { get; init; }
    public string? TlsCa { get; init; }
}

/// <summary>Checking what <c>raysharp start</c> was given, before anything starts: every error names the flag and the fix.</summary>
internal static partial class StartCommand
{
    /// <summary>
    /// The node's resources as the cluster launcher's node type declares them (a JSON object such as
    /// <c>{"CPU": 4, "GPU": 1, "accelerator": 2}</c>), taking the place of --num-cpus, --num-gpus and --resources, as
    /// Ray's RAY_OVERRIDE_RESOURCES: the start commands of a cluster YAML stay the same for every node type.
    /// </summary>
    internal const string OverrideResourcesVariable = "RAYSHARP_OVERRIDE_RESOURCES";

    private static StartSettings WithResourceOverride(StartSettings s)
    {
        if (Environment.GetEnvironmentVariable(OverrideResourcesVariable) is not { Length: > 0 } json) return s;
        Dictionary<string, double> all;
        try
        {
            all = System.Text.Json.JsonSerializer.Deserialize<Dictionary<string, double>>(json) ?? [];
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new CliException($"{OverrideResourcesVariable} is not a JSON object of resource names to numbers ({e.Message}); for example {{\"CPU\": 4, \"GPU\": 1}}.");
        }
        int? cpus = s.NumCpus;
        if (all.Remove("CPU", out var cpu))
        {
            if (cpu != Math.Floor(cpu)) throw new CliException($"{OverrideResourcesVariable}: CPU must be a whole number, got {cpu.ToString(CultureInfo.InvariantCulture)}.");
            cpus = (int)cpu;
        }
        double? gpus = all.Remove("GPU", out var gpu) ? gpu : s.NumGpus;
        return s with { NumCpus = cpus, NumGpus = gpus, Resources = all.Count > 0 ? System.Text.Json.JsonSerializer.Serialize(all) : s.Resources };
    }

    private static void Validate(StartSettings s, out Dictionary<string, double> customResources)
    {
        if (s.Head && s.Address is not null)
            throw new CliException("--head and --address cannot be combined: use --head on the head node, and --address=<head-ip>:<port> on every other node.");
        if (!s.Head && s.Address is null)
            throw new CliException("Say which node this is: `raysharp start --head` on the head node, or `raysharp start --address=<head-ip>:<port>` to join a cluster.");
        if (s.Port is { } p && (p < 1 || p > 65535))
            throw new CliException($"--port must be between 1 and 65535, got {p}.");
        if (s.NumCpus is < 0)
            throw new CliException($"--num-cpus must be zero or more, got {s.NumCpus}.");
        if (s.NumGpus is { } g && (g < 0 || !double.IsFinite(g)))
            throw new CliException($"--num-gpus must be zero or more, got {s.NumGpus}.");
        if (s.NodeManagerPort is < 0 or > 65535)
            throw new CliException($"--node-manager-port must be between 0 (any free port) and 65535, got {s.NodeManagerPort}.");
        if (s.MinWorkerPort is < 1 or > 65535 || s.MaxWorkerPort is < 1 or > 65535 || s.MinWorkerPort > s.MaxWorkerPort)
            throw new CliException($"--min-worker-port ({s.MinWorkerPort}) and --max-worker-port ({s.MaxWorkerPort}) must be ports (1-65535) with min <= max.");
        if (s.ObjectManagerPort is < 0 or > 65535)
            throw new CliException($"--object-manager-port must be between 0 (any free port) and 65535, got {s.ObjectManagerPort}.");
        if (s.ObjectStoreMemory is { } storeBytes)
        {
            var plasma = s.PlasmaDirectory ?? "/dev/shm";
            if (storeBytes < 1024 * 1024)
                throw new CliException($"--object-store-memory must be at least 1 MiB (1048576 bytes), got {storeBytes}.");
            if (Directory.Exists(plasma) && new DriveInfo(plasma).AvailableFreeSpace is var free && storeBytes > free)
                throw new CliException($"--object-store-memory is {storeBytes >> 20} MiB but {plasma} has only {free >> 20} MiB free: give a smaller --object-store-memory, or a --plasma-directory with more room.");
        }
        if (s.PlasmaDirectory is { } dir && !Directory.Exists(dir))
            throw new CliException($"--plasma-directory '{dir}' does not exist; create it, or leave the option out to use /dev/shm.");
        if (s.NodeIpAddress is not null && !IPAddress.TryParse(s.NodeIpAddress, out _))
            throw new CliException($"--node-ip-address '{s.NodeIpAddress}' is not an IP address; give this node's address as other nodes reach it, for example 192.168.0.11.");
        if (!ResourceSet.TryParseJson(s.Resources, out customResources, out var error))
            throw new CliException(error + ".");
        if (s.Address is not null && !NodeAddress.TryParse(s.Address, out _, out _, out var addressError))
            throw new CliException($"Invalid --address '{s.Address}': {addressError}.");
        if (s.AutoscalingConfig is not null && !s.Head)
            throw new CliException("--autoscaling-config is for the head node, where the autoscaler runs; leave it out when joining a cluster with --address.");
        if (s.AutoscalingConfig is { } yaml && !File.Exists(RaySharp.Autoscaler.Config.ClusterConfigLoader.ExpandHome(yaml)))
            throw new CliException($"--autoscaling-config: no file {yaml}. Give the cluster YAML the autoscaler should run with (`raysharp up` passes the one it wrote to the head).");
        if (s.RedisAddress is not null && !s.Head)
            throw new CliException("--redis-address is for the head node, whose GCS keeps its state there; leave it out when joining a cluster with --address.");
        if (s.RedisAddress is not null && !NodeAddress.TryParse(s.RedisAddress, out _, out _, out var redisError))
            throw new CliException($"Invalid --redis-address '{s.RedisAddress}': {redisError}. Give it as <host>:<port>, for example 127.0.0.1:6380.");
        if (s.RedisPassword is not null && s.RedisAddress is null)
            throw new CliException("--redis-password needs --redis-address (the Redis that holds the GCS state).");
        if (s.Auth is not null && s.Auth != "token" && s.Auth != "none")
            throw new CliException($"--auth must be 'token' (the default: every connection carries the cluster token) or 'none' (no authentication, for a trusted network), got '{s.Auth}'.");
        if (s.Auth is not null && !s.Head)
            throw new CliException("--auth is for the head node; a node joining a cluster uses that cluster's setting. Leave it out with --address.");
        if (s.Token is not null && s.TokenFile is not null)
            throw new CliException("Give the cluster token once: --token or --token-file, not both.");
        if (s.Auth == "none" && (s.Token is not null || s.TokenFile is not null))
            throw new CliException("--auth none starts a cluster without a token; leave out --token/--token-file, or leave out --auth none.");
    }
}
