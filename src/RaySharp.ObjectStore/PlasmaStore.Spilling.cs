using Microsoft.Extensions.Logging;
using RaySharp.Common;

namespace RaySharp.ObjectStore;

/// <summary>
/// Making room in the store: reserving space, evicting secondary copies, spilling primaries to disk and restoring them,
/// kept apart from the object table's calls because it is the one part that does disk I/O (outside the store's lock).
/// </summary>
internal sealed partial class PlasmaStore
{
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
}
