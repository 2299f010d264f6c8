using System.Collections.Concurrent;
using Microsoft.Extensions.Logging.Abstractions;
using RaySharp.Common;
using RaySharp.Gcs;
using RaySharp.Gcs.Actors;
using RaySharp.Gcs.Storage;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Tests;

/// <summary>
/// The actor state machine on its own: <see cref="GcsActorDirectory.Transition"/> against an in-memory store, with no
/// raylet or worker (a restart's placement is only recorded).
/// </summary>
public sealed class GcsActorDirectoryTests
{
    private static readonly WorkerAddress s_worker = new() { IpAddress = "127.0.0.1", Port = 1, Pid = 42, NodeId = "node" };
    private readonly RecordingStore _store = new();
    private readonly ConcurrentQueue<(string ActorId, int Incarnation)> _placed = new();
    private readonly GcsActorDirectory _directory;

    public GcsActorDirectoryTests()
    {
        _directory = new GcsActorDirectory(new GcsServerOptions(), _store, TimeProvider.System, NullLogger.Instance,
            (entry, incarnation) => _placed.Enqueue((entry.Info.ActorId, incarnation)));
    }

    private ActorEntry Register(int maxRestarts = 0, string name = "")
    {
        var request = new RegisterActorRequest
        {
            Info = new ActorInfo { ActorId = UniqueId.New(), JobId = "00000001", ClassName = "Counter", MaxRestarts = maxRestarts, Name = name, Namespace = "ns" },
            Creation = new PushTaskRequest(),
        };
        var (entry, earlier) = _directory.Register(request);
        Assert.Null(earlier);
        return entry;
    }

    private bool Transition(ActorEntry entry, ActorTransition change)
    {
        lock (_directory.Gate) return _directory.Transition(entry, change);
    }

    private async Task<List<ActorState>> StoredStatesAsync(ActorEntry entry)
    {
        await _directory.WrittenAsync(entry);
        return _store.Rows(entry.Info.ActorId).Select(r => r.State).ToList();
    }

    [Fact]
    public async Task AnActorGoesAliveRestartsAndDiesWithOneOrderedWritePerTransitionAndTheIncarnationBumpedOnlyByRestarts()
    {
        var entry = Register(maxRestarts: 2);
        Assert.Equal(ActorState.ActorPendingCreation, entry.Info.State);

        Assert.True(Transition(entry, ActorTransition.Alive(s_worker)));
        Assert.Equal((ActorState.ActorAlive, 0, 0), (entry.Info.State, entry.Incarnation, entry.Info.NumRestarts));
        Assert.Equal(s_worker, entry.Info.Address);

        Assert.True(Transition(entry, ActorTransition.Restarting()));
        Assert.Equal((ActorState.ActorRestarting, 1, 1), (entry.Info.State, entry.Incarnation, entry.Info.NumRestarts));
        Assert.Null(entry.Info.Address);
        Assert.Equal([(entry.Info.ActorId, 1)], _placed);

        Assert.True(Transition(entry, ActorTransition.Alive(s_worker)));
        Assert.Equal((ActorState.ActorAlive, 1), (entry.Info.State, entry.Incarnation));

        Assert.True(Transition(entry, ActorTransition.Dead("done")));
        Assert.Equal((ActorState.ActorDead, 1, "done"), (entry.Info.State, entry.Incarnation, entry.Info.DeathCause));
        Assert.True(entry.Info.EndTimeMs > 0);

        Assert.Equal(
            [ActorState.ActorPendingCreation, ActorState.ActorAlive, ActorState.ActorRestarting, ActorState.ActorAlive, ActorState.ActorDead],
            await StoredStatesAsync(entry));
        Assert.Null(await _store.GetAsync(GcsTables.ActorSpecs, entry.Info.ActorId));
    }

    [Fact]
    public async Task AWorkerLostWhileTheActorIsCreatedOrRestartingRestartsItAgainWithinItsBudgetThenBuriesIt()
    {
        var entry = Register(maxRestarts: 2);
        lock (_directory.Gate) _directory.WorkerLost(entry, "its worker died");
        Assert.Equal((ActorState.ActorRestarting, 1), (entry.Info.State, entry.Incarnation));
        lock (_directory.Gate) _directory.WorkerLost(entry, "its worker died");
        Assert.Equal((ActorState.ActorRestarting, 2), (entry.Info.State, entry.Incarnation));
        lock (_directory.Gate) _directory.WorkerLost(entry, "its worker died");
        Assert.Equal(ActorState.ActorDead, entry.Info.State);
        Assert.Equal("its worker died, and its 2 restart(s) are used up", entry.Info.DeathCause);
        Assert.Equal(2, entry.Incarnation);
        Assert.Equal([1, 2], _placed.Select(p => p.Incarnation));
        Assert.Equal(
            [ActorState.ActorPendingCreation, ActorState.ActorRestarting, ActorState.ActorRestarting, ActorState.ActorDead],
            await StoredStatesAsync(entry));
    }

    [Fact]
    public async Task DeadIsFinal()
    {
        var entry = Register(maxRestarts: -1, name: "counter");
        Assert.True(Transition(entry, ActorTransition.Alive(s_worker)));
        Assert.True(Transition(entry, ActorTransition.Dead("first cause")));
        var written = await StoredStatesAsync(entry);

        Assert.False(Transition(entry, ActorTransition.Alive(s_worker)));
        Assert.False(Transition(entry, ActorTransition.Restarting()));
        Assert.False(Transition(entry, ActorTransition.Dead("second cause")));
        Assert.False(Transition(entry, new ActorTransition(ActorState.ActorPendingCreation)));
        lock (_directory.Gate) _directory.WorkerLost(entry, "its worker died");

        Assert.Equal((ActorState.ActorDead, "first cause", 0, 0), (entry.Info.State, entry.Info.DeathCause, entry.Incarnation, entry.Info.NumRestarts));
        Assert.Empty(_placed);
        Assert.Equal(written, await StoredStatesAsync(entry));
        // Its death freed its name.
        Assert.Null(_directory.GetNamed("counter", "ns"));
        Assert.NotEqual(entry.Info.ActorId, Register(name: "counter").Info.ActorId);
    }

    [Fact]
    public async Task AKillWinsOverARestartOrAPlacementReportedAfterIt()
    {
        var entry = Register(maxRestarts: -1);
        Assert.True(Transition(entry, ActorTransition.Alive(s_worker)));
        Assert.True(Transition(entry, ActorTransition.Dead("killed by Ray.Kill", kill: true)));
        Assert.True(entry.KillRequested);

        // The worker's end, reported once the kill stopped it, does not bring the actor back, though restarts are left.
        lock (_directory.Gate) _directory.WorkerLost(entry, "its worker died");
        Assert.False(Transition(entry, ActorTransition.Restarting()));
        // Nor does a placement of its incarnation that was in flight.
        Assert.False(Transition(entry, ActorTransition.Alive(s_worker)));

        Assert.Equal((ActorState.ActorDead, "killed by Ray.Kill", 0), (entry.Info.State, entry.Info.DeathCause, entry.Incarnation));
        Assert.Empty(_placed);
        Assert.Equal([ActorState.ActorPendingCreation, ActorState.ActorAlive, ActorState.ActorDead], await StoredStatesAsync(entry));
    }

    [Fact]
    public void TransitionsTheStateMachineDoesNotHaveAreRefused()
    {
        var entry = Register(maxRestarts: 1);
        Assert.Throws<InvalidOperationException>(() => Transition(entry, new ActorTransition(ActorState.ActorPendingCreation)));
        Assert.Throws<InvalidOperationException>(() => Transition(entry, new ActorTransition(ActorState.ActorAlive))); // no address
        Assert.True(Transition(entry, ActorTransition.Alive(s_worker)));
        Assert.Throws<InvalidOperationException>(() => Transition(entry, ActorTransition.Alive(s_worker)));
        Assert.True(Transition(entry, ActorTransition.Restarting()));
        // Its one restart is used: a second is not the state machine's to give.
        Assert.Throws<InvalidOperationException>(() => Transition(entry, ActorTransition.Restarting()));
        Assert.Equal((ActorState.ActorRestarting, 1, 1), (entry.Info.State, entry.Incarnation, entry.Info.NumRestarts));
    }

    [Fact]
    public async Task WaitersAreWokenByATransition()
    {
        var entry = Register(maxRestarts: 1);
        var alive = _directory.WaitAsync(entry.Info.ActorId, minRestarts: 1, TimeSpan.FromSeconds(30), CancellationToken.None);
        Assert.True(Transition(entry, ActorTransition.Alive(s_worker)));
        Assert.False(alive.IsCompleted, "a waiter for the first restart answered on the first incarnation");
        Assert.True(Transition(entry, ActorTransition.Restarting()));
        Assert.True(Transition(entry, ActorTransition.Alive(s_worker)));
        var row = await alive.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal((ActorState.ActorAlive, 1), (row!.State, row.NumRestarts));
    }

    /// <summary>An in-memory store that also keeps every actor row written, in order.</summary>
    private sealed class RecordingStore : IGcsStore
    {
        private readonly InMemoryGcsStore _inner = new();
        private readonly ConcurrentQueue<(string Key, ActorInfo Row)> _rows = new();

        public IEnumerable<ActorInfo> Rows(string actorId) => _rows.Where(r => r.Key == actorId).Select(r => r.Row);

        public Task PutAsync(string table, string key, byte[] value)
        {
            if (table == GcsTables.Actors) _rows.Enqueue((key, ActorInfo.Parser.ParseFrom(value)));
            return _inner.PutAsync(table, key, value);
        }

        public Task<bool> PutIfAbsentAsync(string table, string key, byte[] value) => _inner.PutIfAbsentAsync(table, key, value);
        public Task<byte[]?> GetAsync(string table, string key) => _inner.GetAsync(table, key);
        public Task<bool> DeleteAsync(string table, string key) => _inner.DeleteAsync(table, key);
        public Task<IReadOnlyList<KeyValuePair<string, byte[]>>> GetAllAsync(string table) => _inner.GetAllAsync(table);
        public Task<IReadOnlyList<string>> KeysAsync(string table, string prefix) => _inner.KeysAsync(table, prefix);
        public Task<long> IncrementAsync(string table, string key) => _inner.IncrementAsync(table, key);
    }
}
