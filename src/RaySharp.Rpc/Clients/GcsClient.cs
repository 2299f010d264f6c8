using Grpc.Core;
using Grpc.Core.Interceptors;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Rpc.Clients;

/// <summary>
/// The GCS as every client process (CLI, driver, worker) uses it. With <paramref name="rideThrough"/>, calls made
/// while the GCS is unreachable (a head restarting on Redis) are retried until it answers again, for at most that
/// long and never past the call's own deadline; without it (the CLI) they fail at once.
/// </summary>
internal sealed class GcsClient(RpcChannelPool channels, string address, TimeSpan? rideThrough = null)
{
    private readonly Interceptor? _retry = rideThrough is { } window ? new RetryWhileUnavailable(window) : null;

    public string Address { get; } = address;

    private CallInvoker Invoker => _retry is null ? channels.Get(Address) : channels.Get(Address).Intercept(_retry);

    public NodeInfoGcsService.NodeInfoGcsServiceClient Nodes => new(Invoker);
    public JobInfoGcsService.JobInfoGcsServiceClient Jobs => new(Invoker);
    public InternalKvGcsService.InternalKvGcsServiceClient Kv => new(Invoker);
    public ActorInfoGcsService.ActorInfoGcsServiceClient Actors => new(Invoker);
    public PlacementGroupInfoGcsService.PlacementGroupInfoGcsServiceClient PlacementGroups => new(Invoker);

    /// <summary>
    /// How long every process waits for a GCS that went away (raylets before stopping, drivers and workers retrying,
    /// a restarted GCS for drivers to register again), in seconds: Ray's <c>gcs_rpc_server_reconnect_timeout_s</c>.
    /// </summary>
    public const string ReconnectTimeoutEnv = "RAYSHARP_gcs_rpc_server_reconnect_timeout_s";

    /// <summary>The default of that wait, 60 s.</summary>
    public static readonly TimeSpan DefaultReconnectTimeout = TimeSpan.FromSeconds(60);

    /// <summary>The wait <see cref="ReconnectTimeoutEnv"/> sets on this host, if it sets one.</summary>
    public static TimeSpan? ReconnectTimeoutOverride() =>
        double.TryParse(Environment.GetEnvironmentVariable(ReconnectTimeoutEnv), System.Globalization.NumberStyles.Float,
            System.Globalization.CultureInfo.InvariantCulture, out var s) && s > 0
            ? TimeSpan.FromSeconds(s)
            : null;

    /// <summary>How long drivers and workers ride through a GCS outage: the override, else 60 s.</summary>
    public static TimeSpan ReconnectTimeoutFromEnvironment() => ReconnectTimeoutOverride() ?? DefaultReconnectTimeout;

    /// <summary>Retries unary calls that found no GCS listening, with a capped backoff, within the window.</summary>
    private sealed class RetryWhileUnavailable(TimeSpan window) : Interceptor
    {
        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request,
            ClientInterceptorContext<TRequest, TResponse> context, AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
        {
            var response = CallAsync(request, context, continuation);
            return new AsyncUnaryCall<TResponse>(response, Task.FromResult(new Metadata()), () => Status.DefaultSuccess, () => [], () => { });
        }

        public override TResponse BlockingUnaryCall<TRequest, TResponse>(TRequest request,
            ClientInterceptorContext<TRequest, TResponse> context, BlockingUnaryCallContinuation<TRequest, TResponse> continuation)
        {
            var giveUp = GiveUp(context.Options);
            var pause = TimeSpan.FromMilliseconds(100);
            while (true)
            {
                try
                {
                    return continuation(request, context);
                }
                catch (RpcException e) when (e.StatusCode == StatusCode.Unavailable && DateTime.UtcNow + pause < giveUp)
                {
                    var token = context.Options.CancellationToken;
                    if (token.CanBeCanceled) token.WaitHandle.WaitOne(pause);
                    else Thread.Sleep(pause);
                    token.ThrowIfCancellationRequested();
                    pause = Next(pause);
                }
            }
        }

        private DateTime GiveUp(CallOptions options)
        {
            var giveUp = DateTime.UtcNow + window;
            return options.Deadline is { } deadline && deadline < giveUp ? deadline : giveUp;
        }

        private static TimeSpan Next(TimeSpan pause) => TimeSpan.FromMilliseconds(Math.Min(pause.TotalMilliseconds * 2, 1000));

        private async Task<TResponse> CallAsync<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context,
            AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
            where TRequest : class where TResponse : class
        {
            var giveUp = GiveUp(context.Options);
            var pause = TimeSpan.FromMilliseconds(100);
            while (true)
            {
                try
                {
                    using var call = continuation(request, context);
                    return await call.ResponseAsync.ConfigureAwait(false);
                }
                catch (RpcException e) when (e.StatusCode == StatusCode.Unavailable && DateTime.UtcNow + pause < giveUp)
                {
                    await Task.Delay(pause, context.Options.CancellationToken).ConfigureAwait(false);
                    pause = Next(pause);
                }
            }
        }
    }

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
            catch (RpcException e) when (e.StatusCode == StatusCode.Unauthenticated)
            {
                throw new ClusterTokenRefusedException(Address, e.Status.Detail);
            }
            catch (RpcException e) when (e.StatusCode is StatusCode.Unimplemented or StatusCode.Internal)
            {
                throw new GcsUnreachableException(Address, "something answers on that port, but it is not a RaySharp GCS");
            }
            // A connection not made within the channel's connect timeout surfaces as Cancelled (not ours: retried).
            catch (RpcException e) when (e.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded
                                         || (e.StatusCode == StatusCode.Cancelled && !cancellationToken.IsCancellationRequested))
            {
                problem = e.StatusCode is StatusCode.DeadlineExceeded or StatusCode.Cancelled
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

    /// <summary>
    /// Asks the GCS to drain a node before it is terminated (Ray's <c>DrainNode</c>); the reply says whether the raylet
    /// accepted, or why not (it took work meanwhile).
    /// </summary>
    public async Task<DrainNodeReply> DrainNodeAsync(string nodeId, DrainNodeReason reason, string reasonMessage, CancellationToken cancellationToken = default) =>
        await Nodes.DrainNodeAsync(new DrainNodeRequest { NodeId = nodeId, Reason = reason, ReasonMessage = reasonMessage },
            deadline: DateTime.UtcNow.AddSeconds(10), cancellationToken: cancellationToken).ConfigureAwait(false);
}

/// <summary>The GCS could not be reached within the time allowed; <see cref="Exception.Message"/> is the cause.</summary>
internal sealed class GcsUnreachableException(string address, string problem) : Exception(problem)
{
    public string Address { get; } = address;
}

/// <summary>The GCS refused this process's cluster token (or its lack of one); the message says where to get it.</summary>
internal sealed class ClusterTokenRefusedException(string address, string detail) : Exception($"the RaySharp cluster at {address} refused this connection: {detail}")
{
    public string Address { get; } = address;
}
