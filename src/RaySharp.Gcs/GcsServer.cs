using Google.Protobuf;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using RaySharp.Common;
using RaySharp.Gcs.Services;
using RaySharp.Gcs.Storage;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs;

/// <summary>Identity of the cluster this GCS serves: fixed for the life of the cluster, kept across GCS restarts.</summary>
internal sealed record GcsClusterIdentity(string ClusterId, string SessionName, string Version, long StartTimeMs, int GcsRestarts = 0, string Storage = "memory")
{
    /// <summary>Whether this cluster's servers require its token: the GCS's own setting, not stored (a GCS restarted with the cluster's token requires it).</summary>
    public bool AuthRequired { get; } = RpcSecurityOptions.Current.ClusterToken is { Length: > 0 };

    public bool Tls { get; } = RpcSecurityOptions.Current.Tls is not null;

    public GetClusterInfoReply ToReply() => new()
    {
        ClusterId = ClusterId,
        SessionName = SessionName,
        Version = Version,
        StartTimeMs = StartTimeMs,
        GcsRestarts = GcsRestarts,
        Storage = Storage,
        AuthRequired = AuthRequired,
        Tls = Tls,
    };
}

/// <summary>
/// The GCS server process: composes the node table, health checks, jobs, KV and pub/sub behind one RPC port.
/// </summary>
internal sealed partial class GcsServer : IAsyncDisposable
{
    private readonly RpcServer _rpc;
    private readonly GcsHealthCheckManager _health;
    private readonly RpcChannelPool _channels;

    private readonly Actors.GcsActorManager _actors;
    private readonly IGcsStore _store;
    private readonly GcsDriverMonitor _drivers;

    private readonly PlacementGroups.GcsPlacementGroupManager _placementGroups;

    private GcsServer(RpcServer rpc, GcsHealthCheckManager health, RpcChannelPool channels, Actors.GcsActorManager actors, IGcsStore store, GcsDriverMonitor drivers,
        PlacementGroups.GcsPlacementGroupManager placementGroups)
    {
        _placementGroups = placementGroups;
        _actors = actors;
        _store = store;
        _drivers = drivers;
        _rpc = rpc;
        _health = health;
        _channels = channels;
    }

    public int Port => _rpc.Port;

    public static async Task<GcsServer> StartAsync(GcsServerOptions options, ILoggerFactory loggerFactory, TimeProvider time, IGcsStore? store = null, CancellationToken cancellationToken = default)
    {
        var sessionName = string.IsNullOrEmpty(options.SessionDir) ? "" : Path.GetFileName(options.SessionDir);
        var storage = "memory";
        if (store is null && !string.IsNullOrEmpty(options.RedisAddress))
        {
            store = await RedisGcsStore.ConnectAsync(options.RedisAddress, options.RedisPassword,
                string.IsNullOrEmpty(options.StorageNamespace) ? sessionName : options.StorageNamespace).ConfigureAwait(false);
            storage = "redis " + options.RedisAddress;
        }
        store ??= new InMemoryGcsStore();
        var logger = loggerFactory.CreateLogger<GcsServer>();
        var publisher = new GcsPublisher();
        var nodes = new GcsNodeManager(store, publisher, time, loggerFactory.CreateLogger<GcsNodeManager>());
        var jobs = new GcsJobManager(store, publisher, time);
        var kv = new GcsKvManager(store);
        var channels = new RpcChannelPool(connectTimeout: options.EffectiveHealthCheckTimeout);
        var actors = new Actors.GcsActorManager(options, store, nodes, channels, time, loggerFactory.CreateLogger<Actors.GcsActorManager>());
        jobs.JobFinished += actors.OnJobFinished;
        var placementGroups = new PlacementGroups.GcsPlacementGroupManager(store, nodes,
            new PlacementGroups.RayletBundleReserver(channels, options.EffectiveHealthCheckTimeout * 2), time, loggerFactory.CreateLogger<PlacementGroups.GcsPlacementGroupManager>(),
            options.MaxRemovedPlacementGroups);
        jobs.JobFinished += job => _ = placementGroups.OnJobFinishedAsync(job);
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
        var drivers = new GcsDriverMonitor(jobs, time, loggerFactory.CreateLogger<GcsDriverMonitor>(), options.DriverDisconnectGrace);

        // A GCS started on stored state takes the cluster over where the last one left it: same identity, nodes,
        // jobs (their drivers reconnect), actors (their workers are found again) and key-value store.
        var identity = await LoadIdentityAsync(store, sessionName, storage, time).ConfigureAwait(false);
        var recovered = identity.GcsRestarts > 0;
        if (recovered)
        {
            await nodes.LoadAsync().ConfigureAwait(false);
            drivers.AwaitReconnects(await jobs.LoadAliveAsync().ConfigureAwait(false), options.DriverReconnectTimeout);
            await actors.LoadAsync().ConfigureAwait(false);
            await placementGroups.LoadAsync(cancellationToken).ConfigureAwait(false);
            LogRecovered(logger, identity.ClusterId, identity.GcsRestarts, storage, nodes.GetAll(aliveOnly: true).Count, actors.List(includeDead: false).Count);
        }

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
                services.AddSingleton(placementGroups);
                services.AddSingleton(objects);
                services.AddSingleton(channels);
            },
            endpoints =>
            {
                endpoints.MapGrpcService<NodeInfoGcsServiceImpl>();
                endpoints.MapGrpcService<JobInfoGcsServiceImpl>();
                endpoints.MapGrpcService<InternalKvGcsServiceImpl>();
                endpoints.MapGrpcService<PubsubGcsServiceImpl>();
                endpoints.MapGrpcService<ActorInfoGcsServiceImpl>();
                endpoints.MapGrpcService<ObjectLocationGcsServiceImpl>();
                endpoints.MapGrpcService<PlacementGroupInfoGcsServiceImpl>();
            }, cancellationToken: cancellationToken, framedHandler: drivers).ConfigureAwait(false);

        LogStarted(logger, rpc.Port, storage, options.HealthCheckPeriod.TotalMilliseconds, options.HealthCheckFailureThreshold);
        placementGroups.Start();
        return new GcsServer(rpc, health, channels, actors, store, drivers, placementGroups);
    }

    /// <summary>The cluster's identity from the store, or a new one; each start on stored state counts as a restart.</summary>
    private static async Task<GcsClusterIdentity> LoadIdentityAsync(IGcsStore store, string sessionName, string storage, TimeProvider time)
    {
        var version = typeof(GcsServer).Assembly.GetName().Version?.ToString() ?? "0";
        var fresh = new GetClusterInfoReply
        {
            ClusterId = UniqueId.New(),
            SessionName = sessionName,
            Version = version,
            StartTimeMs = time.GetUtcNow().ToUnixTimeMilliseconds(),
        };
        var stored = await store.PutIfAbsentAsync(GcsTables.Cluster, "identity", fresh.ToByteArray()).ConfigureAwait(false)
            ? fresh
            : GetClusterInfoReply.Parser.ParseFrom(await store.GetAsync(GcsTables.Cluster, "identity").ConfigureAwait(false));
        var restarts = stored == fresh ? 0 : (int)await store.IncrementAsync(GcsTables.Counters, "gcs_restarts").ConfigureAwait(false);
        return new GcsClusterIdentity(stored.ClusterId, stored.SessionName, version, stored.StartTimeMs, restarts, storage);
    }

    /// <summary>
    /// Stops serving. <paramref name="clusterStopped"/>: the cluster is being stopped on purpose (<c>raysharp stop</c>),
    /// so its stored state (in Redis) is deleted; a GCS that crashes, or is stopped by anything else, leaves it for the
    /// next one.
    /// </summary>
    public async ValueTask StopAsync(bool clusterStopped)
    {
        _drivers.Dispose();
        await _health.DisposeAsync().ConfigureAwait(false);
        await _actors.DisposeAsync().ConfigureAwait(false);
        await _placementGroups.DisposeAsync().ConfigureAwait(false);
        await _rpc.DisposeAsync().ConfigureAwait(false);
        _channels.Dispose();
        if (_store is RedisGcsStore redis)
        {
            if (clusterStopped)
            {
                try { await redis.DeleteNamespaceAsync().ConfigureAwait(false); }
                catch (StackExchange.Redis.RedisException) { /* Redis is gone too: nothing more to tidy */ }
            }
            await redis.DisposeAsync().ConfigureAwait(false);
        }
    }

    public ValueTask DisposeAsync() => StopAsync(clusterStopped: false);

    [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "GCS server started on port {Port}, state in {Storage}; health checks every {PeriodMs} ms, dead after {Threshold} misses")]
    private static partial void LogStarted(ILogger logger, int port, string storage, double periodMs, int threshold);

    [LoggerMessage(EventId = 2, Level = LogLevel.Warning, Message = "GCS restarted on the stored state of cluster {ClusterId} (restart {Restarts}, {Storage}): {Nodes} alive node(s), {Actors} live actor(s) recovered")]
    private static partial void LogRecovered(ILogger logger, string clusterId, int restarts, string storage, int nodes, int actors);
}
