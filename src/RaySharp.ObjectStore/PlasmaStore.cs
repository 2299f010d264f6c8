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

    /// <summary>Reads part of an object for another node: from the arena, or from its spill file.</summary>
    public byte[] ReadChunk(string id, long offset, int length)
    {
        while (true)
        {
            Entry? entry;
            string path;
            var chunk = GC.AllocateUninitializedArray<byte>(length);
            lock (_gate)
            {
                if (!_objects.TryGetValue(id, out entry)) throw new KeyNotFoundException($"object {id} is not in this store");
                if (!Within(entry, offset, length))
                    throw new InvalidDataException($"chunk {offset}+{length} is outside object {id} of {entry.Size} bytes");
                // A copy still being pulled serves the chunks it already has (so a broadcast spreads over the readers).
                if (!entry.Sealed.Task.IsCompletedSuccessfully && !HasChunks(entry, offset, length))
                    throw new KeyNotFoundException($"object {id} is still arriving here and lacks bytes {offset}..{offset + length}");
                entry.LastUsed = ++_clock;
                if (entry.Offset >= 0)
                {
                    Arena.Span(entry.Offset + offset, length).CopyTo(chunk);
                    return chunk;
                }
                path = entry.SpillPath!;
            }
            // From the spill file, outside the lock.
            try
            {
                using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
                if (RandomAccess.Read(file, chunk, offset) != length) throw new IOException($"spill file {path} of object {id} is shorter than {entry.Size} bytes");
                return chunk;
            }
            catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
            {
                // Restored (its file deleted) or freed meanwhile: look again, unless the file is simply gone.
                lock (_gate)
                {
                    if (IsCurrent(entry) && entry.SpillPath == path) throw new IOException($"the spill file of object {id} is gone: {e.Message}", e);
                }
            }
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

    /// <summary>
    /// Finds <paramref name="size"/> bytes in the arena and hands them to <paramref name="claim"/> under the lock (after
    /// <paramref name="check"/>, which may refuse by throwing). Makes room as Ray does: evicts unpinned secondary copies,
    /// least recently used first (under the lock: no I/O), then spills unpinned primaries, least recently used first,
    /// outside the lock; when nothing is left to spill but spills are in progress, waits for them.
    /// </summary>
    private async ValueTask<long> ReserveAsync(string id, long size, Action? check, Action<long> claim)
    {
        while (true)
        {
            List<(Entry Entry, long Offset)> victims;
            Task ended;
            lock (_gate)
            {
                check?.Invoke();
                if (TryAllocateEvicting(size, out var offset))
                {
                    claim(offset);
                    return offset;
                }
                victims = PickSpills(size);
                if (victims.Count == 0 && _spilling == 0) throw Full(id, size);
                ended = _spillEnded.Task;
            }
            if (victims.Count > 0) await SpillAsync(victims).ConfigureAwait(false);
            else await ended.ConfigureAwait(false);
        }
    }

    private ObjectStoreFullException Full(string id, long size)
    {
        var pinned = _objects.Values.Where(e => e.Offset >= 0 && (e.Pins > 0 || !e.Sealed.Task.IsCompleted)).Sum(e => e.Size);
        return new ObjectStoreFullException(
            $"object {id} needs {Mib(size)} but the object store ({Mib(Arena.Capacity)}) has {Mib(_allocator.LargestFree)} free in one piece " +
            $"after evicting and spilling everything it could; {Mib(pinned)} is in use by readers and writers right now. " +
            "Read fewer large objects at once, or start the node with a larger --object-store-memory.");
    }

    private static string Mib(long bytes) => $"{bytes / (1024.0 * 1024):0.#} MiB";

    private static bool Evictable(Entry e) => e.Offset >= 0 && e.Pins == 0 && !e.Spilling && e.Sealed.Task.IsCompletedSuccessfully;

    /// <summary>Allocates, evicting secondary copies (least recently used first) until a range of <paramref name="size"/> is free.</summary>
    private bool TryAllocateEvicting(long size, out long offset)
    {
        if (_allocator.TryAllocate(size, out offset)) return true;
        foreach (var entry in _objects.Values.Where(e => !e.Primary && Evictable(e)).OrderBy(e => e.LastUsed).ToList())
        {
            if (_allocator.LargestFree >= ArenaAllocator.Round(size)) break;
            LogEvicted(_logger, entry.Id, entry.Size);
            Delete(entry);
        }
        return _allocator.TryAllocate(size, out offset);
    }

    /// <summary>
    /// Unpinned primaries to spill, least recently used first, as many as free enough bytes in all (the next round takes
    /// more when the freed ranges are not contiguous); each is marked as spilling, so no other call picks it.
    /// </summary>
    private List<(Entry Entry, long Offset)> PickSpills(long size)
    {
        var victims = new List<(Entry, long)>();
        var free = _allocator.Capacity - _allocator.Used;
        foreach (var entry in _objects.Values.Where(e => e.Primary && Evictable(e)).OrderBy(e => e.LastUsed))
        {
            if (victims.Count > 0 && free >= ArenaAllocator.Round(size)) break;
            entry.Spilling = true;
            _spilling++;
            victims.Add((entry, entry.Offset));
            free += ArenaAllocator.Round(entry.Size);
        }
        return victims;
    }

    /// <summary>Only a checked object id names a spill file; a counter keeps two spills of one id apart.</summary>
    private string SpillPathOf(string id)
    {
        CheckId(id);
        return Path.Combine(_spillDirectory, $"{id}.{Interlocked.Increment(ref _spillFiles)}");
    }

    private async Task SpillAsync(List<(Entry Entry, long Offset)> victims)
    {
        Exception? failure = null;
        foreach (var (entry, offset) in victims)
        {
            var path = SpillPathOf(entry.Id);
            var written = false;
            try
            {
                if (BeforeDiskIo is { } hook) await hook(entry.Id, true).ConfigureAwait(false);
                Directory.CreateDirectory(_spillDirectory);
                // The arena range stays the spiller's until the commit below (freeing the object meanwhile does not
                // release it), so the bytes cannot change under the copy.
                using var file = File.OpenHandle(path, FileMode.Create, FileAccess.Write, FileShare.None, FileOptions.Asynchronous);
                for (long done = 0; done < entry.Size;)
                {
                    var length = (int)Math.Min(entry.Size - done, 64 * 1024 * 1024);
                    await RandomAccess.WriteAsync(file, Arena.Memory(offset + done, length), done).ConfigureAwait(false);
                    done += length;
                }
                written = true;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                failure ??= e;
            }
            CommitSpill(entry, offset, path, written);
        }
        if (failure is not null)
            throw new ObjectStoreFullException($"the object store is full and spilling to {_spillDirectory} failed: {failure.Message}");
    }

    private void CommitSpill(Entry entry, long offset, string path, bool written)
    {
        var keepFile = false;
        lock (_gate)
        {
            entry.Spilling = false;
            _spilling--;
            if (!IsCurrent(entry))
            {
                // Freed while being spilled: its range was left to this spill.
                _allocator.Free(offset, entry.Size, _time.GetUtcNow());
            }
            else if (written && entry.Pins == 0)
            {
                _allocator.Free(offset, entry.Size, _time.GetUtcNow());
                entry.Offset = -1;
                entry.SpillPath = path;
                _spilledBytes += entry.Size;
                keepFile = true;
                LogSpilled(_logger, entry.Id, entry.Size, path);
            }
            // Else a reader pinned it meanwhile (it stays in memory), or the write failed.
            var ended = _spillEnded;
            _spillEnded = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            ended.TrySetResult();
        }
        if (!keepFile) TryDelete(path);
    }

    /// <summary>Reads a spilled object back into the arena; completes its <see cref="Entry.Restoring"/> however it ends.</summary>
    private async Task RestoreAsync(Entry entry)
    {
        long offset = -1;
        try
        {
            offset = await ReserveAsync(entry.Id, entry.Size, check: null, claim: _ => { }).ConfigureAwait(false);
            if (BeforeDiskIo is { } hook) await hook(entry.Id, false).ConfigureAwait(false);
            string? path;
            lock (_gate) path = IsCurrent(entry) ? entry.SpillPath : null;
            if (path is null) return;
            try
            {
                using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.Asynchronous);
                for (long read = 0; read < entry.Size;)
                {
                    var length = (int)Math.Min(entry.Size - read, 64 * 1024 * 1024);
                    var n = await RandomAccess.ReadAsync(file, Arena.Memory(offset + read, length), read).ConfigureAwait(false);
                    if (n <= 0) throw new IOException($"spill file {path} of object {entry.Id} is shorter than {entry.Size} bytes");
                    read += n;
                }
            }
            catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
            {
                // Freed meanwhile (its file deleted): the reader finds it gone.
                lock (_gate)
                {
                    if (IsCurrent(entry)) throw new IOException($"the spill file of object {entry.Id} is gone: {e.Message}", e);
                }
                return;
            }
            lock (_gate)
            {
                if (!IsCurrent(entry)) return;
                entry.Offset = offset;
                offset = -1;
                DeleteSpillFile(entry);
            }
            LogRestored(_logger, entry.Id, entry.Size);
        }
        finally
        {
            TaskCompletionSource? restoring;
            lock (_gate)
            {
                if (offset >= 0) _allocator.Free(offset, entry.Size, _time.GetUtcNow());
                restoring = entry.Restoring;
                entry.Restoring = null;
            }
            restoring?.TrySetResult();
        }
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    private void DeleteSpillFile(Entry entry)
    {
        if (entry.SpillPath is null) return;
        TryDelete(entry.SpillPath);
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
