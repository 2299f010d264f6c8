using RaySharp.Autoscaler.Config;

namespace RaySharp.Autoscaler.Providers;

/// <summary>
/// On-prem machines reached over SSH (<c>provider: {type: local, head_ip, worker_ips}</c>), as Ray's local provider:
/// the machines exist already, so "creating" a node takes a listed machine that is not in use and "terminating" gives it
/// back. Which machines are in use is kept in the cluster's state file.
/// </summary>
internal sealed class LocalNodeProvider(ClusterConfig config, ClusterState state) : INodeProvider
{
    public Task<IReadOnlyList<ProviderNode>> NonTerminatedNodesAsync(CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<ProviderNode>>(state.Read().Where(n => !n.Terminated).Select(n => n.ToNode()).ToList());

    public Task<IReadOnlyList<ProviderNode>> CreateNodesAsync(NodeTypeConfig type, IReadOnlyDictionary<string, string> tags, int count, CancellationToken cancellationToken)
    {
        var head = tags.TryGetValue(NodeTags.Kind, out var kind) && kind == NodeTags.KindHead;
        var created = state.Update(nodes =>
        {
            var inUse = nodes.Where(n => !n.Terminated).Select(n => n.Id).ToHashSet(StringComparer.OrdinalIgnoreCase);
            var free = (head ? [config.Provider.HeadIp!] : config.Provider.WorkerIps).Where(ip => !inUse.Contains(ip)).Take(count).ToList();
            var made = new List<ProviderNode>();
            foreach (var ip in free)
            {
                nodes.RemoveAll(n => n.Id.Equals(ip, StringComparison.OrdinalIgnoreCase));
                var record = new NodeRecord { Id = ip, Ip = ip, Tags = new Dictionary<string, string>(tags, StringComparer.Ordinal) };
                record.Tags[NodeTags.Name] = head ? "head" : "worker-" + ip;
                nodes.Add(record);
                made.Add(record.ToNode());
            }
            return made;
        });
        return Task.FromResult<IReadOnlyList<ProviderNode>>(created);
    }

    public Task SetTagsAsync(string nodeId, IReadOnlyDictionary<string, string> tags, CancellationToken cancellationToken)
    {
        state.Update(nodes =>
        {
            var node = nodes.Single(n => n.Id == nodeId);
            foreach (var (k, v) in tags) node.Tags[k] = v;
            return 0;
        });
        return Task.CompletedTask;
    }

    public Task TerminateNodeAsync(string nodeId, CancellationToken cancellationToken)
    {
        state.Update(nodes =>
        {
            foreach (var n in nodes.Where(n => n.Id == nodeId)) n.Terminated = true;
            return 0;
        });
        return Task.CompletedTask;
    }

    public ICommandRunner CommandRunner(ProviderNode node) =>
        new SshCommandRunner(node.Ip, config.Auth.SshUser, config.Auth.SshPrivateKey, state.KnownHostsFile);
}
