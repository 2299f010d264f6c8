using RaySharp.Autoscaler.Config;
using RaySharp.Autoscaler.Providers;

namespace RaySharp.Autoscaler.Monitor;

/// <summary>
/// The launcher's provider as the autoscaler sees it: a node it terminates is first stopped (<c>raysharp stop</c> on
/// the node, as <c>raysharp down</c> does), so no raylet is left running on a machine given back.
/// </summary>
internal sealed class StoppingNodeProvider(ClusterLauncher launcher) : INodeProvider
{
    private INodeProvider Inner => launcher.Provider;

    public Task<IReadOnlyList<ProviderNode>> NonTerminatedNodesAsync(CancellationToken cancellationToken) => Inner.NonTerminatedNodesAsync(cancellationToken);

    public Task<IReadOnlyList<ProviderNode>> CreateNodesAsync(NodeTypeConfig type, IReadOnlyDictionary<string, string> tags, int count, CancellationToken cancellationToken) =>
        Inner.CreateNodesAsync(type, tags, count, cancellationToken);

    public Task SetTagsAsync(string nodeId, IReadOnlyDictionary<string, string> tags, CancellationToken cancellationToken) => Inner.SetTagsAsync(nodeId, tags, cancellationToken);

    public async Task TerminateNodeAsync(string nodeId, CancellationToken cancellationToken)
    {
        var node = (await Inner.NonTerminatedNodesAsync(cancellationToken).ConfigureAwait(false)).FirstOrDefault(n => n.Id == nodeId);
        if (node is null) return;
        var problems = await launcher.StopAndTerminateAsync(node, cancellationToken).ConfigureAwait(false);
        // Given back either way (a node whose stop failed is still gone with its machine); the failure is shown.
        if (problems.Count > 0) throw new InvalidOperationException(problems[0]);
    }

    public ICommandRunner CommandRunner(ProviderNode node) => Inner.CommandRunner(node);
}
