namespace RaySharp.ObjectStore;

/// <summary>
/// Objects in chunks, as the object manager moves them between nodes: chunks read for another node (from the arena or a
/// spill file), and the chunks of an object being pulled here, marked as they arrive so that other nodes pulling it
/// from here can be served the chunks present already.
/// </summary>
internal sealed partial class PlasmaStore
{
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
}
