using System.Threading.Channels;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using RaySharp.Common;
using RaySharp.Gcs;
using RaySharp.Gcs.Actors;
using RaySharp.Gcs.Storage;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>
/// The GCS's actor table against its store and raylets, in process: a store whose writes the test holds back (to
/// reorder them as a slow Redis can) and a raylet that records the lease requests it gets.
/// </summary>
public sealed class GcsActorManagerTests : IAsyncDisposable
{
    private static readonly TimeSpan s_within = TimeSpan.FromSeconds(30);
    private readonly RpcChannelPool _channels = new(new RpcSecurityOptions(), TimeSpan.FromSeconds(2));
    private readonly List<IAsyncDisposable> _owned = [];

    public async ValueTask DisposeAsync()
    {
        foreach (var o in Enumerable.Reverse(_owned)) await o.DisposeAsync();
        _channels.Dispose();
    }

    private (GcsActorManager Actors, GcsNodeManager Nodes) Start(IGcsStore store, int maxDeadPerJob = 1_000)
    {
        var nodes = new GcsNodeManager(store, new GcsPublisher(), TimeProvider.System, NullLogger<GcsNodeManager>.Instance);
        var actors = new GcsActorManager(new GcsServerOptions { MaxDeadActorsPerJob = maxDeadPerJob }, store, nodes, _channels, TimeProvider.System,
            NullLogger<GcsActorManager>.Instance);
        _owned.Add(actors);
        return (actors, nodes);
    }

    private static RegisterActorRequest Actor(string jobId, bool detached = false)
    {
        var request = new RegisterActorRequest
        {
            Info = new ActorInfo { ActorId = UniqueId.New(), JobId = jobId, ClassName = "Counter", Detached = detached, MaxRestarts = 0 },
            Creation = new PushTaskRequest(),
        };
        request.Resources.Add(ResourceSet.Cpu, 1);
        return request;
    }

    private static async Task<ActorInfo?> StoredRowAsync(IGcsStore store, string actorId) =>
        await store.GetAsync(GcsTables.Actors, actorId) is { } bytes ? ActorInfo.Parser.ParseFrom(bytes) : null;

    [Fact]
    public async Task AKillRightAfterTheRegistrationIsTheRowThatStaysAndTheRegistrationAnswersOnlyOnceStored()
    {
        var store = new HeldStore();
        var (actors, _) = Start(store);
        var request = Actor("00000001");
        var id = request.Info.ActorId;

        // The store is slow to take the PENDING row...
        store.Hold(ActorState.ActorPendingCreation);
        var register = actors.RegisterAsync(request);
        await store.Holding.WaitAsync(s_within);
        Assert.False(register.IsCompleted, "the registration answered before its row was stored");

        // ...and the actor is killed meanwhile: its DEAD row must not be overwritten by the older PENDING one.
        var kill = actors.KillAsync(id, noRestart: true, "killed at once");
        store.Release();
        await register.WaitAsync(s_within);
        Assert.True(await kill.WaitAsync(s_within));

        var row = await StoredRowAsync(store, id);
        Assert.NotNull(row);
        Assert.Equal(ActorState.ActorDead, row.State);
        Assert.Equal("killed at once", row.DeathCause);
        Assert.Null(await store.GetAsync(GcsTables.ActorSpecs, id));

        // A GCS started again on that store finds it dead, not back.
        var (restarted, _) = Start(store);
        await restarted.LoadAsync();
        Assert.Equal(ActorState.ActorDead, restarted.Get(id)!.State);
        Assert.DoesNotContain(restarted.List(includeDead: false), a => a.ActorId == id);
    }

    [Fact]
    public async Task OnlyTheNewestDeadActorsOfEachJobAreKeptInMemoryAndInTheStore()
    {
        var store = new InMemoryGcsStore();
        var (actors, _) = Start(store, maxDeadPerJob: 3);
        var jobA = Enumerable.Range(0, 5).Select(_ => Actor("0000000a")).ToList();
        var jobB = Enumerable.Range(0, 2).Select(_ => Actor("0000000b")).ToList();
        var live = Actor("0000000a");
        foreach (var r in jobA.Concat(jobB).Append(live)) await actors.RegisterAsync(r);
        foreach (var r in jobA.Concat(jobB)) Assert.True(await actors.KillAsync(r.Info.ActorId, noRestart: true, "done"));

        var expectedDead = jobA.Skip(2).Concat(jobB).Select(r => r.Info.ActorId).Order().ToList();
        var listed = actors.List(includeDead: true);
        Assert.Equal(expectedDead, listed.Where(a => a.State == ActorState.ActorDead).Select(a => a.ActorId).Order().ToList());
        Assert.Equal(ActorState.ActorPendingCreation, listed.Single(a => a.ActorId == live.Info.ActorId).State);
        Assert.Null(actors.Get(jobA[0].Info.ActorId));
        Assert.False(await actors.KillAsync(jobA[0].Info.ActorId, noRestart: true, "again"));
        await ClusterAssertions.EventuallyAsync(async () => (await store.GetAllAsync(GcsTables.Actors)).Count == expectedDead.Count + 1,
            s_within, "the dropped dead actors' rows to leave the store");
        Assert.Equal(expectedDead.Append(live.Info.ActorId).Order().ToList(), (await store.GetAllAsync(GcsTables.Actors)).Select(kv => kv.Key).Order().ToList());

        // A GCS started again with a lower bound keeps that many of each job, the newest deaths, and the live actor.
        var (restarted, _) = Start(store, maxDeadPerJob: 1);
        await restarted.LoadAsync();
        var after = restarted.List(includeDead: true);
        Assert.Equal(new[] { jobA[4].Info.ActorId, jobB[1].Info.ActorId }.Order().ToList(),
            after.Where(a => a.State == ActorState.ActorDead).Select(a => a.ActorId).Order().ToList());
        Assert.Contains(after, a => a.ActorId == live.Info.ActorId && a.State != ActorState.ActorDead);
    }

    [Fact]
    public async Task ActorLeasesNameTheirJobExceptADetachedActorsWhichOutlivesIt()
    {
        var raylet = new RecordingRaylet();
        var server = await RpcServer.StartAsync("fake raylet", RpcListenOptions.Fixed(0), NullLoggerFactory.Instance,
            services => services.AddSingleton(raylet), endpoints => endpoints.MapGrpcService<RecordingRaylet>(), new RpcSecurityOptions());
        _owned.Add(server);
        var store = new InMemoryGcsStore();
        var (actors, nodes) = Start(store);
        var node = new NodeInfo { NodeId = UniqueId.New(), NodeIpAddress = "127.0.0.1", NodeManagerPort = server.Port, IsHeadNode = true };
        node.ResourcesTotal.Add(ResourceSet.Cpu, 4);
        Assert.True(await nodes.RegisterAsync(node));

        var owned = Actor("0000000c");
        await actors.RegisterAsync(owned);
        var request = await raylet.Requests.ReadAsync().AsTask().WaitAsync(s_within);
        Assert.Equal(owned.Info.ActorId, request.OwnerWorkerId);
        Assert.Equal("0000000c", request.JobId);

        var detached = Actor("0000000c", detached: true);
        await actors.RegisterAsync(detached);
        request = await raylet.Requests.ReadAsync().AsTask().WaitAsync(s_within);
        Assert.Equal(detached.Info.ActorId, request.OwnerWorkerId);
        Assert.Equal("", request.JobId);
    }

    /// <summary>A store that holds back the writes of actor rows in one state until the test releases them.</summary>
    private sealed class HeldStore : IGcsStore
    {
        private readonly InMemoryGcsStore _inner = new();
        private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _holding = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private ActorState? _held;

        public Task Holding => _holding.Task;

        public void Hold(ActorState state) => _held = state;

        public void Release() => _released.TrySetResult();

        public async Task PutAsync(string table, string key, byte[] value)
        {
            if (table == GcsTables.Actors && _held is { } held && ActorInfo.Parser.ParseFrom(value).State == held)
            {
                _holding.TrySetResult();
                await _released.Task;
            }
            await _inner.PutAsync(table, key, value);
        }

        public Task<bool> PutIfAbsentAsync(string table, string key, byte[] value) => _inner.PutIfAbsentAsync(table, key, value);
        public Task<byte[]?> GetAsync(string table, string key) => _inner.GetAsync(table, key);
        public Task<bool> DeleteAsync(string table, string key) => _inner.DeleteAsync(table, key);
        public Task<IReadOnlyList<KeyValuePair<string, byte[]>>> GetAllAsync(string table) => _inner.GetAllAsync(table);
        public Task<IReadOnlyList<string>> KeysAsync(string table, string prefix) => _inner.KeysAsync(table, prefix);
        public Task<long> IncrementAsync(string table, string key) => _inner.IncrementAsync(table, key);
    }

    /// <summary>A raylet that grants nothing and records each lease request.</summary>
    private sealed class RecordingRaylet : NodeManagerService.NodeManagerServiceBase
    {
        private readonly System.Threading.Channels.Channel<RequestWorkerLeaseRequest> _requests = System.Threading.Channels.Channel.CreateUnbounded<RequestWorkerLeaseRequest>();

        public ChannelReader<RequestWorkerLeaseRequest> Requests => _requests.Reader;

        public override Task<RequestWorkerLeaseReply> RequestWorkerLease(RequestWorkerLeaseRequest request, ServerCallContext context)
        {
            _requests.Writer.TryWrite(request);
            return Task.FromResult(new RequestWorkerLeaseReply { Rejected = true, FailureMessage = "this test raylet grants no lease" });
        }
    }
}
