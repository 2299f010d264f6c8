using System.Globalization;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace RaySharp.Autoscaler.Config;

/// <summary>A cluster YAML that cannot be used: the message starts with file:line:column and says what to change.</summary>
internal sealed class ClusterConfigException(string message) : Exception(message);

/// <summary>
/// Reads a cluster YAML into a <see cref="ClusterConfig"/> with every default filled in. Walks YamlDotNet's node tree
/// rather than deserializing into classes, so every error (a wrong type, a missing or unknown key) names the line and
/// column of the node at fault, and an unknown key is answered with the closest known one (a typo in a key would
/// otherwise be silently ignored, and the cluster started without the setting).
/// </summary>
internal static class ClusterConfigLoader
{
    public static readonly IReadOnlyList<string> ProviderTypes = ["local", "process"];

    private static readonly string[] s_topKeys =
    [
        "cluster_name", "max_workers", "upscaling_speed", "idle_timeout_minutes", "provider", "auth", "available_node_types",
        "head_node_type", "file_mounts", "cluster_synced_files", "file_mounts_sync_continuously", "rsync_exclude", "rsync_filter",
        "initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands", "head_start_ray_commands",
        "worker_start_ray_commands", "docker",
    ];

    private static readonly string[] s_providerKeys = ["type", "head_ip", "worker_ips", "external_head_ip", "use_network_namespaces", "subnet"];
    private static readonly string[] s_authKeys = ["ssh_user", "ssh_private_key"];
    private static readonly string[] s_nodeTypeKeys = ["resources", "min_workers", "max_workers", "node_config", "worker_setup_commands", "labels"];

    public static ClusterConfig LoadFile(string path)
    {
        var full = Path.GetFullPath(path);
        string text;
        try
        {
            text = File.ReadAllText(full);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ClusterConfigException($"{path}: cannot read the cluster config: {e.Message}");
        }
        return Parse(text, full);
    }

    public static ClusterConfig Parse(string text, string file)
    {
        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(text));
        }
        catch (YamlException e)
        {
            // YamlDotNet's messages start with their own "(Line: .., Col: ..)": keep only what follows.
            var reason = e.InnerException?.Message ?? e.Message;
            var close = reason.IndexOf("): ", StringComparison.Ordinal);
            if (reason.StartsWith('(') && close > 0) reason = reason[(close + 3)..];
            throw new ClusterConfigException($"{file}:{e.Start.Line}:{e.Start.Column}: not valid YAML: {reason}");
        }
        if (stream.Documents.Count == 0 || stream.Documents[0].RootNode is YamlScalarNode { Value: null or "" })
            throw new ClusterConfigException($"{file}:1:1: the file is empty; a cluster config needs at least `provider:` (see examples/clusters/)");
        if (stream.Documents.Count > 1)
            throw new ClusterConfigException(At(file, stream.Documents[1].RootNode, "holds more than one YAML document; keep one cluster per file"));
        return new Reader(file).Read(stream.Documents[0].RootNode);
    }

    private static string At(string file, YamlNode node, string message) => $"{file}:{node.Start.Line}:{node.Start.Column}: {message}";

    private sealed class Reader(string file)
    {
        private ClusterConfigException Error(YamlNode node, string message) => new(At(file, node, message));

        public ClusterConfig Read(YamlNode root)
        {
            var top = Mapping(root, "the cluster config");
            CheckKeys(top, s_topKeys, "the cluster config");
            if (Find(top, "docker") is { } docker)
                throw Error(docker, "`docker` is not supported: RaySharp nodes run .NET processes on the machine itself; remove the key and install what the nodes need with setup_commands");
            var providerNode = Find(top, "provider") ?? throw Error(root, "`provider` is missing; add for example `provider: {type: local, head_ip: 10.0.0.1, worker_ips: [10.0.0.2]}`");
            var config = new ClusterConfig { SourceFile = file, Provider = ReadProvider(providerNode) };
            if (Find(top, "cluster_name") is { } name)
            {
                config.ClusterName = Scalar(name, "cluster_name");
                if (config.ClusterName.Length == 0 || config.ClusterName.Length > 64 || !config.ClusterName.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
                    throw Error(name, $"cluster_name '{config.ClusterName}' may hold only letters, digits, '-', '_' and '.' (1 to 64 of them): it names files and tags");
            }
            var localWorkers = config.Provider.Type == "local" ? config.Provider.WorkerIps.Count : (int?)null;
            config.MaxWorkers = Find(top, "max_workers") is { } mw ? Int(mw, "max_workers", min: 0) : localWorkers ?? 2;
            if (Find(top, "upscaling_speed") is { } us) config.UpscalingSpeed = Number(us, "upscaling_speed", min: 0);
            if (Find(top, "idle_timeout_minutes") is { } idle) config.IdleTimeoutMinutes = Number(idle, "idle_timeout_minutes", min: 0);
            if (Find(top, "auth") is { } auth) config.Auth = ReadAuth(auth);
            if (Find(top, "file_mounts") is { } mounts)
            {
                foreach (var (key, value) in Entries(mounts, "file_mounts"))
                    config.FileMounts[Scalar(key, "a file_mounts path")] = Scalar(value, $"file_mounts '{((YamlScalarNode)key).Value}'");
            }
            config.ClusterSyncedFiles = Strings(top, "cluster_synced_files") ?? [];
            config.RsyncExclude = Strings(top, "rsync_exclude") ?? [];
            config.RsyncFilter = Strings(top, "rsync_filter") ?? [];
            config.InitializationCommands = Strings(top, "initialization_commands") ?? [];
            config.SetupCommands = Strings(top, "setup_commands") ?? [];
            config.HeadSetupCommands = Strings(top, "head_setup_commands") ?? [];
            config.WorkerSetupCommands = Strings(top, "worker_setup_commands") ?? [];
            config.HeadStartRayCommands = Strings(top, "head_start_ray_commands") ?? [.. ClusterConfig.DefaultHeadStartCommands];
            config.WorkerStartRayCommands = Strings(top, "worker_start_ray_commands") ?? [.. ClusterConfig.DefaultWorkerStartCommands];

            if (Find(top, "available_node_types") is { } types)
            {
                foreach (var (key, value) in Entries(types, "available_node_types"))
                {
                    var typeName = Scalar(key, "a node type's name");
                    config.AvailableNodeTypes[typeName] = ReadNodeType(value, typeName, config.MaxWorkers);
                }
                if (config.AvailableNodeTypes.Count == 0) throw Error(types, "available_node_types is empty; name at least the head's type");
                var headNode = Find(top, "head_node_type") ?? throw Error(types, $"head_node_type is missing: name which of {Names(config.AvailableNodeTypes.Keys)} the head is");
                config.HeadNodeType = Scalar(headNode, "head_node_type");
                if (!config.AvailableNodeTypes.ContainsKey(config.HeadNodeType))
                    throw Error(headNode, $"head_node_type '{config.HeadNodeType}' is not one of available_node_types ({Names(config.AvailableNodeTypes.Keys)}){Suggest(config.HeadNodeType, config.AvailableNodeTypes.Keys)}");
            }
            else
            {
                if (Find(top, "head_node_type") is { } orphan)
                    throw Error(orphan, "head_node_type names a type of available_node_types, which this config does not have; add available_node_types or remove head_node_type");
                // As Ray: a head type and a worker type, resources detected on each node. For `local` every listed
                // worker machine is wanted, so the worker type's minimum is all of them.
                config.HeadNodeType = "ray.head.default";
                config.AvailableNodeTypes["ray.head.default"] = new NodeTypeConfig { MaxWorkers = 0 };
                config.AvailableNodeTypes["ray.worker.default"] = new NodeTypeConfig { MinWorkers = localWorkers ?? 0, MaxWorkers = config.MaxWorkers };
            }
            Validate(config, top);
            return config;
        }

        private void Validate(ClusterConfig config, YamlMappingNode top)
        {
            var workerMinimum = config.WorkerTypes.Sum(t => t.Value.MinWorkers);
            if (workerMinimum > config.MaxWorkers)
                throw Error(Find(top, "max_workers") ?? top, $"the node types' min_workers add up to {workerMinimum}, more than max_workers ({config.MaxWorkers}); raise max_workers or lower a min_workers");
            if (config.Provider.Type == "local")
            {
                var worker = config.WorkerTypes.Sum(t => t.Value.MinWorkers);
                if (worker > config.Provider.WorkerIps.Count)
                    throw Error(Find(top, "provider")!, $"the node types' min_workers add up to {worker}, but provider.worker_ips lists {config.Provider.WorkerIps.Count} machines; list more worker_ips or lower min_workers");
            }
        }

        private ProviderConfig ReadProvider(YamlNode node)
        {
            var map = Mapping(node, "provider");
            CheckKeys(map, s_providerKeys, "provider");
            var typeNode = Find(map, "type") ?? throw Error(node, $"provider.type is missing: one of {Names(ProviderTypes)}");
            var type = Scalar(typeNode, "provider.type");
            if (!ProviderTypes.Contains(type))
                throw Error(typeNode, $"provider.type '{type}' is not a provider RaySharp has: one of {Names(ProviderTypes)}{Suggest(type, ProviderTypes)}");
            var provider = new ProviderConfig { Type = type };
            if (type == "local")
            {
                var head = Find(map, "head_ip") ?? throw Error(node, "provider.head_ip is missing: the `local` provider needs the head machine's address (and worker_ips, the workers')");
                provider.HeadIp = Host(head, "provider.head_ip");
                if (Find(map, "worker_ips") is { } workers)
                {
                    foreach (var w in Sequence(workers, "provider.worker_ips")) provider.WorkerIps.Add(Host(w, "a provider.worker_ips entry"));
                    var twice = provider.WorkerIps.GroupBy(i => i, StringComparer.OrdinalIgnoreCase).FirstOrDefault(g => g.Count() > 1 || g.Key.Equals(provider.HeadIp, StringComparison.OrdinalIgnoreCase));
                    if (twice is not null) throw Error(workers, $"provider.worker_ips lists {twice.Key} twice (or it is the head_ip too); each machine is one node");
                }
                foreach (var key in new[] { "use_network_namespaces", "subnet" })
                    if (Find(map, key) is { } stray) throw Error(stray, $"provider.{key} is a key of the `process` provider, not of `local`");
            }
            else
            {
                foreach (var key in new[] { "head_ip", "worker_ips", "external_head_ip" })
                    if (Find(map, key) is { } stray) throw Error(stray, $"provider.{key} is a key of the `local` provider: `process` nodes are processes on this machine");
                if (Find(map, "use_network_namespaces") is { } ns) provider.UseNetworkNamespaces = Bool(ns, "provider.use_network_namespaces");
                if (Find(map, "subnet") is { } subnet)
                {
                    provider.Subnet = Scalar(subnet, "provider.subnet");
                    var parts = provider.Subnet.Split('.');
                    if (parts.Length != 3 || !parts.All(p => byte.TryParse(p, NumberStyles.None, CultureInfo.InvariantCulture, out _)))
                        throw Error(subnet, $"provider.subnet '{provider.Subnet}' must be the first three parts of a private /24, for example 10.233.7");
                }
            }
            return provider;
        }

        private AuthConfig ReadAuth(YamlNode node)
        {
            var map = Mapping(node, "auth");
            CheckKeys(map, s_authKeys, "auth");
            var auth = new AuthConfig();
            if (Find(map, "ssh_user") is { } user) auth.SshUser = Scalar(user, "auth.ssh_user");
            if (Find(map, "ssh_private_key") is { } key)
            {
                var path = ExpandHome(Scalar(key, "auth.ssh_private_key"));
                auth.SshPrivateKey = Path.GetFullPath(path, Path.GetDirectoryName(file)!);
                if (!File.Exists(auth.SshPrivateKey))
                    throw Error(key, $"auth.ssh_private_key {auth.SshPrivateKey} does not exist; make one with `ssh-keygen -t ed25519 -f {auth.SshPrivateKey}` and add its .pub to the nodes' authorized_keys");
            }
            return auth;
        }

        private NodeTypeConfig ReadNodeType(YamlNode node, string name, int clusterMaxWorkers)
        {
            var what = $"available_node_types.{name}";
            var map = Mapping(node, what);
            CheckKeys(map, s_nodeTypeKeys, what);
            var type = new NodeTypeConfig { MaxWorkers = clusterMaxWorkers };
            if (Find(map, "resources") is { } resources)
            {
                foreach (var (key, value) in Entries(resources, $"{what}.resources"))
                {
                    var resource = Scalar(key, "a resource name");
                    type.Resources[resource] = Number(value, $"{what}.resources.{resource}", min: 0);
                }
            }
            var minNode = Find(map, "min_workers");
            if (minNode is not null) type.MinWorkers = Int(minNode, $"{what}.min_workers", min: 0);
            if (Find(map, "max_workers") is { } max) type.MaxWorkers = Int(max, $"{what}.max_workers", min: 0);
            if (type.MinWorkers > type.MaxWorkers)
                throw Error(minNode ?? node, $"{what}.min_workers ({type.MinWorkers}) is more than its max_workers ({type.MaxWorkers})");
            if (Find(map, "node_config") is { } nodeConfig)
            {
                foreach (var (key, value) in Entries(nodeConfig, $"{what}.node_config"))
                    type.NodeConfig[Scalar(key, "a node_config key")] = Plain(value);
            }
            type.WorkerSetupCommands = Strings(map, "worker_setup_commands");
            return type;
        }

        private YamlMappingNode Mapping(YamlNode node, string what) => node switch
        {
            YamlMappingNode m => m,
            YamlScalarNode { Value: null or "" } => new YamlMappingNode(),
            _ => throw Error(node, $"{what} must be a mapping of keys to values, not {Kind(node)}"),
        };

        private IEnumerable<YamlNode> Sequence(YamlNode node, string what) => node switch
        {
            YamlSequenceNode s => s.Children,
            YamlScalarNode { Value: null or "" } => [],
            _ => throw Error(node, $"{what} must be a list, not {Kind(node)}"),
        };

        private IEnumerable<(YamlNode Key, YamlNode Value)> Entries(YamlNode node, string what) =>
            Mapping(node, what).Children.Select(c => (c.Key, c.Value));

        private string Scalar(YamlNode node, string what) => node is YamlScalarNode s
            ? s.Value ?? ""
            : throw Error(node, $"{what} must be a single value, not {Kind(node)}");

        private string Host(YamlNode node, string what)
        {
            var host = Scalar(node, what);
            if (host.Length == 0 || host.Any(c => char.IsWhiteSpace(c) || c is '@' or '/' or ';' or '\'' or '"' or '$' or '`'))
                throw Error(node, $"{what} '{host}' is not a host name or IP address");
            return host;
        }

        private int Int(YamlNode node, string what, int min)
        {
            var text = Scalar(node, what);
            if (!int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var v))
                throw Error(node, $"{what} must be a whole number, not '{text}'");
            if (v < min) throw Error(node, $"{what} must be {min} or more, not {v}");
            return v;
        }

        private double Number(YamlNode node, string what, double min)
        {
            var text = Scalar(node, what);
            if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !double.IsFinite(v))
                throw Error(node, $"{what} must be a number, not '{text}'");
            if (v < min) throw Error(node, $"{what} must be {min.ToString(CultureInfo.InvariantCulture)} or more, not {text}");
            return v;
        }

        private bool Bool(YamlNode node, string what)
        {
            var text = Scalar(node, what);
            return text.ToLowerInvariant() switch
            {
                "true" or "yes" or "on" => true,
                "false" or "no" or "off" => false,
                _ => throw Error(node, $"{what} must be true or false, not '{text}'"),
            };
        }

        /// <summary>A command list: a list of strings, or one string for one command; null when the key is absent.</summary>
        private List<string>? Strings(YamlMappingNode map, string key)
        {
            if (Find(map, key) is not { } node) return null;
            if (node is YamlScalarNode { Value: { Length: > 0 } one } && node is not YamlSequenceNode) return [one];
            return Sequence(node, key).Select(n => Scalar(n, $"an entry of {key}")).ToList();
        }

        private static YamlNode? Find(YamlMappingNode map, string key) =>
            map.Children.FirstOrDefault(c => c.Key is YamlScalarNode s && s.Value == key).Value;

        private void CheckKeys(YamlMappingNode map, string[] known, string what)
        {
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var key in map.Children.Keys)
            {
                var name = Scalar(key, $"a key of {what}");
                if (!seen.Add(name)) throw Error(key, $"{what} has the key '{name}' twice");
                if (!known.Contains(name))
                    throw Error(key, $"{what} has no key '{name}'{Suggest(name, known)} (known keys: {Names(known)})");
            }
        }

        private static object? Plain(YamlNode node) => node switch
        {
            YamlScalarNode s => s.Value,
            YamlSequenceNode s => s.Children.Select(Plain).ToList(),
            YamlMappingNode m => m.Children.ToDictionary(c => ((YamlScalarNode)c.Key).Value ?? "", c => Plain(c.Value), StringComparer.Ordinal),
            _ => null,
        };

        private static string Kind(YamlNode node) => node switch
        {
            YamlMappingNode => "a mapping",
            YamlSequenceNode => "a list",
            YamlScalarNode s => $"'{s.Value}'",
            _ => "this",
        };
    }

    private static string Names(IEnumerable<string> names) => string.Join(", ", names);

    /// <summary>"; did you mean 'x'?" for the known name closest to <paramref name="given"/>, when one is close enough to be a typo.</summary>
    internal static string Suggest(string given, IEnumerable<string> known)
    {
        var best = known.Select(k => (Name: k, Distance: Distance(given.ToLowerInvariant(), k.ToLowerInvariant()))).MinBy(k => k.Distance);
        return best.Name is not null && best.Distance <= Math.Max(2, best.Name.Length / 3) ? $"; did you mean '{best.Name}'?" : "";
    }

    /// <summary>Levenshtein distance.</summary>
    internal static int Distance(string a, string b)
    {
        var previous = new int[b.Length + 1];
        var current = new int[b.Length + 1];
        for (var j = 0; j <= b.Length; j++) previous[j] = j;
        for (var i = 1; i <= a.Length; i++)
        {
            current[0] = i;
            for (var j = 1; j <= b.Length; j++)
                current[j] = Math.Min(Math.Min(current[j - 1] + 1, previous[j] + 1), previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
            (previous, current) = (current, previous);
        }
        return previous[b.Length];
    }

    internal static string ExpandHome(string path) =>
        path == "~" ? Environment.GetFolderPath(Environment.SpecialFolder.UserProfile)
        : path.StartsWith("~/", StringComparison.Ordinal) ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), path[2..])
        : path;
}
