using Microsoft.Extensions.Logging;
using RaySharp.Rpc.Protocol;

namespace RaySharp.ObjectStore;

/// <summary>An object could not get room in the store, even after evicting copies and spilling primaries.</summary>
internal sealed class ObjectStoreFullException(string message) : Exception(message);

/// <summary>
/// The object table of a node's store: where each object sits in the arena (or on disk, once spilled), whether it is
/// sealed, who pins it, and whether it is the primary copy (made here) or a secondary one (pulled from another node).
/// Making room follows Ray's order: evict unpinned secondary copies, least recently used first; then spill unpinned
/// primaries to disk; a pinned object, or one still referenced, is never dropped.
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

    /// <summary>Room for an object in the arena, made by evicting and spilling when needed.</summary>
    public long Create(string id, long size, string jobId, bool primary, string createdBy = "")
    {
        if (size < 0) throw new ArgumentException($"object {id}: negative size {size}");
        // Before any eviction: making room cannot help, and sizes near long.MaxValue overflow the allocator's rounding
        // (to a few bytes allocated for an object of exabytes).
        if (size > Arena.Capacity)
            throw new ObjectStoreFullException($"object {id} needs {Mib(size)} but the object store ({Mib(Arena.Capacity)}) is smaller than that; start the node with a larger --object-store-memory");
        lock (_gate)
        {
            if (_objects.ContainsKey(id)) throw new InvalidOperationException($"object {id} already exists in this store");
            var offset = Allocate(id, size);
            _objects[id] = new Entry(id, size, jobId, primary) { Offset = offset, LastUsed = ++_clock, CreatedBy = createdBy };
            return offset;
        }
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
        lock (_gate)
        {
            if (!_objects.TryGetValue(id, out var current) || current != entry) return null;
            if (entry.Offset < 0) Restore(entry);
            entry.Pins++;
            entry.LastUsed = ++_clock;
            if (!_pins.TryGetValue(client, out var held)) _pins[client] = held = new Dictionary<string, int>(StringComparer.Ordinal);
            held[id] = held.GetValueOrDefault(id) + 1;
            return (entry.Offset, entry.Size);
        }
    }

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

    /// <summary>Reads part of an object for another node: from the arena, or from its spill file.</summary>
    public byte[] ReadChunk(string id, long offset, int length)
    {
        lock (_gate)
        {
            if (!_objects.TryGetValue(id, out var entry)) throw new KeyNotFoundException($"object {id} is not in this store");
            if (!Within(entry, offset, length))
                throw new InvalidDataException($"chunk {offset}+{length} is outside object {id} of {entry.Size} bytes");
            // A copy still being pulled serves the chunks it already has (so a broadcast spreads over the readers).
            if (!entry.Sealed.Task.IsCompletedSuccessfully && !HasChunks(entry, offset, length))
                throw new KeyNotFoundException($"object {id} is still arriving here and lacks bytes {offset}..{offset + length}");
            var chunk = GC.AllocateUninitializedArray<byte>(length);
            if (entry.Offset >= 0)
            {
                Arena.Span(entry.Offset + offset, length).CopyTo(chunk);
            }
            else
            {
                using var file = File.OpenHandle(entry.SpillPath!, FileMode.Open, FileAccess.Read);
                RandomAccess.Read(file, chunk, offset);
            }
            entry.LastUsed = ++_clock;
            return chunk;
        }
    }

    /// <summary>
    /// Part of an object for another node, without copying: a view of the arena that keeps the object pinned until the
    /// connection has written it (<see cref="Rpc.Transport.IReleasedAfterWrite"/>). Spilled objects are read from disk.
    /// </summary>
    public ReadOnlyMemory<byte> BorrowChunk(string id, long offset, int length)
    {
        lock (_gate)
        {
            // Bounds first: HasChunks indexes by them, and the view points wherever they say.
            if (_objects.TryGetValue(id, out var entry) && entry.Offset >= 0 && Within(entry, offset, length)
                && (entry.Sealed.Task.IsCompletedSuccessfully || HasChunks(entry, offset, length)))
            {
                var view = new ChunkView(this, id, entry.Offset + offset, length);
                entry.Pins++;
                entry.LastUsed = ++_clock;
                return view.Memory;
            }
        }
        return ReadChunk(id, offset, length);
    }

    private sealed unsafe class ChunkView(PlasmaStore store, string id, long offset, int length)
        : System.Buffers.MemoryManager<byte>, Rpc.Transport.IReleasedAfterWrite
    {
        private int _released;

        public override Span<byte> GetSpan() => new(store.Arena.Base + offset, length);

        public override System.Buffers.MemoryHandle Pin(int elementIndex = 0) => new(store.Arena.Base + offset + elementIndex);

        public override void Unpin() { }

        public void Released()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0) store.UnpinBorrowed(id);
        }

        protected override void Dispose(bool disposing) => Released();
    }

    /// <summary>Starts tracking which chunks of a copy being pulled are written.</summary>
    public void BeginChunks(string id, int chunkSize)
    {
        lock (_gate)
        {
            if (!_objects.TryGetValue(id, out var entry)) return;
            entry.ChunkSize = chunkSize;
            entry.Present = new System.Collections.BitArray((int)((entry.Size + chunkSize - 1) / chunkSize));
        }
    }

    public void MarkChunk(string id, int index)
    {
        lock (_gate)
        {
            if (_objects.TryGetValue(id, out var entry) && entry.Present is { } present) present[index] = true;
        }
    }

    // Not offset + length <= size: a peer's offset near long.MaxValue would overflow past the check.
    private static bool Within(Entry entry, long offset, int length) => offset >= 0 && length >= 0 && offset <= entry.Size - length;

    private static bool HasChunks(Entry entry, long offset, int length)
    {
        if (entry.Present is not { } present || entry.Offset < 0 || length == 0) return false;
        for (var i = (int)(offset / entry.ChunkSize); i <= (int)((offset + length - 1) / entry.ChunkSize); i++)
        {
            if (!present[i]) return false;
        }
        return true;
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

    private long Allocate(string id, long size)
    {
        if (_allocator.TryAllocate(size, out var offset)) return offset;
        MakeRoom(size);
        if (_allocator.TryAllocate(size, out offset)) return offset;
        var pinned = _objects.Values.Where(e => e.Offset >= 0 && (e.Pins > 0 || !e.Sealed.Task.IsCompleted)).Sum(e => e.Size);
        throw new ObjectStoreFullException(
            $"object {id} needs {Mib(size)} but the object store ({Mib(Arena.Capacity)}) has {Mib(_allocator.LargestFree)} free in one piece " +
            $"after evicting and spilling everything it could; {Mib(pinned)} is in use by readers and writers right now. " +
            "Read fewer large objects at once, or start the node with a larger --object-store-memory.");
    }

    private static string Mib(long bytes) => $"{bytes / (1024.0 * 1024):0.#} MiB";

    /// <summary>Evicts secondary copies, then spills primaries, least recently used first, until a range of <paramref name="size"/> is free.</summary>
    private void MakeRoom(long size)
    {
        var candidates = _objects.Values
            .Where(e => e.Offset >= 0 && e.Pins == 0 && e.Sealed.Task.IsCompletedSuccessfully)
            .OrderBy(e => e.Primary ? 1 : 0).ThenBy(e => e.LastUsed)
            .ToList();
        foreach (var entry in candidates)
        {
            if (_allocator.LargestFree >= ArenaAllocator.Round(size)) return;
            if (entry.Primary) Spill(entry);
            else
            {
                LogEvicted(_logger, entry.Id, entry.Size);
                Delete(entry);
            }
        }
    }

    private void Spill(Entry entry)
    {
        Directory.CreateDirectory(_spillDirectory);
        var path = Path.Combine(_spillDirectory, entry.Id);
        using (var file = File.OpenHandle(path, FileMode.Create, FileAccess.Write))
        {
            long written = 0;
            while (written < entry.Size)
            {
                var length = (int)Math.Min(entry.Size - written, 64 * 1024 * 1024);
                RandomAccess.Write(file, Arena.Span(entry.Offset + written, length), written);
                written += length;
            }
        }
        _allocator.Free(entry.Offset, entry.Size, _time.GetUtcNow());
        entry.Offset = -1;
        entry.SpillPath = path;
        _spilledBytes += entry.Size;
        LogSpilled(_logger, entry.Id, entry.Size, path);
    }

    private void Restore(Entry entry)
    {
        var offset = Allocate(entry.Id, entry.Size);
        using (var file = File.OpenHandle(entry.SpillPath!, FileMode.Open, FileAccess.Read))
        {
            long read = 0;
            while (read < entry.Size)
            {
                var length = (int)Math.Min(entry.Size - read, 64 * 1024 * 1024);
                var n = RandomAccess.Read(file, Arena.Span(offset + read, length), read);
                if (n <= 0) throw new IOException($"spill file {entry.SpillPath} of object {entry.Id} is shorter than {entry.Size} bytes");
                read += n;
            }
        }
        entry.Offset = offset;
        DeleteSpillFile(entry);
        LogRestored(_logger, entry.Id, entry.Size);
    }

    private void DeleteSpillFile(Entry entry)
    {
        if (entry.SpillPath is null) return;
        try { File.Delete(entry.SpillPath); } catch (IOException) { }
        _spilledBytes -= entry.Size;
        entry.SpillPath = null;
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
        if (entry.Offset >= 0) _allocator.Free(entry.Offset, entry.Size, _time.GetUtcNow());
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
