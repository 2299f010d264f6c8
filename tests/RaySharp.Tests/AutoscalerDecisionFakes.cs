using Microsoft.Extensions.Time.Testing;
using RaySharp.Autoscaler.Config;
using RaySharp.Autoscaler.Providers;
using RaySharp.Autoscaler.Scaling;

namespace RaySharp.Tests;

/// <summary>A provider that hands out addresses 10.0.0.N and records what it was asked; it can be told to fail.</summary>
internal sealed class RecordingNodeProvider : INodeProvider
{
    private readonly List<ProviderNode> _nodes = [];
    private int _next = 1;

    public List<(string Type, int Count)> Creations { get; } = [];

    public List<string> Terminations { get; } = [];

    /// <summary>Create calls to throw, from the next one on.</summary>
    public int FailNextCreates { get; set; }

    /// <summary>Nodes the provider still has (a local provider runs out of listed machines).</summary>
    public int Capacity { get; set; } = int.MaxValue;

    public List<string>? Log { get; set; }

    public IReadOnlyList<ProviderNode> Nodes => [.. _nodes];

    public ProviderNode AddHead()
    {
        var head = new ProviderNode("head", "10.0.0.100", new Dictionary<string, string> { [NodeTags.Kind] = NodeTags.KindHead, [NodeTags.NodeType] = "head" });
        _nodes.Add(head);
        return head;
    }

    public Task<IReadOnlyList<ProviderNode>> NonTerminatedNodesAsync(CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<ProviderNode>>([.. _nodes]);

    public Task<IReadOnlyList<ProviderNode>> CreateNodesAsync(NodeTypeConfig type, IReadOnlyDictionary<string, string> tags, int count, CancellationToken cancellationToken)
    {
        Creations.Add((tags[NodeTags.NodeType], count));
        if (FailNextCreates > 0)
        {
            FailNextCreates--;
            throw new InvalidOperationException("quota exceeded");
        }
        var made = new List<ProviderNode>();
        for (var i = 0; i < count && Capacity > 0; i++, Capacity--)
        {
            var n = _next++;
            made.Add(new ProviderNode($"node-{n}", $"10.0.0.{n}", new Dictionary<string, string>(tags)));
        }
        _nodes.AddRange(made);
        return Task.FromResult<IReadOnlyList<ProviderNode>>(made);
    }

    public Task SetTagsAsync(string nodeId, IReadOnlyDictionary<string, string> tags, CancellationToken cancellationToken) => Task.CompletedTask;

    public Task TerminateNodeAsync(string nodeId, CancellationToken cancellationToken)
    {
        Terminations.Add(nodeId);
        Log?.Add("terminate " + nodeId);
        _nodes.RemoveAll(n => n.Id == nodeId);
        return Task.CompletedTask;
    }

    public ICommandRunner CommandRunner(ProviderNode node) => throw new NotSupportedException("the decision tests run no commands");
}

/// <summary>One autoscaler over a recording provider and a fake clock, and the snapshots a test feeds it.</summary>
internal sealed class AutoscalerHarness
{
    public static readonly Dictionary<string, double> Cpu4 = new() { ["CPU"] = 4 };
    public static readonly Dictionary<string, double> Gpu = new() { ["CPU"] = 8, ["GPU"] = 1 };

    public FakeTimeProvider Clock { get; } = new(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));

    public RecordingNodeProvider Provider { get; } = new();

    public List<string> SetUp { get; } = [];

    /// <summary>Setups of nodes to throw.</summary>
    public bool FailSetups { get; set; }

    public ClusterConfig Config { get; }

    public StandardAutoscaler Autoscaler { get; }

    public AutoscalerHarness(
        ClusterConfig config, Func<NodeLoad, CancellationToken, Task<bool>>? drainNode = null)
    {
        Config = config;
        Autoscaler = new StandardAutoscaler(config, Provider, SetUpAsync, Clock, new AutoscalerOptions(), drainNode);
    }

    public static ClusterConfig ClusterConfig(int maxWorkers, double upscalingSpeed = 1, double idleMinutes = 5,
        params (string Name, Dictionary<string, double> Resources, int Min, int Max)[] types)
    {
        var config = new ClusterConfig
        {
            SourceFile = "/configs/cluster.yaml",
            Provider = new ProviderConfig { Type = "process" },
            MaxWorkers = maxWorkers,
            UpscalingSpeed = upscalingSpeed,
            IdleTimeoutMinutes = idleMinutes,
            HeadNodeType = "head",
        };
        config.AvailableNodeTypes["head"] = new NodeTypeConfig { MaxWorkers = 0 };
        foreach (var (name, resources, min, max) in types)
            config.AvailableNodeTypes[name] = new NodeTypeConfig { Resources = resources, MinWorkers = min, MaxWorkers = max };
        return config;
    }

    private Task SetUpAsync(ProviderNode node, CancellationToken cancellationToken)
    {
        lock (SetUp) SetUp.Add(node.Id);
        return FailSetups ? throw new InvalidOperationException("ssh: connection refused") : Task.CompletedTask;
    }

    /// <summary>One tick; the setups it starts are let finish, as they would by the next tick.</summary>
    public async Task<AutoscalerUpdate> TickAsync(LoadSnapshot snapshot)
    {
        var update = await Autoscaler.UpdateAsync(snapshot, CancellationToken.None);
        await Autoscaler.WhenSetupsDoneAsync();
        return update;
    }

    /// <summary>A live node of the provider as the GCS would report it: its type's resources, <paramref name="used"/> of them in use.</summary>
    public NodeLoad Load(ProviderNode node, double used = 0, DateTimeOffset? idleSince = null, bool busy = false, bool holdsObjects = false, bool alive = true)
    {
        var type = node.Tag(NodeTags.NodeType)!;
        var total = Config.AvailableNodeTypes[type].Resources;
        var available = total.ToDictionary(r => r.Key, r => r.Key == "CPU" ? r.Value - used : r.Value);
        var running = busy || used > 0;
        return new NodeLoad(node.Id, node.Ip)
        {
            NodeType = type,
            Total = total,
            Available = available,
            IdleSince = running ? null : idleSince ?? Clock.GetUtcNow(),
            HoldsPrimaryObjects = holdsObjects,
            Alive = alive,
            IsHead = node.IsHead,
        };
    }

    /// <summary>Every node the provider has, joined, idle since now unless <paramref name="load"/> says otherwise.</summary>
    public IReadOnlyList<NodeLoad> AllJoined(Func<ProviderNode, NodeLoad>? load = null) =>
        [.. Provider.Nodes.Select(n => load?.Invoke(n) ?? Load(n))];

    public static IReadOnlyList<ResourceDemand> Demand(params (Dictionary<string, double> Shape, int Count)[] demands) =>
        [.. demands.Select(d => new ResourceDemand(d.Shape, d.Count))];

    public static Dictionary<string, double> Shape(string name, double quantity) => new() { [name] = quantity };

    public int Launched(string type) => Provider.Creations.Where(c => c.Type == type).Sum(c => c.Count);
}
