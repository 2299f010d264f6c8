using RaySharp.Common;
using RaySharp.Rpc.Protocol;
using ProtoStrategy = RaySharp.Rpc.Protocol.PlacementStrategy;
using ProtoState = RaySharp.Rpc.Protocol.PlacementGroupState;

namespace RaySharp;

/// <summary>How a placement group's bundles are spread over nodes, as Ray's strategies.</summary>
public enum PlacementStrategy
{
    /// <summary>On as few nodes as possible; the bundles may span nodes when one cannot hold them all.</summary>
    Pack,

    /// <summary>On distinct nodes where possible; bundles share a node when there are not enough.</summary>
    Spread,

    /// <summary>All on one node, or the group waits until a node can hold them all.</summary>
    StrictPack,

    /// <summary>Each on its own node, or the group waits until there are enough nodes.</summary>
    StrictSpread,
}

/// <summary>Where a placement group is in its life.</summary>
public enum PlacementGroupState
{
    /// <summary>Waiting for its bundles to be placed: no room now, no node that fits, or between attempts.</summary>
    Pending,

    /// <summary>Every bundle is reserved on its node and being committed.</summary>
    Prepared,

    /// <summary>Every bundle is placed: tasks and actors can run in it.</summary>
    Created,

    /// <summary>Removed by <see cref="Ray.RemovePlacementGroup(PlacementGroup)"/> or when its job ended.</summary>
    Removed,

    /// <summary>Created, then a node holding some of its bundles died: those are being placed again.</summary>
    Rescheduling,
}

/// <summary>One bundle of a placement group: what it reserves, and on which node once placed.</summary>
/// <param name="Index">Its position in the group, as <see cref="SchedulingStrategy.PlacementGroup"/> takes it.</param>
/// <param name="NodeId">The node holding it; null while it is not placed.</param>
public sealed record BundleInfo(int Index, IReadOnlyDictionary<string, double> Resources, string? NodeId);

/// <summary>A placement group as the cluster holds it now (Ray's <c>placement_group_table</c> row).</summary>
/// <param name="StateMessage">Why it is not created yet, or why it was removed; empty otherwise.</param>
/// <param name="Infeasible">No set of the cluster's nodes could hold it now (it waits for nodes that fit).</param>
public sealed record PlacementGroupInfo(
    string Id, string? Name, string Namespace, PlacementStrategy Strategy, PlacementGroupState State,
    IReadOnlyList<BundleInfo> Bundles, bool Detached, string StateMessage, bool Infeasible)
{
    internal static PlacementGroupInfo From(PlacementGroupTableData row) => new(
        row.PlacementGroupId, row.Name.Length > 0 ? row.Name : null, row.RayNamespace, (PlacementStrategy)(int)row.Strategy,
        (PlacementGroupState)(int)row.State,
        row.Bundles.Select(b => new BundleInfo(b.BundleIndex, new Dictionary<string, double>(b.Resources, StringComparer.Ordinal),
            b.NodeId.Length > 0 ? b.NodeId : null)).ToList(),
        row.IsDetached, row.StateMessage, row.Infeasible);
}

/// <summary>
/// A handle to a placement group: a set of resource bundles reserved together, all or none, for the tasks and actors
/// scheduled in it with <see cref="SchedulingStrategy.PlacementGroup"/>. Made by
/// <see cref="Ray.PlacementGroup(IEnumerable{IReadOnlyDictionary{string, double}}, PlacementStrategy, string?, ActorLifetime)"/>;
/// the handle is a value (its id), so it can be passed to tasks and actors.
/// </summary>
public sealed class PlacementGroup : IEquatable<PlacementGroup>
{
    internal PlacementGroup(string id, IReadOnlyList<IReadOnlyDictionary<string, double>> bundles)
    {
        Id = id;
        BundleSpecs = bundles;
    }

    public string Id { get; }

    /// <summary>What each bundle reserves, by index.</summary>
    public IReadOnlyList<IReadOnlyDictionary<string, double>> BundleSpecs { get; }

    public int BundleCount => BundleSpecs.Count;

    /// <summary>
    /// Completes once every bundle is placed (the group is <see cref="PlacementGroupState.Created"/>); a group that
    /// waits for resources keeps it waiting, as Ray's <c>pg.ready()</c>.
    /// </summary>
    /// <exception cref="InvalidOperationException">The group was removed before it was created, or while waiting.</exception>
    public async Task Ready(CancellationToken cancellationToken = default)
    {
        while (!await WaitAsync(TimeSpan.FromSeconds(30), cancellationToken).ConfigureAwait(false))
        {
        }
    }

    /// <summary>Waits at most <paramref name="timeout"/> for the group to be created; true when it is.</summary>
    /// <exception cref="InvalidOperationException">The group was removed.</exception>
    public bool Wait(TimeSpan timeout) => WaitAsync(timeout).GetAwaiter().GetResult();

    /// <summary>As <see cref="Wait"/>, awaited.</summary>
    public async Task<bool> WaitAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        if (timeout < TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "the timeout cannot be negative");
        var gcs = Ray.CurrentRuntime.Gcs.PlacementGroups;
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var left = deadline - DateTime.UtcNow;
            // The GCS answers each wait within 30 s; a longer one asks again. Zero asks once without waiting.
            var reply = await gcs.WaitPlacementGroupUntilReadyAsync(new WaitPlacementGroupUntilReadyRequest
            {
                PlacementGroupId = Id,
                TimeoutMs = Math.Max(1, (long)Math.Min(left.TotalMilliseconds, 30_000)),
            }, cancellationToken: cancellationToken).ResponseAsync.ConfigureAwait(false);
            if (reply.Ready) return true;
            if (reply.State == ProtoState.Removed)
                throw new InvalidOperationException($"placement group {Id} was removed (by Ray.RemovePlacementGroup, or when the job that owned it ended); create a new one");
            if (DateTime.UtcNow >= deadline) return false;
        }
    }

    /// <summary>The group as the cluster holds it now: state, and the node of each bundle.</summary>
    public PlacementGroupInfo Info() => InfoAsync().GetAwaiter().GetResult();

    /// <summary>As <see cref="Info"/>, awaited.</summary>
    public async Task<PlacementGroupInfo> InfoAsync(CancellationToken cancellationToken = default)
    {
        var reply = await Ray.CurrentRuntime.Gcs.PlacementGroups.GetPlacementGroupAsync(
            new GetPlacementGroupRequest { PlacementGroupId = Id }, cancellationToken: cancellationToken).ResponseAsync.ConfigureAwait(false);
        return reply.Found
            ? PlacementGroupInfo.From(reply.Info)
            : throw new InvalidOperationException($"the cluster knows no placement group {Id}");
    }

    public bool Equals(PlacementGroup? other) => other is not null && other.Id == Id;

    public override bool Equals(object? obj) => Equals(obj as PlacementGroup);

    public override int GetHashCode() => Id.GetHashCode(StringComparison.Ordinal);

    public override string ToString() => $"PlacementGroup({Id})";

    internal static PlacementGroup From(PlacementGroupTableData row) =>
        new(row.PlacementGroupId, row.Bundles.OrderBy(b => b.BundleIndex)
            .Select(b => (IReadOnlyDictionary<string, double>)new Dictionary<string, double>(b.Resources, StringComparer.Ordinal)).ToList());

    /// <summary>The bundles checked as Ray checks them: at least one, each asking for something, no negative amount.</summary>
    internal static List<IReadOnlyDictionary<string, double>> CheckBundles(IEnumerable<IReadOnlyDictionary<string, double>> bundles)
    {
        ArgumentNullException.ThrowIfNull(bundles);
        var list = new List<IReadOnlyDictionary<string, double>>();
        foreach (var bundle in bundles)
        {
            var i = list.Count;
            if (bundle is null || bundle.Count == 0 || bundle.Values.All(v => v == 0))
                throw new ArgumentException($"bundle {i} asks for nothing: each bundle reserves some resource, for example {{\"CPU\": 1}}", nameof(bundles));
            foreach (var (name, amount) in bundle)
            {
                if (string.IsNullOrWhiteSpace(name) || !double.IsFinite(amount) || amount < 0)
                    throw new ArgumentException($"bundle {i} asks for {amount} of '{name}': give resource names with amounts of zero or more", nameof(bundles));
                if (BundleResources.IsGroupResource(name))
                    throw new ArgumentException($"bundle {i} asks for '{name}', a placement group's own resource: ask for the node's resources (CPU, GPU, custom ones)", nameof(bundles));
            }
            list.Add(new Dictionary<string, double>(bundle.Where(kv => kv.Value > 0), StringComparer.Ordinal));
        }
        return list.Count > 0 ? list : throw new ArgumentException("a placement group needs at least one bundle", nameof(bundles));
    }

    internal static ProtoStrategy ToProto(PlacementStrategy strategy) => Enum.IsDefined(strategy)
        ? (ProtoStrategy)(int)strategy
        : throw new ArgumentOutOfRangeException(nameof(strategy), strategy, "not a placement strategy: Pack, Spread, StrictPack or StrictSpread");
}
