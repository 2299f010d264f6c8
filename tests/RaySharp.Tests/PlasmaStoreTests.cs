using System.Security.Cryptography;
using Microsoft.Extensions.Logging.Abstractions;
using RaySharp.Common;
using RaySharp.ObjectStore;

namespace RaySharp.Tests;

/// <summary>
/// A node's object table in-process, on a real arena file and spill directory: spills and restores run outside the
/// store's lock (held at their disk I/O by the store's test seam while other calls go on), objects freed or read while
/// being spilled, eviction order, and ids that could name paths. Contents are compared by SHA-256.
/// </summary>
public sealed class PlasmaStoreTests : IDisposable
{
    private const long Mib = 1024 * 1024;
    private const string Job = "00000001";
    // A bound on waiting for an event, not a timing assertion: the calls awaited complete at once when the store is right.
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    private readonly DirectoryInfo _root = Directory.CreateTempSubdirectory("raysharp-store-");
    private readonly PlasmaArena _arena;
    private readonly PlasmaStore _store;
    private readonly List<DiskGate> _gates = [];

    public PlasmaStoreTests()
    {
        _arena = PlasmaArena.Create(Path.Combine(_root.FullName, "shm"), "test", UniqueId.New(), 16 * Mib);
        var options = new ObjectStoreOptions { Capacity = 16 * Mib, SpillDirectory = SpillDirectory };
        _store = new PlasmaStore(_arena, options, SpillDirectory, TimeProvider.System, NullLogger.Instance);
    }

    private string SpillDirectory => Path.Combine(_root.FullName, "session", "spill");

    public void Dispose()
    {
        // A failed test may leave a spill held: let it end, or disposing the store would wait for it.
        foreach (var gate in _gates) gate.Open();
        _store.Dispose();
        _arena.Dispose();
        _root.Delete(recursive: true);
    }

    private async Task<(string Id, byte[] Hash)> PutAsync(long size, bool primary = true)
    {
        var id = UniqueId.New();
        var offset = await _store.CreateAsync(id, size, Job, primary);
        var bytes = _arena.Span(offset, (int)size);
        Random.Shared.NextBytes(bytes);
        var hash = SHA256.HashData(bytes);
        _store.Seal(id);
        return (id, hash);
    }

    /// <summary>Pins the object for a reader of its own, hashes it in place and unpins it.</summary>
    private async Task<byte[]> HashAsync(string id)
    {
        var reader = new object();
        var at = await _store.PinAsync(id, reader, CancellationToken.None) ?? throw new KeyNotFoundException(id);
        var hash = SHA256.HashData(_arena.Span(at.Offset, (int)at.Size));
        _store.Release(id, reader);
        return hash;
    }

    private Rpc.Protocol.StoredObjectStats StatsOf(string id) => _store.Stats(100).Objects.Single(o => o.ObjectId == id);

    private string[] SpillFiles() => Directory.Exists(SpillDirectory) ? Directory.GetFiles(SpillDirectory) : [];

    /// <summary>Holds every spill (or restore) at its disk I/O until <see cref="DiskGate.Open"/>, counting them.</summary>
    private sealed class DiskGate
    {
        private readonly TaskCompletionSource _open = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public TaskCompletionSource<string> Reached { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public int Count;

        public DiskGate(PlasmaStore store, bool spills, List<DiskGate> all)
        {
            all.Add(this);
            store.BeforeDiskIo = async (id, spilling) =>
            {
                if (spilling != spills) return;
                Interlocked.Increment(ref Count);
                Reached.TrySetResult(id);
                await _open.Task;
            };
        }

        public void Open() => _open.TrySetResult();
    }

    [Fact]
    public async Task WhileAnObjectIsBeingSpilledOtherObjectsAreCreatedAndRead()
    {
        var a = await PutAsync(8 * Mib);
        var c = await PutAsync(1 * Mib);
        var gate = new DiskGate(_store, spills: true, _gates);
        // 7 MiB free: room for b means spilling a, the least recently used primary.
        var b = Task.Run(async () => await _store.CreateAsync(UniqueId.New(), 8 * Mib, Job, primary: true));
        Assert.Equal(a.Id, await gate.Reached.Task.WaitAsync(Deadline));

        // Other calls of the node go on while the spill is held at its disk write (each from its own thread, as from
        // its own connection: one blocked on the store's lock would not return).
        Assert.Equal(c.Hash, await Task.Run(() => HashAsync(c.Id)).WaitAsync(Deadline));
        var d = await Task.Run(async () => await _store.CreateAsync(UniqueId.New(), 1 * Mib, Job, primary: true)).WaitAsync(Deadline);
        Assert.True(d >= 0);
        // The object being spilled is still served from memory.
        Assert.Equal(a.Hash, SHA256.HashData(await Task.Run(() => _store.ReadChunk(a.Id, 0, (int)(8 * Mib))).WaitAsync(Deadline)));
        Assert.False(b.IsCompleted, "the create that needs a's memory finished before a was spilled");

        gate.Open();
        await b.WaitAsync(Deadline);
        Assert.True(StatsOf(a.Id).Spilled);
        Assert.Single(SpillFiles());
        // Read back from the spill file as it lies, then restored into the arena intact.
        Assert.Equal(a.Hash, SHA256.HashData(_store.ReadChunk(a.Id, 0, (int)(8 * Mib))));
        _store.Free(_store.Stats(100).Objects.Single(o => o.Size == 8 * Mib && !o.Spilled).ObjectId);
        Assert.Equal(a.Hash, await HashAsync(a.Id).WaitAsync(Deadline));
        Assert.False(StatsOf(a.Id).Spilled);
        Assert.Empty(SpillFiles());
    }

    [Fact]
    public async Task AnObjectFreedWhileBeingSpilledLeavesNoFileAndItsMemoryGoesToTheWaitingCreate()
    {
        var a = await PutAsync(8 * Mib);
        var c = await PutAsync(1 * Mib);
        var gate = new DiskGate(_store, spills: true, _gates);
        var bId = UniqueId.New();
        var b = Task.Run(async () => await _store.CreateAsync(bId, 8 * Mib, Job, primary: true));
        Assert.Equal(a.Id, await gate.Reached.Task.WaitAsync(Deadline));

        Assert.True(_store.Free(a.Id));
        Assert.Null(_store.Find(a.Id));
        gate.Open();
        await b.WaitAsync(Deadline);

        Assert.Null(_store.Find(a.Id));
        Assert.Empty(SpillFiles());
        var stats = _store.Stats(100);
        Assert.Equal(0, stats.NumSpilled);
        Assert.Equal(0, stats.SpilledBytes);
        Assert.Equal(9 * Mib, stats.Used);
        Assert.Equal(new[] { bId, c.Id }.Order(), stats.Objects.Select(o => o.ObjectId).Order());
        Assert.Equal(c.Hash, await HashAsync(c.Id));
    }

    [Fact]
    public async Task AnObjectPinnedWhileBeingSpilledStaysInMemoryAndTheStoreSpillsAnotherOne()
    {
        var a = await PutAsync(8 * Mib);
        var c = await PutAsync(1 * Mib);
        var gate = new DiskGate(_store, spills: true, _gates);
        var b = Task.Run(async () => await _store.CreateAsync(UniqueId.New(), 8 * Mib, Job, primary: true));
        Assert.Equal(a.Id, await gate.Reached.Task.WaitAsync(Deadline));

        var reader = new object();
        var pinned = await Task.Run(() => _store.PinAsync(a.Id, reader, CancellationToken.None)).WaitAsync(Deadline);
        Assert.NotNull(pinned);
        gate.Open();
        // a stays (its reader maps it), so c goes to disk instead: that frees the 8 MiB after a.
        await b.WaitAsync(Deadline);

        Assert.False(StatsOf(a.Id).Spilled);
        Assert.True(StatsOf(c.Id).Spilled);
        Assert.Equal(a.Hash, SHA256.HashData(_arena.Span(pinned.Value.Offset, (int)pinned.Value.Size)));
        _store.Release(a.Id, reader);
        Assert.Single(SpillFiles());
        Assert.Equal(2, gate.Count);
    }

    [Fact]
    public async Task ReadersOfAnObjectBeingRestoredWaitForThatOneRestoreWhileOtherObjectsAreServed()
    {
        var a = await PutAsync(8 * Mib);
        var c = await PutAsync(1 * Mib);
        var b = await PutAsync(8 * Mib);
        Assert.True(StatsOf(a.Id).Spilled);
        _store.Free(b.Id);
        var gate = new DiskGate(_store, spills: false, _gates);

        var first = Task.Run(() => HashAsync(a.Id));
        Assert.Equal(a.Id, await gate.Reached.Task.WaitAsync(Deadline));
        var second = Task.Run(() => HashAsync(a.Id));
        Assert.Equal(c.Hash, await Task.Run(() => HashAsync(c.Id)).WaitAsync(Deadline));
        Assert.True(await Task.Run(async () => await _store.CreateAsync(UniqueId.New(), 1 * Mib, Job, primary: true)).WaitAsync(Deadline) >= 0);
        Assert.False(first.IsCompleted, "the restore finished while held at its disk read");

        gate.Open();
        Assert.Equal(a.Hash, await first.WaitAsync(Deadline));
        Assert.Equal(a.Hash, await second.WaitAsync(Deadline));
        Assert.Equal(1, gate.Count);
        Assert.False(StatsOf(a.Id).Spilled);
        Assert.Empty(SpillFiles());
    }

    [Fact]
    public async Task MakingRoomEvictsUnpinnedSecondaryCopiesLeastRecentlyUsedFirstAndSpillsPrimariesOnlyAfterThem()
    {
        // First fit: p at 0, s1 at 2 MiB, s2 at 6, s3 at 10, free from 14.
        var p = await PutAsync(2 * Mib);
        var s1 = await PutAsync(4 * Mib, primary: false);
        var s2 = await PutAsync(4 * Mib, primary: false);
        var s3 = await PutAsync(4 * Mib, primary: false);
        // Reads make s1 and s2 more recently used than s3, which was made after them.
        await HashAsync(s1.Id);
        await HashAsync(s2.Id);

        var x = await PutAsync(6 * Mib);
        Assert.Equal(new[] { s1.Id, s2.Id }.Order(), _store.SecondaryCopies().Order());

        await HashAsync(s1.Id);
        var y = await PutAsync(4 * Mib);
        Assert.Equal([s1.Id], _store.SecondaryCopies());

        // A pinned copy is never evicted: with s1 pinned, room comes from the primaries (p, the least recently used).
        var reader = new object();
        Assert.NotNull(await _store.PinAsync(s1.Id, reader, CancellationToken.None));
        Assert.Equal(0, _store.Stats(100).NumSpilled);
        await PutAsync(2 * Mib);
        Assert.Equal([s1.Id], _store.SecondaryCopies());
        Assert.True(StatsOf(p.Id).Spilled);
        Assert.False(StatsOf(x.Id).Spilled);
        Assert.False(StatsOf(y.Id).Spilled);
        Assert.Equal(s1.Hash, await HashAsync(s1.Id));
        _store.Release(s1.Id, reader);
        Assert.Equal(p.Hash, await HashAsync(p.Id));
    }

    [Theory]
    [InlineData("../../x")]
    [InlineData("../../0123456789abcdef0123456789")]
    [InlineData("0123456789abcdef0123456789abcde")]
    [InlineData("0123456789abcdef0123456789abcdef0")]
    [InlineData("0123456789ABCDEF0123456789ABCDEF")]
    [InlineData("")]
    public async Task AnIdThatIsNotAnObjectIdIsRefusedAndNoFileIsMadeOutsideTheSpillDirectory(string id)
    {
        var before = Directory.GetFiles(_root.FullName, "*", SearchOption.AllDirectories).Order().ToArray();
        var refused = await Assert.ThrowsAsync<InvalidDataException>(async () => await _store.CreateAsync(id, 4 * Mib, Job, primary: true));
        Assert.Contains("is not a 32-character hex id", refused.Message);
        Assert.Null(_store.Find(id));
        // Whatever is made now spills only into the spill directory.
        for (var i = 0; i < 6; i++) await PutAsync(4 * Mib);
        Assert.True(_store.Stats(100).NumSpilled > 0);
        var made = Directory.GetFiles(_root.FullName, "*", SearchOption.AllDirectories).Except(before).ToArray();
        Assert.NotEmpty(made);
        Assert.All(made, f => Assert.Equal(SpillDirectory, Path.GetDirectoryName(f)));
        Assert.False(File.Exists(Path.GetFullPath(Path.Combine(SpillDirectory, "../../x"))));
    }
}
