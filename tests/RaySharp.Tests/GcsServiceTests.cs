using System.Text;
using Google.Protobuf;
using Grpc.Core;
using RaySharp.Common;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>The GCS's job table, key-value store and node channel, over the network, on a cluster with a token.</summary>
public sealed class GcsServiceTests : IDisposable
{
    private const string Token = "test-cluster-token-7f3a-0123456789abcdef";
    private readonly TestNetwork _net = TestNetwork.Create(2);
    private readonly RpcChannelPool _channels = new(new RpcSecurityOptions { ClusterToken = Token });
    private readonly RpcChannelPool _noToken = new(new RpcSecurityOptions());

    public GcsServiceTests()
    {
        foreach (var h in _net.Hosts) h.Environment[RpcSecurityOptions.TokenEnvironmentVariable] = Token;
    }

    public void Dispose()
    {
        _channels.Dispose();
        _noToken.Dispose();
        _net.Dispose();
    }

    private string Gcs => $"{_net[0].Ip}:6379";

    [Fact]
    public async Task CallsWithoutTheClusterTokenAreRefusedAndWithItServed()
    {
        Assert.Equal(0, (await Cli.RunAsync(_net[0], "start", "--head", "--num-cpus=0")).ExitCode);
        // Every process of the cluster (CLI, raylet, health checks) carries the token: the node is up and healthy.
        Assert.Equal("ALIVE", (await ClusterAssertions.StatusAsync(_net[0])).Single().State);

        var anonymous = new NodeInfoGcsService.NodeInfoGcsServiceClient(_noToken.Get(Gcs));
        var refused = await Assert.ThrowsAsync<RpcException>(() => anonymous.GetAllNodeInfoAsync(new GetAllNodeInfoRequest()).ResponseAsync);
        Assert.Equal(StatusCode.Unauthenticated, refused.StatusCode);
        Assert.Contains("cluster token", refused.Status.Detail);

        var wrong = new RpcChannelPool(new RpcSecurityOptions { ClusterToken = "wrong" });
        var wrongClient = new NodeInfoGcsService.NodeInfoGcsServiceClient(wrong.Get(Gcs));
        Assert.Equal(StatusCode.Unauthenticated, (await Assert.ThrowsAsync<RpcException>(() => wrongClient.GetAllNodeInfoAsync(new GetAllNodeInfoRequest()).ResponseAsync)).StatusCode);
        wrong.Dispose();

        // A malformed registration is rejected by the gatekeeper before it reaches the node table.
        var nodes = new NodeInfoGcsService.NodeInfoGcsServiceClient(_channels.Get(Gcs));
        var bad = await Assert.ThrowsAsync<RpcException>(() => nodes.RegisterNodeAsync(new RegisterNodeRequest
        {
            NodeInfo = new NodeInfo { NodeId = "not-an-id", NodeIpAddress = "10.0.0.1", NodeManagerPort = 1 },
        }).ResponseAsync);
        Assert.Equal(StatusCode.InvalidArgument, bad.StatusCode);
        Assert.Contains("node_id", bad.Status.Detail);
        Assert.Single((await nodes.GetAllNodeInfoAsync(new GetAllNodeInfoRequest())).Nodes);

        await ClusterAssertions.StopAndAssertCleanAsync(_net[0]);
    }

    [Fact]
    public async Task JobsKeyValueAndNodeEventsWork()
    {
        var head = _net[0];
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=0")).ExitCode);
        var invoker = _channels.Get(Gcs);

        // Jobs: ids from a cluster-wide counter, rows that record their end.
        var jobs = new JobInfoGcsService.JobInfoGcsServiceClient(invoker);
        var id1 = (await jobs.GetNextJobIdAsync(new GetNextJobIdRequest())).JobId;
        var id2 = (await jobs.GetNextJobIdAsync(new GetNextJobIdRequest())).JobId;
        Assert.Equal("00000001", id1);
        Assert.Equal("00000002", id2);
        await jobs.AddJobAsync(new AddJobRequest { JobInfo = new JobInfo { JobId = id1, DriverPid = 42, DriverIpAddress = "10.0.0.5", Entrypoint = "demo" } });
        var job = (await jobs.GetAllJobInfoAsync(new GetAllJobInfoRequest())).Jobs.Single();
        Assert.Equal(42, job.DriverPid);
        Assert.False(job.IsDead);
        Assert.True(job.StartTimeMs > 0);
        await jobs.MarkJobFinishedAsync(new MarkJobFinishedRequest { JobId = id1 });
        Assert.True((await jobs.GetAllJobInfoAsync(new GetAllJobInfoRequest())).Jobs.Single().IsDead);
        Assert.Equal(StatusCode.NotFound, (await Assert.ThrowsAsync<RpcException>(() => jobs.MarkJobFinishedAsync(new MarkJobFinishedRequest { JobId = "ffffffff" }).ResponseAsync)).StatusCode);

        // Key-value: namespaces, no overwrite unless asked, prefix keys and prefix delete.
        var kv = new InternalKvGcsService.InternalKvGcsServiceClient(invoker);
        static ByteString B(string s) => ByteString.CopyFromUtf8(s);
        Assert.True((await kv.KvPutAsync(new KvPutRequest { Namespace = "code", Key = B("pkg/a"), Value = B("1") })).Added);
        Assert.False((await kv.KvPutAsync(new KvPutRequest { Namespace = "code", Key = B("pkg/a"), Value = B("2") })).Added);
        Assert.Equal("1", (await kv.KvGetAsync(new KvGetRequest { Namespace = "code", Key = B("pkg/a") })).Value.ToStringUtf8());
        await kv.KvPutAsync(new KvPutRequest { Namespace = "code", Key = B("pkg/a"), Value = B("3"), Overwrite = true });
        Assert.Equal("3", (await kv.KvGetAsync(new KvGetRequest { Namespace = "code", Key = B("pkg/a") })).Value.ToStringUtf8());
        await kv.KvPutAsync(new KvPutRequest { Namespace = "code", Key = B("pkg/b"), Value = B("4") });
        await kv.KvPutAsync(new KvPutRequest { Namespace = "code", Key = B("other"), Value = B("5") });
        await kv.KvPutAsync(new KvPutRequest { Namespace = "config", Key = B("pkg/a"), Value = B("6") });
        var keys = (await kv.KvKeysAsync(new KvKeysRequest { Namespace = "code", Prefix = B("pkg/") })).Keys.Select(k => k.ToStringUtf8()).Order().ToList();
        Assert.Equal(["pkg/a", "pkg/b"], keys);
        Assert.Equal(2, (await kv.KvDelAsync(new KvDelRequest { Namespace = "code", Key = B("pkg/"), DelByPrefix = true })).DeletedNum);
        Assert.False((await kv.KvExistsAsync(new KvExistsRequest { Namespace = "code", Key = B("pkg/a") })).Exists);
        Assert.True((await kv.KvExistsAsync(new KvExistsRequest { Namespace = "code", Key = B("other") })).Exists);
        Assert.Equal("6", (await kv.KvGetAsync(new KvGetRequest { Namespace = "config", Key = B("pkg/a") })).Value.ToStringUtf8());
        Assert.False((await kv.KvGetAsync(new KvGetRequest { Namespace = "code", Key = B("missing") })).Found);
        var big = ByteString.CopyFrom(Encoding.UTF8.GetBytes(new string('x', 4 * 1024 * 1024)));
        await kv.KvPutAsync(new KvPutRequest { Namespace = "code", Key = B("big"), Value = big });
        Assert.Equal(big.Length, (await kv.KvGetAsync(new KvGetRequest { Namespace = "code", Key = B("big") })).Value.Length);

        // Node channel: the current table first, then a node joining and leaving.
        var pubsub = new PubsubGcsService.PubsubGcsServiceClient(invoker);
        var request = new SubscribeRequest { SubscriberId = UniqueId.New() };
        request.Channels.Add(Channel.NodeInfo);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var call = pubsub.Subscribe(request, cancellationToken: cts.Token);
        var stream = call.ResponseStream;
        Assert.True(await stream.MoveNext(cts.Token));
        Assert.Equal(head.Ip, stream.Current.NodeInfo.NodeIpAddress);

        Assert.Equal(0, (await Cli.RunAsync(_net[1], "start", $"--address={Gcs}", "--num-cpus=0")).ExitCode);
        Assert.True(await stream.MoveNext(cts.Token));
        Assert.Equal(_net[1].Ip, stream.Current.NodeInfo.NodeIpAddress);
        Assert.Equal(NodeState.Alive, stream.Current.NodeInfo.State);

        await ClusterAssertions.StopAndAssertCleanAsync(_net[1]);
        Assert.True(await stream.MoveNext(cts.Token));
        Assert.Equal(_net[1].Ip, stream.Current.NodeInfo.NodeIpAddress);
        Assert.Equal(NodeState.Dead, stream.Current.NodeInfo.State);
        Assert.Equal("raylet stopped", stream.Current.NodeInfo.DeathReason);

        cts.Cancel();
        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }
}
