using Grpc.Core;
using RaySharp.Raylet.Scheduling;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Raylet.Services;

internal sealed class NodeManagerServiceImpl(RayletOptions options, WorkerPool.WorkerPool pool, LeaseManager leases)
    : NodeManagerService.NodeManagerServiceBase
{
    public override Task<HealthCheckReply> HealthCheck(HealthCheckRequest request, ServerCallContext context) =>
        Task.FromResult(new HealthCheckReply { NodeId = options.NodeId });

    public override Task<RegisterWorkerReply> RegisterWorker(RegisterWorkerRequest request, ServerCallContext context)
    {
        if (!pool.OnRegistered(request.WorkerId, request.Pid, request.Port))
            throw new RpcException(new Status(StatusCode.PermissionDenied, $"worker {request.WorkerId} (pid {request.Pid}) was not started by this raylet"));
        return Task.FromResult(new RegisterWorkerReply { NodeId = options.NodeId, GcsAddress = options.GcsAddress });
    }

    public override Task<RequestWorkerLeaseReply> RequestWorkerLease(RequestWorkerLeaseRequest request, ServerCallContext context) =>
        leases.RequestAsync(request, context.CancellationToken);

    public override Task<ReturnWorkerReply> ReturnWorker(ReturnWorkerRequest request, ServerCallContext context)
    {
        if (!leases.Return(request.LeaseId, request.DisconnectWorker))
            throw new RpcException(new Status(StatusCode.NotFound, $"no active lease {request.LeaseId} on this node"));
        return Task.FromResult(new ReturnWorkerReply());
    }

    public override Task<NotifyWorkerBlockedReply> NotifyWorkerBlocked(NotifyWorkerBlockedRequest request, ServerCallContext context)
    {
        if (!leases.SetBlocked(request.WorkerId, request.Blocked))
            throw new RpcException(new Status(StatusCode.NotFound, $"worker {request.WorkerId} holds no lease on this node"));
        return Task.FromResult(new NotifyWorkerBlockedReply());
    }

    public override Task<DrainRayletReply> DrainRaylet(DrainRayletRequest request, ServerCallContext context) =>
        Task.FromResult(leases.TryDrain() is { } refusal
            ? new DrainRayletReply { IsAccepted = false, RejectionReasonMessage = refusal }
            : new DrainRayletReply { IsAccepted = true });

    public override Task<PrepareBundleResourcesReply> PrepareBundleResources(PrepareBundleResourcesRequest request, ServerCallContext context) =>
        Task.FromResult(leases.PrepareBundles(request.Bundles.Select(ToRequest).ToList()) is { } failure
            ? new PrepareBundleResourcesReply { Success = false, FailureMessage = failure }
            : new PrepareBundleResourcesReply { Success = true });

    public override Task<CommitBundleResourcesReply> CommitBundleResources(CommitBundleResourcesRequest request, ServerCallContext context)
    {
        // The GCS commits only what this node prepared: anything else means the two disagree about the group.
        if (leases.CommitBundles(request.Bundles.Select(b => (b.PlacementGroupId, b.BundleIndex)).ToList()) is { } failure)
            throw new RpcException(new Status(StatusCode.FailedPrecondition, failure));
        return Task.FromResult(new CommitBundleResourcesReply());
    }

    public override Task<CancelResourceReserveReply> CancelResourceReserve(CancelResourceReserveRequest request, ServerCallContext context)
    {
        // Unknown is success: a cancel after a failed prepare, or a retried one, finds nothing to give back.
        leases.CancelBundle(request.Bundle.PlacementGroupId, request.Bundle.BundleIndex);
        return Task.FromResult(new CancelResourceReserveReply());
    }

    public override Task<ReleaseUnusedBundlesReply> ReleaseUnusedBundles(ReleaseUnusedBundlesRequest request, ServerCallContext context)
    {
        leases.ReleaseUnusedBundles(request.BundlesInUse.Select(b => (b.PlacementGroupId, b.BundleIndex)).ToList());
        return Task.FromResult(new ReleaseUnusedBundlesReply());
    }

    private static BundleRequest ToRequest(BundleSpec b) => new(b.PlacementGroupId, b.BundleIndex, new Dictionary<string, double>(b.Resources, StringComparer.Ordinal));

    public override Task<GetNodeStatsReply> GetNodeStats(GetNodeStatsRequest request, ServerCallContext context)
    {
        var reply = new GetNodeStatsReply { NodeId = options.NodeId };
        reply.ResourcesTotal.Add(leases.TotalSnapshot());
        reply.ResourcesAvailable.Add(leases.AvailableSnapshot());
        foreach (var w in pool.Snapshot())
        {
            reply.Workers.Add(new WorkerStats
            {
                WorkerId = w.WorkerId,
                Pid = w.Pid,
                Port = w.Port,
                State = w.State.ToString().ToLowerInvariant(),
                LeaseId = w.LeaseId ?? "",
            });
        }
        (reply.PendingLeases, reply.InfeasibleLeases) = leases.QueueCounts();
        reply.RemoteNodeIds.Add(leases.RemoteNodes().Select(n => n.NodeId));
        reply.Draining = leases.IsDraining;
        foreach (var b in leases.Bundles())
        {
            var spec = new BundleSpec { PlacementGroupId = b.GroupId, BundleIndex = b.Index, NodeId = options.NodeId };
            foreach (var (name, quantity) in b.Resources) spec.Resources[name] = quantity;
            (b.State == BundleState.Committed ? reply.CommittedBundles : reply.PreparedBundles).Add(spec);
        }
        return Task.FromResult(reply);
    }
}
