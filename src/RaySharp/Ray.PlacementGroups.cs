using RaySharp.Common;
using RaySharp.CoreWorker.Execution;
using RaySharp.Rpc.Protocol;

namespace RaySharp;

/// <summary>Placement groups: resource bundles reserved together, all or none (Ray's <c>ray.util.placement_group</c>).</summary>
public static partial class Ray
{
    /// <summary>
    /// Asks the cluster to reserve <paramref name="bundles"/> (each a resource dictionary, such as
    /// <c>{"CPU": 1, "GPU": 1}</c>) together, placed by <paramref name="strategy"/>. Returns at once, as Ray does: the
    /// group is created in the background, and waits while no set of nodes can hold it (the autoscaler sees it as
    /// demand). Await <see cref="PlacementGroup.Ready"/> before relying on it; schedule into it with
    /// <see cref="SchedulingStrategy.PlacementGroup"/>.
    /// </summary>
    /// <param name="name">A name unique in the driver's namespace, to find the group with <see cref="GetPlacementGroup"/>. Default none.</param>
    /// <param name="lifetime">As actors': <see cref="ActorLifetime.Owned"/> (removed when the job ends) or <see cref="ActorLifetime.Detached"/> (until removed).</param>
    /// <exception cref="ArgumentException">No bundle, an empty bundle, a negative amount, or a name that is taken.</exception>
    public static PlacementGroup PlacementGroup(IEnumerable<IReadOnlyDictionary<string, double>> bundles,
        PlacementStrategy strategy = PlacementStrategy.Pack, string? name = null, ActorLifetime lifetime = ActorLifetime.Owned) =>
        PlacementGroupAsync(bundles, strategy, name, lifetime).GetAwaiter().GetResult();

    /// <summary>As <see cref="PlacementGroup"/>, awaited.</summary>
    public static async Task<PlacementGroup> PlacementGroupAsync(IEnumerable<IReadOnlyDictionary<string, double>> bundles,
        PlacementStrategy strategy = PlacementStrategy.Pack, string? name = null, ActorLifetime lifetime = ActorLifetime.Owned,
        CancellationToken cancellationToken = default)
    {
        var checkedBundles = RaySharp.PlacementGroup.CheckBundles(bundles);
        var context = ActorContext();
        var spec = new PlacementGroupTableData
        {
            PlacementGroupId = UniqueId.New(),
            Name = name ?? "",
            RayNamespace = context.Namespace,
            Strategy = RaySharp.PlacementGroup.ToProto(strategy),
            CreatorJobId = context.JobId,
            IsDetached = lifetime == ActorLifetime.Detached,
        };
        for (var i = 0; i < checkedBundles.Count; i++)
        {
            var bundle = new BundleSpec { PlacementGroupId = spec.PlacementGroupId, BundleIndex = i };
            foreach (var (resource, amount) in checkedBundles[i]) bundle.Resources[resource] = amount;
            spec.Bundles.Add(bundle);
        }
        var reply = await Runtime.Gcs.PlacementGroups.CreatePlacementGroupAsync(new CreatePlacementGroupRequest { Spec = spec },
            cancellationToken: cancellationToken).ResponseAsync.ConfigureAwait(false);
        return reply.Accepted
            ? new PlacementGroup(spec.PlacementGroupId, checkedBundles)
            : throw new ArgumentException(reply.ErrorMessage);
    }

    /// <summary>
    /// Removes the group: its bundles are freed on their nodes and the tasks and actors running in them are killed, as
    /// Ray's <c>remove_placement_group</c>. Removing a removed group does nothing.
    /// </summary>
    public static void RemovePlacementGroup(PlacementGroup placementGroup) =>
        RemovePlacementGroupAsync(placementGroup).GetAwaiter().GetResult();

    /// <summary>As <see cref="RemovePlacementGroup"/>, awaited.</summary>
    public static async Task RemovePlacementGroupAsync(PlacementGroup placementGroup, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(placementGroup);
        await Runtime.Gcs.PlacementGroups.RemovePlacementGroupAsync(new RemovePlacementGroupRequest { PlacementGroupId = placementGroup.Id },
            cancellationToken: cancellationToken).ResponseAsync.ConfigureAwait(false);
    }

    /// <summary>The group named <paramref name="name"/> in <paramref name="ns"/> (default: the driver's namespace).</summary>
    /// <exception cref="ArgumentException">No live group has that name there.</exception>
    public static PlacementGroup GetPlacementGroup(string name, string? ns = null) =>
        GetPlacementGroupAsync(name, ns).GetAwaiter().GetResult();

    /// <summary>As <see cref="GetPlacementGroup"/>, awaited.</summary>
    public static async Task<PlacementGroup> GetPlacementGroupAsync(string name, string? ns = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        var space = ns ?? ActorContext().Namespace;
        var reply = await Runtime.Gcs.PlacementGroups.GetNamedPlacementGroupAsync(new GetNamedPlacementGroupRequest { Name = name, RayNamespace = space },
            cancellationToken: cancellationToken).ResponseAsync.ConfigureAwait(false);
        return reply.Found && reply.Info.State != Rpc.Protocol.PlacementGroupState.Removed
            ? RaySharp.PlacementGroup.From(reply.Info)
            : throw new ArgumentException($"no placement group is named '{name}' in namespace '{space}'; check the name, or pass the namespace it was created in", nameof(name));
    }

    /// <summary>Every placement group the cluster holds, removed ones left out (Ray's <c>placement_group_table()</c>).</summary>
    public static IReadOnlyList<PlacementGroupInfo> PlacementGroups() => PlacementGroupsAsync().GetAwaiter().GetResult();

    /// <summary>As <see cref="PlacementGroups"/>, awaited.</summary>
    public static async Task<IReadOnlyList<PlacementGroupInfo>> PlacementGroupsAsync(CancellationToken cancellationToken = default)
    {
        var reply = await Runtime.Gcs.PlacementGroups.GetAllPlacementGroupAsync(new GetAllPlacementGroupRequest(),
            cancellationToken: cancellationToken).ResponseAsync.ConfigureAwait(false);
        return reply.PlacementGroups.Select(PlacementGroupInfo.From).ToList();
    }

    /// <summary>
    /// Inside a task or actor scheduled in a placement group: that group; null in a driver or outside any group (Ray's
    /// <c>get_current_placement_group</c>).
    /// </summary>
    public static PlacementGroup? GetCurrentPlacementGroup()
    {
        if (RunningTask.Current?.PlacementGroupId is not { } id) return null;
        var reply = Runtime.Gcs.PlacementGroups.GetPlacementGroup(new GetPlacementGroupRequest { PlacementGroupId = id });
        return reply.Found ? RaySharp.PlacementGroup.From(reply.Info) : new PlacementGroup(id, []);
    }
}
