using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using RaySharp.Common;
using RaySharp.Gcs.Services;
using RaySharp.Gcs.Storage;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs;

/// <summary>Identity of the cluster this GCS serves, fixed for the life of the process.</summary>
internal sealed record GcsClusterIdentity(string ClusterId, string SessionName, string Version, long StartTimeMs);

/// <summary>
/// The GCS server process: composes the node table, health checks, jobs, KV and pub/sub behind one RPC port.
/// </summary>
internal sealed partial class GcsServer : IAsyncDisposable
{
    private readonly RpcServer _rpc;
    private readonly GcsHealthCheckManager _health;
    private readonly RpcChannelPool _channels;

    private readonly Actors.GcsActorManager _actors;

    private GcsServer(RpcServer rpc, GcsHealthCheckManager health, RpcChannelPool channels, Actors.GcsActorManager actors)
    {
        _actors = actors;
        _rpc = rpc;
        _health = health;
        _channels = channels;
    }

    public int Port => _rpc.Port;

    public static async Task<GcsServer> StartAsync(GcsServerOptions options, ILoggerFactory loggerFactory, TimeProvider time, IGcsStore? store = null, CancellationToken cancellationToken = default)
    {
        store ??= new InMemoryGcsStore();
        var logger = loggerFactory.CreateLogger<GcsServer>();
        var publisher = new GcsPublisher();
        var nodes = new GcsNodeManager(store, publisher, time, loggerFactory.CreateLogger<GcsNodeManager>());
        var jobs = new GcsJobManager(store, publisher, time);
        var kv = new GcsKvManager(store);
        var channels = new RpcChannelPool(connectTimeout: options.EffectiveHealthCheckTimeout);
        var actors = new Actors.GcsActorManager(options, store, nodes, channels, time, loggerFactory.CreateLogger<Actors.GcsActorManager>());
        jobs.JobFinished += actors.OnJobFinished;
        var health = new GcsHealthCheckManager(options, time,
            async (node, ct) =>
            {
                var client = new NodeManagerService.NodeManagerServiceClient(channels.Get(node.NodeIpAddress, node.NodeManagerPort));
                var reply = await client.HealthCheckAsync(new HealthCheckRequest(), cancellationToken: ct).ConfigureAwait(false);
                if (reply.NodeId != node.NodeId) throw new InvalidOperationException($"a different raylet ({reply.NodeId}) answers at that address");
            },
            (nodeId, reason) => nodes.MarkDeadAsync(nodeId, reason),
            loggerFactory.CreateLogger<GcsHealthCheckManager>());
        nodes.NodeAdded += health.AddNode;
        nodes.NodeRemoved += n => health.RemoveNode(n.NodeId);
        var objects = new GcsObjectDirectory();
        nodes.NodeRemoved += objects.OnNodeRemoved;

        var sessionName = string.IsNullOrEmpty(options.SessionDir) ? "" : Path.GetFileName(options.SessionDir);
        var identity = new GcsClusterIdentity(UniqueId.New(), sessionName, typeof(GcsServer).Assembly.GetName().Version?.ToString() ?? "0",
            time.GetUtcNow().ToUnixTimeMilliseconds());

        var rpc = await RpcServer.StartAsync("GCS server", RpcListenOptions.Fixed(options.Port), loggerFactory,
            services =>
            {
                services.AddSingleton(options);
                services.AddSingleton(identity);
                services.AddSingleton(nodes);
                services.AddSingleton(jobs);
                services.AddSingleton(kv);
                services.AddSingleton(publisher);
                services.AddSingleton(actors);
                services.AddSingleton(objects);
            },
            endpoints =>
            {
                endpoints.MapGrpcService<NodeInfoGcsServiceImpl>();
                endpoints.MapGrpcService<JobInfoGcsServiceImpl>();
                endpoints.MapGrpcService<InternalKvGcsServiceImpl>();
                endpoints.MapGrpcService<PubsubGcsServiceImpl>();
                endpoints.MapGrpcService<ActorInfoGcsServiceImpl>();
                endpoints.MapGrpcService<ObjectLocationGcsServiceImpl>();
            }, cancellationToken: cancellationToken, framedHandler: new GcsDriverMonitor(jobs)).ConfigureAwait(false);

        LogStarted(logger, rpc.Port, options.HealthCheckPeriod.TotalMilliseconds, options.HealthCheckFailureThreshold);
        return new GcsServer(rpc, health, channels, actors);
    }

    public async ValueTask DisposeAsync()
    {
        await _health.DisposeAsync().ConfigureAwait(false);
        await _actors.DisposeAsync().ConfigureAwait(false);
        await _rpc.DisposeAsync().ConfigureAwait(false);
        _channels.Dispose();
    }

    [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "GCS server started on port {Port}; health checks every {PeriodMs} ms, dead after {Threshold} misses")]
    private static partial void LogStarted(ILogger logger, int port, double periodMs, int threshold);
}
