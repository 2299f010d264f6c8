using RaySharp.Common;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs.Actors;

/// <summary>
/// The GCS's own node choice for actors, kept apart from the cluster's resource policy on purpose.
/// A dedicated actor's node is not chosen here: its lease request goes to a raylet (its owner's, else the head's),
/// whose <c>ClusterResourceScheduler</c> decides on the actor's resources and spills back, so dedicated actors already
/// go through the one cluster policy. Only lightweight actors are placed by the GCS itself, and that policy cannot
/// decide for them: their hosts take zero-resource leases, so a resource-weighing policy sees every node equally
/// idle, packs them all onto one node under SPREAD and moves them off the owner's node under DEFAULT. Hence the
/// round robin for SPREAD and the owner's node by default, with node affinity as the cluster policy treats it.
/// </summary>
internal sealed class ActorNodeSelector(GcsNodeManager nodes)
{
    private int _spreadNext;

    /// <summary>The raylet a dedicated actor's lease request goes to first: the owner's, while it lives, else the head's.</summary>
    public string FirstRaylet(RegisterActorRequest spec)
    {
        var alive = Alive();
        var owner = spec.OwnerRayletAddress;
        if (owner.Length > 0 && alive.Any(n => NodeAddress.Format(n.NodeIpAddress, n.NodeManagerPort) == owner)) return owner;
        var head = alive.FirstOrDefault(n => n.IsHeadNode) ?? alive[0];
        return NodeAddress.Format(head.NodeIpAddress, head.NodeManagerPort);
    }

    /// <summary>The node whose host worker a lightweight actor goes to.</summary>
    public string LightweightNode(RegisterActorRequest spec)
    {
        var alive = Alive();
        var strategy = spec.Strategy ?? new SchedulingStrategy();
        switch (strategy.Kind)
        {
            case SchedulingStrategyKind.SchedulingNodeAffinity when alive.Any(n => n.NodeId == strategy.NodeId):
                return strategy.NodeId;
            case SchedulingStrategyKind.SchedulingNodeAffinity when !strategy.Soft:
                throw new InvalidOperationException($"node {strategy.NodeId} is not alive and the node affinity is hard");
            case SchedulingStrategyKind.SchedulingSpread:
                return alive[Interlocked.Increment(ref _spreadNext) % alive.Count].NodeId;
        }
        var owner = spec.OwnerRayletAddress;
        return (alive.FirstOrDefault(n => NodeAddress.Format(n.NodeIpAddress, n.NodeManagerPort) == owner)
                ?? alive.FirstOrDefault(n => n.IsHeadNode) ?? alive[0]).NodeId;
    }

    private IReadOnlyList<NodeInfo> Alive()
    {
        // A draining node is about to leave: an actor placed there would die with it.
        var alive = nodes.GetAll(aliveOnly: true).Where(n => !n.IsDraining).ToList();
        return alive.Count > 0 ? alive : throw new NodeUnavailableException("no node of the cluster is alive (and not draining)");
    }
}

/// <summary>No node, or not the chosen one, is alive at this moment (nodes may be restarting): placement tries again.</summary>
internal sealed class NodeUnavailableException(string message) : Exception(message);
