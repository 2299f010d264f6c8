using Microsoft.Extensions.Logging;
using RaySharp.Common;
using RaySharp.Rpc.Protocol;

namespace RaySharp.ObjectStore;

/// <summary>An object could not get room in the store, even after evicting copies and spilling primaries.</summary>
internal sealed class ObjectStoreFullException(string message) : Exception(message);

/// <summary>
/// The object table of a node's store: where each object sits in the arena (or on disk, once spilled), whether it is
/// sealed, who pins it, and whether it is the primary copy (made here) or a secondary one (pulled from another node).
/// Making room follows Ray's order: evict unpinned secondary copies, least recently used first; then spill unpinned
/// primaries to disk; a pinned object, or one still referenced, is never dropped.
/// Disk I/O (spilling, restoring, chunks of spilled objects) happens outside the store's lock, so that the other calls
/// of the node go on meanwhile: an object being spilled stays readable in memory (a reader pinning it then keeps it
/// there, and the spill is dropped), and readers of an object being restored wait for that restore only.
/// </summary>
internal sealed partial class PlasmaStore : IDisposable
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, Entry> _objects = new(StringComparer.Ordinal);
    private readonly ArenaAllocator _allocator;
    private readonly ObjectStoreOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly string _spillDirectory;
    private readonly ITimer _releaseTimer;
    private long _spilledBytes;
    private long _clock;
    private long _spillFiles;
    // Spills in progress, and a signal replaced each time one ends: a call that needs room and finds nothing left to
    // spill waits for those rather than failing while memory is about to be freed.
    private int _spilling;
    private TaskCompletionSource _spillEnded = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public PlasmaStore(PlasmaArena arena, ObjectStoreOptions options, string spillDirectory, TimeProvider time, ILogger logger)
    {
        Arena = arena;
        _options = options;
        _time = time;
        _logger = logger;
        _spillDirectory = spillDirectory;
        _allocator = new ArenaAllocator(arena.Capacity);
        var period = options.ReleaseFreedMemoryAfter / 2;
        _releaseTimer = time.CreateTimer(_ => ReleaseIdleMemory(), null, period, period);
    }

    public PlasmaArena Arena { get; }

    /// <summary>
    /// Tests only: awaited outside the lock before a spill (true) or a restore (false) of the object touches the disk,
    /// so a test can hold one there and see the store serve other calls meanwhile.
    /// </summary>
    internal Func<string, bool, Task>? BeforeDiskIo { get; set; }

    /// <summary>Room for an object in the arena, made by evicting and spilling when needed.</summary>
    /// <exception cref="InvalidDataException">The id is not an object id (it names the object's spill file).</exception>
    public async ValueTask<long> CreateAsync(string id, long size, string jobId, bool primary, string createdBy = "")
    {
        CheckId(id);
        if (size < 0) throw new InvalidDataException($"object {id}: negative size {size}");
        // Before any eviction: making room cannot help, and sizes near long.MaxValue overflow the allocator's rounding
        // (to a few bytes allocated for an object of exabytes).
        if (size > Arena.Capacity)
            throw new ObjectStoreFullException($"object {id} needs {Mib(size)} but the object store ({Mib(Arena.Capacity)}) is smaller than that; start the node with a larger --object-store-memory");
        return await ReserveAsync(id, size,
            check: () =>
            {
                if (_objects.ContainsKey(id)) throw new InvalidOperationException($"object {id} already exists in this store");
            },
            claim: offset => _objects[id] = new Entry(id, size, jobId, primary) { Offset = offset, LastUsed = ++_clock, CreatedBy = createdBy }).ConfigureAwait(false);
    }

    // Every way into the store passes here (the framed requests are checked at dispatch too): the id becomes a file name.
    private static void CheckId(string id)
    {
        if (!UniqueId.IsValid(id))
            throw new InvalidDataException($"object id '{(id.Length <= 80 ? id : id[..80] + "…")}' is not a {UniqueId.Length * 2}-character hex id");
    }

    /// <summary>The object is written: readers waiting for it go on.</summary>
    public void Seal(string id)
    {
        Entry? entry;
        lock (_gate)
        {
            if (!_objects.TryGetValue(id, out entry) || entry.Sealed.Task.IsCompleted) return;
        }
        entry.Sealed.TrySetResult();
    }

    /// <summary>Drops an object that was never sealed (its writer failed or went away).</summary>
    public void Abort(string id)
    {
        Entry? entry;
        lock (_gate)
        {
            if (!_objects.TryGetValue(id, out entry) || entry.Sealed.Task.IsCompleted) return;
            Delete(entry);
        }
        entry.Sealed.TrySetException(new InvalidOperationException($"object {id} was never completed by its writer"));
    }

    /// <summary>The entry of an object made or being made here, or null.</summary>
    public Entry? Find(string id)
    {
        lock (_gate) return _objects.GetValueOrDefault(id);
    }

    /// <summary>
    /// Pins a sealed local object for <paramref name="client"/> and returns where it is in the arena, restoring it
    /// from disk first when it was spilled. Null when this node has no copy.
    /// </summary>
    public async Task<(long Offset, long Size)?> PinAsync(string id, object client, CancellationToken cancellationToken)
    {
        Entry? entry;
        lock (_gate) entry = _objects.GetValueOrDefault(id);
        if (entry is null) return null;
        await entry.Sealed.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        while (true)
        {
            Task? restoring = null;
            lock (_gate)
            {
                if (!IsCurrent(entry)) return null;
                if (entry.Offset >= 0)
                {
                    entry.Pins++;
                    entry.LastUsed = ++_clock;
                    if (!_pins.TryGetValue(client, out var held)) _pins[client] = held = new Dictionary<string, int>(StringComparer.Ordinal);
                    held[id] = held.GetValueOrDefault(id) + 1;
                    return (entry.Offset, entry.Size);
                }
                if (entry.Restoring is { } other) restoring = other.Task;
                else entry.Restoring = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            }
            // Then look again: restored (pin it), freed meanwhile (null), or the restore failed (try it here).
            if (restoring is not null) await restoring.WaitAsync(cancellationToken).ConfigureAwait(false);
            else await RestoreAsync(entry).ConfigureAwait(false);
        }
    }

    private bool IsCurrent(Entry entry) => _objects.TryGetValue(entry.Id, out var current) && current == entry;

    private readonly Dictionary<object, Dictionary<string, int>> _pins = new(ReferenceEqualityComparer.Instance);

    public void Release(string id, object client)
    {
        lock (_gate)
        {
            if (!_pins.TryGetValue(client, out var held) || !held.TryGetValue(id, out var count)) return;
            if (count == 1) held.Remove(id); else held[id] = count - 1;
            if (_objects.TryGetValue(id, out var entry)) Unpin(entry, 1);
        }
    }

    /// <summary>The clients pinning an object now.</summary>
    public List<object> PinnedBy(string id)
    {
        lock (_gate) return _pins.Where(kv => kv.Value.ContainsKey(id)).Select(kv => kv.Key).ToList();
    }

    /// <summary>A client went away: its pins go, and objects it was writing are dropped.</summary>
    public void ReleaseAll(object client, IEnumerable<string> unsealedByClient)
    {
        lock (_gate)
        {
            if (_pins.Remove(client, out var held))
            {
                foreach (var (id, count) in held)
                {
                    if (_objects.TryGetValue(id, out var entry)) Unpin(entry, count);
                }
            }
        }
        foreach (var id in unsealedByClient) Abort(id);
    }

    /// <summary>Ends a pin taken for no client: a chunk lent to a connection until written (<see cref="BorrowChunk"/>).</summary>
    private void UnpinBorrowed(string id)
    {
        lock (_gate)
        {
            if (_objects.TryGetValue(id, out var entry)) Unpin(entry, 1);
        }
    }

    private void Unpin(Entry entry, int count)
    {
        entry.Pins -= count;
        if (entry.Pins <= 0 && entry.FreeRequested) Delete(entry);
    }

    /// <summary>No reference to the object is left: every copy goes, once readers unpin it. True when it was here.</summary>
    public bool Free(string id)
    {
        lock (_gate)
        {
            if (!_objects.TryGetValue(id, out var entry)) return false;
            entry.FreeRequested = true;
            if (entry.Pins <= 0) Delete(entry);
            return true;
        }
    }

    /// <summary>Frees every object of a finished job.</summary>
    public int FreeJob(string jobId)
    {
        List<string> ids;
        lock (_gate) ids = _objects.Values.Where(e => e.JobId == jobId).Select(e => e.Id).ToList();
        foreach (var id in ids) Free(id);
        return ids.Count;
    }

    public ObjectStoreStats Stats(int largest)
    {
        lock (_gate)
        {
            var stats = new ObjectStoreStats
            {
                Capacity = Arena.Capacity,
                Used = _allocator.Used,
                SpilledBytes = _spilledBytes,
                NumObjects = _objects.Count,
                NumSpilled = _objects.Values.Count(e => e.Offset < 0),
            };
            stats.Objects.Add(_objects.Values.OrderByDescending(e => e.Size).Take(largest).Select(e => new StoredObjectStats
            {
                ObjectId = e.Id,
                Size = e.Size,
                JobId = e.JobId,
                Primary = e.Primary,
                Spilled = e.Offset < 0,
                Pins = e.Pins,
                CreatedBy = e.CreatedBy,
            }));
            return stats;
        }
    }

    /// <summary>Primary copies held here, in memory or spilled: objects the cluster would lose with this node.</summary>
    public int PrimaryCount()
    {
        lock (_gate) return _objects.Values.Count(e => e.Primary);
    }

    /// <summary>The objects this store holds a whole copy of that another node made (what the location table lists).</summary>
    public IReadOnlyList<string> SecondaryCopies()
    {
        lock (_gate) return _objects.Values.Where(e => !e.Primary && e.Sealed.Task.IsCompletedSuccessfully).Select(e => e.Id).ToList();
    }

    /// <summary>A secondary copy left this store (freed or evicted). Raised under the store's lock: keep handlers short.</summary>
    public event Action<string>? SecondaryCopyDropped;

    private void Delete(Entry entry)
    {
        _objects.Remove(entry.Id);
        if (!entry.Primary && entry.Sealed.Task.IsCompletedSuccessfully) SecondaryCopyDropped?.Invoke(entry.Id);
        // A spill in progress owns the range until it ends (it is still copying from it).
        if (entry.Offset >= 0 && !entry.Spilling) _allocator.Free(entry.Offset, entry.Size, _time.GetUtcNow());
        entry.Offset = -1;
        DeleteSpillFile(entry);
    }

    private void ReleaseIdleMemory()
    {
        List<(long Offset, long Length)> ranges;
        lock (_gate) ranges = _allocator.TakeReleasable(_time.GetUtcNow() - _options.ReleaseFreedMemoryAfter);
        // Outside the lock: a range cannot be allocated between these two steps without first being marked in use,
        // which the allocator does under the lock, so punching a range handed out meanwhile must not happen:
        // re-check under the lock per range.
        foreach (var (offset, length) in ranges)
        {
            lock (_gate)
            {
                if (_allocator.IsFree(offset, length)) Arena.Release(offset, length);
            }
        }
    }

    public void Dispose()
    {
        _releaseTimer.Dispose();
        lock (_gate)
        {
            foreach (var entry in _objects.Values.ToList()) Delete(entry);
        }
        try { if (Directory.Exists(_spillDirectory)) Directory.Delete(_spillDirectory, recursive: true); } catch (IOException) { }
    }

    internal sealed class Entry(string id, long size, string jobId, bool primary)
    {
        public string Id { get; } = id;
        public long Size { get; } = size;
        public string JobId { get; } = jobId;
        public bool Primary { get; } = primary;
        public TaskCompletionSource Sealed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        /// <summary>Where in the arena; -1 while spilled (or once deleted).</summary>
        public long Offset { get; set; }
        public string? SpillPath { get; set; }
        /// <summary>Being written to disk: still readable in the arena, and not to be picked again.</summary>
        public bool Spilling { get; set; }
        /// <summary>Being read back from disk: completed when that ends, however it ends.</summary>
        public TaskCompletionSource? Restoring { get; set; }
        public int Pins { get; set; }
        public string CreatedBy { get; set; } = "";
        public bool FreeRequested { get; set; }
        public long LastUsed { get; set; }
        /// <summary>For a copy being pulled: which chunks are written (served to other readers before the copy is complete).</summary>
        public System.Collections.BitArray? Present { get; set; }
        public int ChunkSize { get; set; }
        /// <summary>Object-manager addresses of nodes that pulled a copy from here: told when the object is freed.</summary>
        public HashSet<string> CopyHolders { get; } = new(StringComparer.Ordinal);
    }

    [LoggerMessage(EventId = 700, Level = LogLevel.Information, Message = "Spilled object {ObjectId} ({Size} bytes) to {Path}")]
    private static partial void LogSpilled(ILogger logger, string objectId, long size, string path);

    [LoggerMessage(EventId = 701, Level = LogLevel.Information, Message = "Restored object {ObjectId} ({Size} bytes) from disk")]
    private static partial void LogRestored(ILogger logger, string objectId, long size);

    [LoggerMessage(EventId = 702, Level = LogLevel.Debug, Message = "Evicted the secondary copy of object {ObjectId} ({Size} bytes)")]
    private static partial void LogEvicted(ILogger logger, string objectId, long size);
}
