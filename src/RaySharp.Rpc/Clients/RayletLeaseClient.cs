using RaySharp.Common;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Rpc.Clients;

/// <summary>
/// Asks raylets for a worker lease, following spillback: the raylet asked first either grants, or names the node that
/// should run the shape, which must then grant or queue (never spill again). The lessee's half of the raylet's lease
/// protocol (Ray's raylet client), here because it has two lessees that must follow it alike: task owners (the core
/// worker's <c>TaskSubmitter</c>) and the GCS placing actors. The raylet's half is <c>Raylet/Scheduling/LeaseManager</c>;
/// the contract, <c>node_manager.proto</c>.
/// </summary>
internal static class RayletLeaseClient
{
    public static async Task<(RequestWorkerLeaseReply Reply, string RayletAddress)> RequestAsync(
        RpcChannelPool channels, string rayletAddress, Func<RequestWorkerLeaseRequest> newRequest, bool grantOrReject = false,
        Action<Task<RequestWorkerLeaseReply>>? onPending = null, CancellationToken cancellationToken = default)
    {
        var (origin, originGrantOrReject) = (rayletAddress, grantOrReject);
        var pause = TimeSpan.FromMilliseconds(100);
        while (true)
        {
            var request = newRequest();
            request.GrantOrReject = grantOrReject;
            var client = new NodeManagerService.NodeManagerServiceClient(channels.Get(rayletAddress));
            RequestWorkerLeaseReply reply;
            try
            {
                var call = client.RequestWorkerLeaseAsync(request, cancellationToken: cancellationToken).ResponseAsync;
                onPending?.Invoke(call);
                reply = await call.ConfigureAwait(false);
            }
            catch (Grpc.Core.RpcException e) when (rayletAddress != origin && e.StatusCode is Grpc.Core.StatusCode.Unavailable or Grpc.Core.StatusCode.DeadlineExceeded)
            {
                // The node it was spilled to died before its death was known: ask the first raylet again, which
                // picks another node once the GCS has marked that one dead.
                await Task.Delay(pause, cancellationToken).ConfigureAwait(false);
                pause = TimeSpan.FromMilliseconds(Math.Min(pause.TotalMilliseconds * 2, 2000));
                (rayletAddress, grantOrReject) = (origin, originGrantOrReject);
                continue;
            }
            if (reply.WorkerAddress is not null) return (reply, rayletAddress);
            if (reply.Rejected) throw new InvalidOperationException(reply.FailureMessage);
            if (reply.Draining)
            {
                // The node it was spilled to is draining and nothing else could take the shape: the first raylet, whose
                // view marks that node draining by now, chooses again.
                await Task.Delay(pause, cancellationToken).ConfigureAwait(false);
                pause = TimeSpan.FromMilliseconds(Math.Min(pause.TotalMilliseconds * 2, 2000));
                (rayletAddress, grantOrReject) = (origin, originGrantOrReject);
                continue;
            }
            rayletAddress = NodeAddress.Format(reply.RetryAtIpAddress, reply.RetryAtPort);
            grantOrReject = true;
        }
    }

    /// <summary>Hands a lease back; <paramref name="disconnect"/> has the raylet stop the worker instead of reusing it.</summary>
    public static async Task ReturnAsync(RpcChannelPool channels, string rayletAddress, string leaseId, bool disconnect)
    {
        try
        {
            var client = new NodeManagerService.NodeManagerServiceClient(channels.Get(rayletAddress));
            await client.ReturnWorkerAsync(new ReturnWorkerRequest { LeaseId = leaseId, DisconnectWorker = disconnect },
                deadline: DateTime.UtcNow.AddSeconds(5)).ConfigureAwait(false);
        }
        catch (Grpc.Core.RpcException) { /* the raylet reclaims leases of a worker that dies; nothing more to do */ }
    }
}
