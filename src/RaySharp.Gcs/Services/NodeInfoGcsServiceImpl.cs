using Grpc.Core;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs.Services;

internal sealed class NodeInfoGcsServiceImpl(GcsNodeManager nodes, GcsServerOptions options, GcsClusterIdentity identity, RpcChannelPool channels)
    : NodeInfoGcsService.NodeInfoGcsServiceBase
{
    public override Task<GetClusterInfoReply> GetClusterInfo(GetClusterInfoRequest request, ServerCallContext context) =>
        Task.FromResult(identity.ToReply());

    public override async Task<RegisterNodeReply> RegisterNode(RegisterNodeRequest request, ServerCallContext context)
    {
        if (!await nodes.RegisterAsync(request.NodeInfo).ConfigureAwait(false))
            throw new RpcException(new Status(StatusCode.FailedPrecondition,
                $"node {request.NodeInfo.NodeId} was already declared dead; a restarted raylet must register with a new node id"));
        return new RegisterNodeReply
        {
            ClusterId = identity.ClusterId,
            HealthCheckPeriodMs = (long)options.HealthCheckPeriod.TotalMilliseconds,
            HealthCheckFailureThreshold = options.HealthCheckFailureThreshold,
        };
    }

    public override async Task<UnregisterNodeReply> UnregisterNode(UnregisterNodeRequest request, ServerCallContext context)
    {
        await nodes.MarkDeadAsync(request.NodeId, string.IsNullOrEmpty(request.Reason) ? "unregistered" : request.Reason).ConfigureAwait(false);
        return new UnregisterNodeReply();
    }

    public override Task<GetAllNodeInfoReply> GetAllNodeInfo(GetAllNodeInfoRequest request, ServerCallContext context)
    {
        var reply = new GetAllNodeInfoReply();
        reply.Nodes.Add(nodes.GetAll(request.AliveOnly));
        return Task.FromResult(reply);
    }

    public override Task<ReportResourceUsageReply> ReportResourceUsage(ReportResourceUsageRequest request, ServerCallContext context) =>
        Task.FromResult(new ReportResourceUsageReply { NodeAlive = nodes.UpdateResourceUsage(request), GcsRestarts = identity.GcsRestarts });

    /// <summary>
    /// Forwards the drain to the node's raylet, which alone knows whether it is idle at this moment (a lease may be on
    /// its way); only an accepted drain marks the node draining.
    /// </summary>
    public override async Task<DrainNodeReply> DrainNode(DrainNodeRequest request, ServerCallContext context)
    {
        if (nodes.Get(request.NodeId) is not { State: NodeState.Alive } node) return new DrainNodeReply { IsAccepted = true };
        var raylet = new NodeManagerService.NodeManagerServiceClient(channels.Get(node.NodeIpAddress, node.NodeManagerPort));
        var reply = await raylet.DrainRayletAsync(new DrainRayletRequest { Reason = request.Reason, ReasonMessage = request.ReasonMessage },
            deadline: DateTime.UtcNow.AddSeconds(5), cancellationToken: context.CancellationToken).ConfigureAwait(false);
        if (reply.IsAccepted)
            await nodes.MarkDrainingAsync(node.NodeId, request.ReasonMessage.Length > 0 ? request.ReasonMessage : request.Reason.ToString()).ConfigureAwait(false);
        return new DrainNodeReply { IsAccepted = reply.IsAccepted, RejectionReasonMessage = reply.RejectionReasonMessage };
    }
}
