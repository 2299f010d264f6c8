using RaySharp.Autoscaler.Config;

namespace RaySharp.Autoscaler.Providers;

/// <summary>
/// Where nodes come from. The launcher and the autoscaler see machines only through this interface, so a cloud or
/// Kubernetes provider is one more implementation: create nodes of a type with tags, terminate them, list the live ones
/// with their tags and addresses, and reach them to run commands and copy files.
/// </summary>
internal interface INodeProvider
{
    /// <summary>Every node of the cluster that is not terminated, with its tags.</summary>
    Task<IReadOnlyList<ProviderNode>> NonTerminatedNodesAsync(CancellationToken cancellationToken);

    /// <summary>Makes <paramref name="count"/> nodes of a type with <paramref name="tags"/>; may make fewer when the provider has no more machines.</summary>
    Task<IReadOnlyList<ProviderNode>> CreateNodesAsync(NodeTypeConfig type, IReadOnlyDictionary<string, string> tags, int count, CancellationToken cancellationToken);

    /// <summary>Adds or replaces tags of a node.</summary>
    Task SetTagsAsync(string nodeId, IReadOnlyDictionary<string, string> tags, CancellationToken cancellationToken);

    /// <summary>Gives the node back (what runs on it was stopped by the caller first).</summary>
    Task TerminateNodeAsync(string nodeId, CancellationToken cancellationToken);

    /// <summary>How to run commands on the node and copy files to and from it.</summary>
    ICommandRunner CommandRunner(ProviderNode node);
}

/// <summary>A node as its provider knows it.</summary>
/// <param name="Id">The provider's id of the node (for <c>local</c>, its address).</param>
/// <param name="Ip">The address the cluster's processes reach the node at.</param>
internal sealed record ProviderNode(string Id, string Ip, IReadOnlyDictionary<string, string> Tags)
{
    public string? Tag(string key) => Tags.TryGetValue(key, out var v) ? v : null;

    public bool IsHead => Tag(NodeTags.Kind) == NodeTags.KindHead;
}

/// <summary>The tags the launcher puts on nodes (Ray's <c>ray-node-*</c> tags).</summary>
internal static class NodeTags
{
    public const string Kind = "raysharp-node-kind";
    public const string KindHead = "head";
    public const string KindWorker = "worker";
    /// <summary>The key of available_node_types the node is.</summary>
    public const string NodeType = "raysharp-user-node-type";
    public const string Name = "raysharp-node-name";
    /// <summary>The updater's state: see <see cref="NodeStatus"/>.</summary>
    public const string Status = "raysharp-node-status";
    /// <summary>Hash of what the node's setup depends on (file mounts, setup commands, the RaySharp build): unchanged means setup can be skipped.</summary>
    public const string RuntimeConfig = "raysharp-runtime-config";
}

/// <summary>The node updater's states, as Ray names them.</summary>
internal static class NodeStatus
{
    public const string Uninitialized = "uninitialized";
    public const string WaitingForSsh = "waiting-for-ssh";
    public const string SyncingFiles = "syncing-files";
    public const string SettingUp = "setting-up";
    public const string UpToDate = "up-to-date";
    public const string UpdateFailed = "update-failed";
}
