using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using RaySharp.Common;
using RaySharp.Gcs;
using RaySharp.Gcs.PlacementGroups;
using RaySharp.Gcs.Storage;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Tests;

using PlacementGroupState = RaySharp.Rpc.Protocol.PlacementGroupState;
using PlacementStrategy = RaySharp.Rpc.Protocol.PlacementStrategy;

/// <summary>
/// The GCS's placement group manager against a fake of the raylets: the two phases (prepare on every node, then
/// commit), rollback and backoff when a node refuses, waiting with the reason, removal, a node's death rescheduling
/// just its bundles, the job's groups going with it, and recovery from the store after a GCS restart.
/// </summary>
public sealed class GcsPlacementGroupManagerTests : IAsyncDisposable
{
    private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
    private readonly InMemoryGcsStore _store = new();
    private readonly GcsNodeManager _nodes;
    private readonly FakeReserver _raylets = new();
    private readonly GcsPlacementGroupManager _groups;

    public GcsPlacementGroupManagerTests()
    {
        _nodes = new GcsNodeManager(_store, new GcsPublisher(), _clock, NullLogger<GcsNodeManager>.Instance);
        _groups = new GcsPlacementGroupManager(_store, _nodes, _raylets, _clock, NullLogger.Instance);
    }

    public async ValueTask DisposeAsync() => await _groups.DisposeAsync();

    private sealed class FakeReserver : IBundleReserver
    {
        public List<string> Log { get; } = [];
        public HashSet<string> Refusing { get; } = [];
        public Dictionary<string, HashSet<(string, int)>> Held { get; } = [];

        private static string Name(NodeInfo n) => n.NodeIpAddress;

        public Task<PrepareBundleResourcesReply> PrepareAsync(NodeInfo node, IReadOnlyList<BundleSpec> bundles, CancellationToken cancellationToken)
        {
            lock (Log)
            {
                Log.Add($"prepare {Name(node)} {string.Join(",", bundles.Select(b => b.BundleIndex))}");
                if (Refusing.Contains(Name(node))) return Task.FromResult(new PrepareBundleResourcesReply { Success = false, FailureMessage = $"{Name(node)} is full" });
                var held = Held.TryGetValue(Name(node), out var h) ? h : Held[Name(node)] = [];
                foreach (var b in bundles) held.Add((b.PlacementGroupId, b.BundleIndex));
            }
            return Task.FromResult(new PrepareBundleResourcesReply { Success = true });
        }

        public Task CommitAsync(NodeInfo node, IReadOnlyList<BundleSpec> bundles, CancellationToken cancellationToken)
        {
            lock (Log) Log.Add($"commit {Name(node)} {string.Join(",", bundles.Select(b => b.BundleIndex))}");
            return Task.CompletedTask;
        }

        public Task CancelAsync(NodeInfo node, BundleSpec bundle, CancellationToken cancellationToken)
        {
            lock (Log)
            {
                Log.Add($"cancel {Name(node)} {bundle.BundleIndex}");
                if (Held.TryGetValue(Name(node), out var h)) h.Remove((bundle.PlacementGroupId, bundle.BundleIndex));
            }
            return Task.CompletedTask;
        }

        public Task ReleaseUnusedAsync(NodeInfo node, IReadOnlyList<BundleSpec> inUse, CancellationToken cancellationToken)
        {
            lock (Log) Log.Add($"release-unused {Name(node)} keeping {inUse.Count}");
            return Task.CompletedTask;
        }
    }

    private async Task<NodeInfo> NodeAsync(string ip, double cpus)
    {
        var node = new NodeInfo { NodeId = UniqueId.New(), NodeIpAddress = ip, NodeManagerPort = 1000 };
        node.ResourcesTotal.Add(ResourceSet.Cpu, cpus);
        Assert.True(await _nodes.RegisterAsync(node));
        return _nodes.Get(node.NodeId)!;
    }

    private static PlacementGroupTableData Group(PlacementStrategy strategy, int bundles, double cpus = 1, string job = "01000000", bool detached = false, string name = "")
    {
        var data = new PlacementGroupTableData { PlacementGroupId = UniqueId.New(), Strategy = strategy, CreatorJobId = job, IsDetached = detached, Name = name };
        for (var i = 0; i < bundles; i++) data.Bundles.Add(new BundleSpec { BundleIndex = i, Resources = { [ResourceSet.Cpu] = cpus } });
        return data;
    }

    private async Task<PlacementGroupTableData> CreateAndScheduleAsync(PlacementGroupTableData group)
    {
        Assert.Null(await _groups.CreateAsync(group));
        await _groups.SchedulePendingAsync(CancellationToken.None);
        return _groups.Get(group.PlacementGroupId)!;
    }

    [Fact]
    public async Task AGroupIsPreparedOnEveryNodeThenCommittedAndIsReady()
    {
        await NodeAsync("10.0.0.1", 2);
        await NodeAsync("10.0.0.2", 2);
        await NodeAsync("10.0.0.3", 2);
        var group = await CreateAndScheduleAsync(Group(PlacementStrategy.StrictSpread, 3));
        Assert.Equal(PlacementGroupState.Created, group.State);
        Assert.Equal(3, group.Bundles.Select(b => b.NodeId).Distinct().Count());
        // Every prepare before any commit.
        var lastPrepare = _raylets.Log.FindLastIndex(l => l.StartsWith("prepare", StringComparison.Ordinal));
        var firstCommit = _raylets.Log.FindIndex(l => l.StartsWith("commit", StringComparison.Ordinal));
        Assert.Equal(3, _raylets.Log.Count(l => l.StartsWith("commit", StringComparison.Ordinal)));
        Assert.True(lastPrepare < firstCommit, string.Join("; ", _raylets.Log));
        Assert.True(await _groups.WaitUntilReadyAsync(group.PlacementGroupId, TimeSpan.Zero, CancellationToken.None));
        // Stored as created, for a GCS that restarts.
        var stored = PlacementGroupTableData.Parser.ParseFrom(await _store.GetAsync(GcsTables.PlacementGroups, group.PlacementGroupId));
        Assert.Equal(PlacementGroupState.Created, stored.State);
    }

    [Fact]
    public async Task ARefusedPrepareRollsTheOthersBackAndTheGroupTriesAgainAfterABackoff()
    {
        await NodeAsync("10.0.0.1", 2);
        await NodeAsync("10.0.0.2", 2);
        _raylets.Refusing.Add("10.0.0.2");
        var group = await CreateAndScheduleAsync(Group(PlacementStrategy.StrictSpread, 2));
        Assert.Equal(PlacementGroupState.Pending, group.State);
        Assert.Contains("10.0.0.2 is full", group.StateMessage);
        Assert.Contains(_raylets.Log, l => l.StartsWith("cancel 10.0.0.1 ", StringComparison.Ordinal));
        Assert.Empty(_raylets.Held["10.0.0.1"]);
        Assert.DoesNotContain(_raylets.Log, l => l.StartsWith("commit", StringComparison.Ordinal));

        // Within the backoff nothing is tried; after it, with room on the node, the group is created.
        _raylets.Refusing.Clear();
        var attempts = _raylets.Log.Count;
        await _groups.SchedulePendingAsync(CancellationToken.None);
        Assert.Equal(attempts, _raylets.Log.Count);
        _clock.Advance(GcsPlacementGroupManager.InitialBackoff);
        await _groups.SchedulePendingAsync(CancellationToken.None);
        Assert.Equal(PlacementGroupState.Created, _groups.Get(group.PlacementGroupId)!.State);
    }

    [Fact]
    public async Task AGroupNoNodeCanHoldWaitsInfeasibleUntilANodeThatFitsJoins()
    {
        await NodeAsync("10.0.0.1", 4);
        await NodeAsync("10.0.0.2", 4);
        var group = await CreateAndScheduleAsync(Group(PlacementStrategy.StrictSpread, 3));
        Assert.Equal(PlacementGroupState.Pending, group.State);
        Assert.True(group.Infeasible);
        Assert.Contains("STRICT_SPREAD", group.StateMessage);
        Assert.False(await _groups.WaitUntilReadyAsync(group.PlacementGroupId, TimeSpan.Zero, CancellationToken.None));
        Assert.Empty(_raylets.Log);

        await NodeAsync("10.0.0.3", 4);
        await _groups.SchedulePendingAsync(CancellationToken.None);
        group = _groups.Get(group.PlacementGroupId)!;
        Assert.Equal(PlacementGroupState.Created, group.State);
        Assert.False(group.Infeasible);
    }

    [Fact]
    public async Task ANodesDeathReschedulesJustItsBundles()
    {
        var a = await NodeAsync("10.0.0.1", 2);
        var b = await NodeAsync("10.0.0.2", 2);
        var group = await CreateAndScheduleAsync(Group(PlacementStrategy.StrictSpread, 2));
        var onB = group.Bundles.Single(x => x.NodeId == b.NodeId).BundleIndex;
        var onA = 1 - onB;
        var c = await NodeAsync("10.0.0.3", 2);
        _raylets.Log.Clear();

        Assert.True(await _nodes.MarkDeadAsync(b.NodeId, "test"));
        var rescheduling = _groups.Get(group.PlacementGroupId)!;
        Assert.Equal(PlacementGroupState.Rescheduling, rescheduling.State);
        Assert.Equal("", rescheduling.Bundles[onB].NodeId);
        Assert.Equal(a.NodeId, rescheduling.Bundles[onA].NodeId);

        await _groups.SchedulePendingAsync(CancellationToken.None);
        var again = _groups.Get(group.PlacementGroupId)!;
        Assert.Equal(PlacementGroupState.Created, again.State);
        Assert.Equal(a.NodeId, again.Bundles[onA].NodeId);
        Assert.Equal(c.NodeId, again.Bundles[onB].NodeId);
        // Only the lost bundle was prepared again, on the new node.
        Assert.Equal([$"prepare 10.0.0.3 {onB}", $"commit 10.0.0.3 {onB}"], _raylets.Log);
    }

    [Fact]
    public async Task RemovingAGroupGivesItsBundlesBackAndItsJobsEndRemovesTheGroupsItOwns()
    {
        await NodeAsync("10.0.0.1", 4);
        var owned = await CreateAndScheduleAsync(Group(PlacementStrategy.Pack, 2, job: "02000000"));
        var detached = await CreateAndScheduleAsync(Group(PlacementStrategy.Pack, 1, job: "02000000", detached: true, name: "kept"));
        var other = await CreateAndScheduleAsync(Group(PlacementStrategy.Pack, 1, job: "03000000"));
        _raylets.Log.Clear();

        await _groups.OnJobFinishedAsync("02000000");
        Assert.Equal(PlacementGroupState.Removed, _groups.Get(owned.PlacementGroupId)!.State);
        Assert.Contains("its job 02000000 ended", _groups.Get(owned.PlacementGroupId)!.StateMessage);
        Assert.Equal(["cancel 10.0.0.1 0", "cancel 10.0.0.1 1"], _raylets.Log.Order(StringComparer.Ordinal));
        Assert.Equal(PlacementGroupState.Created, _groups.Get(detached.PlacementGroupId)!.State);
        Assert.Equal(detached.PlacementGroupId, _groups.GetNamed("kept", "")!.PlacementGroupId);

        Assert.True(await _groups.WaitUntilReadyAsync(other.PlacementGroupId, TimeSpan.Zero, CancellationToken.None));
        Assert.True(await _groups.RemoveAsync(other.PlacementGroupId));
        Assert.Equal(PlacementGroupState.Removed, _groups.Get(other.PlacementGroupId)!.State);
        // Created once, removed since: not ready any more.
        Assert.False(await _groups.WaitUntilReadyAsync(other.PlacementGroupId, TimeSpan.Zero, CancellationToken.None));
        Assert.False(await _groups.RemoveAsync(UniqueId.New()));
    }

    [Fact]
    public async Task ANameIsOneGroupsInItsNamespace()
    {
        await NodeAsync("10.0.0.1", 4);
        Assert.Null(await _groups.CreateAsync(Group(PlacementStrategy.Pack, 1, name: "trainers")));
        var error = await _groups.CreateAsync(Group(PlacementStrategy.Pack, 1, name: "trainers"));
        Assert.Contains("named 'trainers' exists already", error);
    }

    [Fact]
    public async Task AGcsRestartedOnTheStoreCommitsPreparedGroupsKeepsCreatedOnesAndReleasesWhatItDoesNotKnow()
    {
        var a = await NodeAsync("10.0.0.1", 4);
        var created = await CreateAndScheduleAsync(Group(PlacementStrategy.Pack, 2));
        // A group the last GCS had prepared when it stopped.
        var prepared = Group(PlacementStrategy.Pack, 1);
        prepared.State = PlacementGroupState.Prepared;
        prepared.Bundles[0].NodeId = a.NodeId;
        prepared.Bundles[0].PlacementGroupId = prepared.PlacementGroupId;
        await _store.PutAsync(GcsTables.PlacementGroups, prepared.PlacementGroupId, Google.Protobuf.MessageExtensions.ToByteArray(prepared));

        var reserver = new FakeReserver();
        await using var restarted = new GcsPlacementGroupManager(_store, _nodes, reserver, _clock, NullLogger.Instance);
        await restarted.LoadAsync(CancellationToken.None);
        Assert.Equal(PlacementGroupState.Created, restarted.Get(prepared.PlacementGroupId)!.State);
        Assert.Equal(PlacementGroupState.Created, restarted.Get(created.PlacementGroupId)!.State);
        Assert.True(await restarted.WaitUntilReadyAsync(created.PlacementGroupId, TimeSpan.Zero, CancellationToken.None));
        Assert.Equal(["commit 10.0.0.1 0", "release-unused 10.0.0.1 keeping 3"], reserver.Log);
    }

    [Fact]
    public async Task OnlyTheLastRemovedGroupsAreKeptAndTheOldestLeaveTheStoreToo()
    {
        await NodeAsync("10.0.0.1", 4);
        await using var groups = new GcsPlacementGroupManager(_store, _nodes, _raylets, _clock, NullLogger.Instance, maxRemovedKept: 2);
        var ids = new List<string>();
        for (var i = 0; i < 4; i++)
        {
            var group = Group(PlacementStrategy.Pack, 1);
            Assert.Null(await groups.CreateAsync(group));
            await groups.SchedulePendingAsync(CancellationToken.None);
            _clock.Advance(TimeSpan.FromMilliseconds(1));
            ids.Add(group.PlacementGroupId);
        }
        foreach (var id in ids.Take(3)) Assert.True(await groups.RemoveAsync(id));

        // The two most recently removed, and the live one; the first is gone from the table and the store.
        Assert.Equal(ids.Skip(1), groups.List().Select(g => g.PlacementGroupId));
        Assert.Null(groups.Get(ids[0]));
        Assert.Null(await _store.GetAsync(GcsTables.PlacementGroups, ids[0]));
        Assert.False(await groups.RemoveAsync(ids[0]));

        // A GCS restarted on that store keeps the same bound for what it removes next.
        await using var restarted = new GcsPlacementGroupManager(_store, _nodes, new FakeReserver(), _clock, NullLogger.Instance, maxRemovedKept: 2);
        await restarted.LoadAsync(CancellationToken.None);
        Assert.True(await restarted.RemoveAsync(ids[3]));
        Assert.Equal(ids.Skip(2), restarted.List().Select(g => g.PlacementGroupId));
        Assert.Equal(2, (await _store.GetAllAsync(GcsTables.PlacementGroups)).Count);
    }
}
