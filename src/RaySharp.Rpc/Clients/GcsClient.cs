using Grpc.Core;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Rpc.Clients;

/// <summary>The GCS as every client process (CLI, driver, worker) uses it.</summary>
internal sealed class GcsClient(RpcChannelPool channels, string address)
{
    public string Address { get; } = address;

    public NodeInfoGcsService.NodeInfoGcsServiceClient Nodes => new(channels.Get(Address));
    public JobInfoGcsService.JobInfoGcsServiceClient Jobs => new(channels.Get(Address));
    public InternalKvGcsService.InternalKvGcsServiceClient Kv => new(channels.Get(Address));
    public ActorInfoGcsService.ActorInfoGcsServiceClient Actors => new(channels.Get(Address));

    /// <summary>
    /// Asks the GCS who it is, retrying while the connection is refused or unanswered (a head that is still starting)
    /// until <paramref name="budget"/> runs out.
    /// </summary>
    public async Task<GetClusterInfoReply> WaitReachableAsync(TimeSpan budget, CancellationToken cancellationToken = default)
    {
        var deadline = DateTime.UtcNow + budget;
        while (true)
        {
            string problem;
            try
            {
                var remaining = deadline - DateTime.UtcNow;
                return await Nodes.GetClusterInfoAsync(new GetClusterInfoRequest(),
                    deadline: DateTime.UtcNow + (remaining > TimeSpan.FromMilliseconds(200) ? remaining : TimeSpan.FromMilliseconds(200)),
                    cancellationToken: cancellationToken).ConfigureAwait(false);
            }
            catch (RpcException e) when (e.StatusCode is StatusCode.Unimplemented or StatusCode.Internal)
            {
                throw new GcsUnreachableException(Address, "something answers on that port, but it is not a RaySharp GCS");
            }
            catch (RpcException e) when (e.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded)
            {
                problem = e.StatusCode == StatusCode.DeadlineExceeded
                    ? "no answer"
                    : (e.Status.DebugException?.InnerException ?? e.Status.DebugException)?.Message ?? e.Status.Detail;
            }
            if (DateTime.UtcNow + TimeSpan.FromMilliseconds(300) >= deadline) throw new GcsUnreachableException(Address, problem);
            await Task.Delay(300, cancellationToken).ConfigureAwait(false);
        }
    }

    public async Task<IReadOnlyList<NodeInfo>> GetAllNodesAsync(bool aliveOnly, CancellationToken cancellationToken = default) =>
        (await Nodes.GetAllNodeInfoAsync(new GetAllNodeInfoRequest { AliveOnly = aliveOnly },
            deadline: DateTime.UtcNow.AddSeconds(5), cancellationToken: cancellationToken).ConfigureAwait(false)).Nodes;
}

/// <summary>The GCS could not be reached within the time allowed; <see cref="Exception.Message"/> is the cause.</summary>
internal sealed class GcsUnreachableException(string address, string problem) : Exception(problem)
{
    public string Address { get; } = address;
}
