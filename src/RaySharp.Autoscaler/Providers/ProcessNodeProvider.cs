using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using RaySharp.Autoscaler.Config;
using RaySharp.Common;

namespace RaySharp.Autoscaler.Providers;

/// <summary>
/// Nodes that are processes on this machine (<c>provider: {type: process}</c>), for trying the launcher and the
/// autoscaler on one machine and for tests, as Ray's fake multi-node provider. Each node has a RAYSHARP_TEMP_DIR of its
/// own and, when run as root, a network namespace of its own with an address on a private bridge, so its processes
/// see only their node's sessions and ports, as on a machine of its own.
/// </summary>
internal sealed class ProcessNodeProvider : INodeProvider
{
    private readonly ClusterConfig _config;
    private readonly ClusterState _state;
    private readonly bool _namespaces;
    private readonly string _id;
    private readonly string _subnet;

    public ProcessNodeProvider(ClusterConfig config, ClusterState state)
    {
        _config = config;
        _state = state;
        var root = Environment.UserName == "root" || Environment.GetEnvironmentVariable("USER") == "root";
        _namespaces = config.Provider.UseNetworkNamespaces ?? root;
        if (_namespaces && !root)
            throw new InvalidOperationException("provider.use_network_namespaces needs root (network namespaces and a bridge are made for the nodes); run as root or set it to false");
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes(config.ClusterName));
        _id = Convert.ToHexStringLower(hash)[..6];
        _subnet = config.Provider.Subnet ?? $"10.233.{2 + (hash[3] % 250)}";
    }

    private string Bridge => "rsl" + _id;
    private string NodesDir => Path.Combine(_state.Dir, "nodes");

    /// <summary>The folder of the <c>raysharp</c> wrapper the nodes' commands run: this very build.</summary>
    private string BinDir => Path.Combine(_state.Dir, "bin");

    public Task<IReadOnlyList<ProviderNode>> NonTerminatedNodesAsync(CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<ProviderNode>>(_state.Read().Where(n => !n.Terminated).Select(n => n.ToNode()).ToList());

    public Task<IReadOnlyList<ProviderNode>> CreateNodesAsync(NodeTypeConfig type, IReadOnlyDictionary<string, string> tags, int count, CancellationToken cancellationToken)
    {
        WriteWrapper();
        var head = tags.TryGetValue(NodeTags.Kind, out var kind) && kind == NodeTags.KindHead;
        var made = _state.Update(nodes =>
        {
            var created = new List<NodeRecord>();
            var used = nodes.Where(n => !n.Terminated).Select(n => n.Id).ToHashSet(StringComparer.Ordinal);
            for (var i = 0; created.Count < count && i < 240; i++)
            {
                var id = head ? "head" : $"worker{i + 1}";
                if (head && i > 0) break;
                if (used.Contains(id)) continue;
                nodes.RemoveAll(n => n.Id == id);
                var record = new NodeRecord
                {
                    Id = id,
                    Ip = _namespaces ? $"{_subnet}.{10 + (head ? 0 : i + 1)}" : NodeAddress.DetectNodeIp(),
                    Namespace = _namespaces ? $"rsl{_id}n{(head ? 0 : i + 1)}" : null,
                    TempDir = Path.Combine(NodesDir, id),
                    Tags = new Dictionary<string, string>(tags, StringComparer.Ordinal) { [NodeTags.Name] = id },
                };
                nodes.Add(record);
                created.Add(record);
            }
            return created;
        });
        foreach (var record in made)
        {
            Directory.CreateDirectory(record.TempDir!);
            if (record.Namespace is not null) MakeNamespace(record);
        }
        return Task.FromResult<IReadOnlyList<ProviderNode>>(made.Select(r => r.ToNode()).ToList());
    }

    private void WriteWrapper()
    {
        Directory.CreateDirectory(BinDir);
        var wrapper = Path.Combine(BinDir, "raysharp");
        File.WriteAllText(wrapper, CommandScripts.Wrapper(AppContext.BaseDirectory.TrimEnd('/')));
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(wrapper, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
    }

    private void MakeNamespace(NodeRecord node)
    {
        // Made by the launcher, in the machine's namespace, before any node: what the autoscaler finds on the head.
        if (!HasMachineNamespace) Ip("netns", "attach", MachineNamespace, Environment.ProcessId.ToString(CultureInfo.InvariantCulture));
        if (!Run("ip", OnMachine("link", "show", Bridge)).Succeeded)
        {
            Ip(OnMachine("link", "add", Bridge, "type", "bridge"));
            Ip(OnMachine("addr", "add", $"{_subnet}.1/24", "dev", Bridge));
            Ip(OnMachine("link", "set", Bridge, "up"));
        }
        var index = node.Ip[(node.Ip.LastIndexOf('.') + 1)..];
        var veth = $"rsl{_id}v{index}";
        Run("ip", "netns", "del", node.Namespace!);
        Run("ip", OnMachine("link", "del", veth));
        Ip("netns", "add", node.Namespace!);
        Ip(OnMachine("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", node.Namespace!));
        Ip(OnMachine("link", "set", veth, "master", Bridge));
        Ip(OnMachine("link", "set", veth, "up"));
        Ip("-n", node.Namespace!, "addr", "add", node.Ip + "/24", "dev", "eth0");
        Ip("-n", node.Namespace!, "link", "set", "eth0", "up");
        Ip("-n", node.Namespace!, "link", "set", "lo", "up");
    }

    public Task SetTagsAsync(string nodeId, IReadOnlyDictionary<string, string> tags, CancellationToken cancellationToken)
    {
        _state.Update(nodes =>
        {
            var node = nodes.Single(n => n.Id == nodeId && !n.Terminated);
            foreach (var (k, v) in tags) node.Tags[k] = v;
            return 0;
        });
        return Task.CompletedTask;
    }

    public Task TerminateNodeAsync(string nodeId, CancellationToken cancellationToken)
    {
        var record = _state.Read().SingleOrDefault(n => n.Id == nodeId && !n.Terminated);
        if (record is null) return Task.CompletedTask;
        if (record.Namespace is not null)
        {
            // The caller stopped the node's processes with `raysharp stop`; anything still in its namespace (started
            // by a setup command, say) goes with the node, as it would with a machine.
            var pids = Run("ip", "netns", "pids", record.Namespace).Output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            foreach (var pid in pids)
                if (int.TryParse(pid, NumberStyles.None, CultureInfo.InvariantCulture, out var p)) Posix.Kill(p, Posix.SIGKILL);
            Run("ip", "netns", "del", record.Namespace);
        }
        try { Directory.Delete(record.TempDir!, recursive: true); } catch (DirectoryNotFoundException) { }
        var left = _state.Update(nodes =>
        {
            nodes.RemoveAll(n => n.Id == nodeId);
            return nodes.Count(n => !n.Terminated);
        });
        if (left == 0 && _namespaces)
        {
            Run("ip", OnMachine("link", "del", Bridge));
            Run("ip", "netns", "del", MachineNamespace);
        }
        return Task.CompletedTask;
    }

    public ICommandRunner CommandRunner(ProviderNode node)
    {
        var record = _state.Read().Single(n => n.Id == node.Id);
        return new LocalCommandRunner(record.Id, record.Namespace, record.TempDir!, BinDir, netOnly: node.IsHead);
    }

    /// <summary>
    /// A name for the machine's own network namespace, where the bridge and the nodes' links live. The autoscaler runs
    /// on the head, itself a node in a namespace of its own, and reaches the machine's through this name, which the
    /// launcher makes (<c>ip netns attach</c>, from the machine's namespace) before it makes the first node.
    /// </summary>
    private string MachineNamespace => $"rsl{_id}m";

    private bool HasMachineNamespace => File.Exists(Path.Combine("/run/netns", MachineNamespace));

    /// <summary>An <c>ip</c> command on the machine's links (the bridge, the nodes' outer ends), from wherever this runs.</summary>
    private string[] OnMachine(params string[] args) => HasMachineNamespace ? ["netns", "exec", MachineNamespace, "ip", .. args] : args;

    private static void Ip(params string[] args)
    {
        var result = Run("ip", args);
        if (!result.Succeeded) throw new InvalidOperationException($"ip {string.Join(' ', args)} failed: {result.Output.Trim()}");
    }

    private static CommandResult Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file);
        foreach (var a in args) psi.ArgumentList.Add(a);
        return CommandScripts.RunProcessAsync(psi, null, null, CancellationToken.None).GetAwaiter().GetResult();
    }
}

/// <summary>Runs a process node's commands on this machine, in its network namespace and with its RAYSHARP_TEMP_DIR.</summary>
/// <param name="netOnly">
/// Enter the network namespace only (<c>nsenter --net</c>), not the mount namespace of its own that <c>ip netns exec</c>
/// adds: the head's autoscaler makes the namespaces of the nodes it launches, and a namespace made in a mount namespace
/// of the head's own would be seen there alone (launcher commands here could not reach the node).
/// </param>
internal sealed class LocalCommandRunner(string name, string? netns, string tempDir, string binDir, bool netOnly = false) : ICommandRunner
{
    public string Describe => netns is null ? $"process node {name}" : $"process node {name} (namespace {netns})";

    private ProcessStartInfo Shell(params string[] command)
    {
        var psi = new ProcessStartInfo(netns is null ? command[0] : netOnly ? "nsenter" : "ip");
        if (netns is not null && netOnly)
        {
            psi.ArgumentList.Add("--net=" + Path.Combine("/run/netns", netns));
            psi.ArgumentList.Add("--");
            psi.ArgumentList.Add(command[0]);
        }
        else if (netns is not null)
        {
            psi.ArgumentList.Add("netns");
            psi.ArgumentList.Add("exec");
            psi.ArgumentList.Add(netns);
            psi.ArgumentList.Add(command[0]);
        }
        foreach (var c in command.Skip(1)) psi.ArgumentList.Add(c);
        psi.Environment[SessionDirectory.RootEnvironmentVariable] = tempDir;
        return psi;
    }

    public Task<CommandResult> RunAsync(string command, IReadOnlyDictionary<string, string> environment, TextWriter? log, CancellationToken cancellationToken)
    {
        var env = new Dictionary<string, string>(environment, StringComparer.Ordinal) { [SessionDirectory.RootEnvironmentVariable] = tempDir };
        return CommandScripts.RunProcessAsync(Shell("bash", "--noprofile", "--norc", "-s"), CommandScripts.Script(command, env, CommandScripts.Quote(binDir)), log, cancellationToken);
    }

    public Task<CommandResult> SyncUpAsync(string localPath, string remotePath, IReadOnlyList<string> exclude, bool delete, TextWriter? log, CancellationToken cancellationToken) =>
        Rsync(localPath, ClusterConfigLoader.ExpandHome(remotePath), exclude, delete, log, cancellationToken);

    public Task<CommandResult> SyncDownAsync(string remotePath, string localPath, TextWriter? log, CancellationToken cancellationToken) =>
        Rsync(ClusterConfigLoader.ExpandHome(remotePath), localPath, [], delete: false, log, cancellationToken);

    private static Task<CommandResult> Rsync(string from, string to, IReadOnlyList<string> exclude, bool delete, TextWriter? log, CancellationToken cancellationToken)
    {
        var parent = Path.GetDirectoryName(Path.GetFullPath(to.TrimEnd('/')));
        if (parent is not null) Directory.CreateDirectory(parent);
        var psi = new ProcessStartInfo("rsync");
        psi.ArgumentList.Add("-a");
        if (delete) psi.ArgumentList.Add("--delete");
        foreach (var e in exclude) psi.ArgumentList.Add("--exclude=" + e);
        psi.ArgumentList.Add(from);
        psi.ArgumentList.Add(to);
        return CommandScripts.RunProcessAsync(psi, null, log, cancellationToken);
    }

    public ProcessStartInfo Interactive(string? command, IReadOnlyList<int> forwardPorts)
    {
        // Ports need no forwarding: the node's address is reachable from this machine.
        var psi = command is null ? Shell("bash", "-i") : Shell("bash", "-c", command);
        psi.UseShellExecute = false;
        psi.Environment["PATH"] = binDir + ":" + Environment.GetEnvironmentVariable("PATH");
        return psi;
    }
}
