namespace RaySharp.ObjectStore;

/// <summary>
/// First-fit allocation of byte ranges in the arena, with neighbours merged on free. Objects in the store are large
/// (small values never come here), so the free list stays short. Each free block remembers when it became free and
/// whether its memory was already handed back to the system, so ranges reused at once keep their mapped pages.
/// Not thread-safe: the store calls it under its lock.
/// </summary>
internal sealed class ArenaAllocator(long capacity)
{
    /// <summary>Cache-line alignment: every object starts on its own line, and 8-byte element arrays are aligned.</summary>
    public const long Alignment = 64;

    private readonly SortedDictionary<long, FreeBlock> _free = new() { [0] = new FreeBlock(capacity, DateTimeOffset.MinValue, Released: true) };

    public long Capacity { get; } = capacity;
    public long Used { get; private set; }

    public static long Round(long size) => Math.Max(Alignment, (size + Alignment - 1) / Alignment * Alignment);

    public bool TryAllocate(long size, out long offset)
    {
        var need = Round(size);
        foreach (var (start, block) in _free)
        {
            if (block.Length < need) continue;
            _free.Remove(start);
            if (block.Length > need) _free[start + need] = block with { Length = block.Length - need };
            Used += need;
            offset = start;
            return true;
        }
        offset = -1;
        return false;
    }

    public void Free(long offset, long size, DateTimeOffset now)
    {
        var length = Round(size);
        Used -= length;
        var block = new FreeBlock(length, now, Released: false);
        // Merge with the block just after, then with the block just before.
        if (_free.Remove(offset + length, out var next)) block = block with { Length = length + next.Length };
        var previous = _free.Where(kv => kv.Key < offset).Select(kv => (long?)kv.Key).LastOrDefault();
        if (previous is { } p && p + _free[p].Length == offset)
        {
            block = block with { Length = _free[p].Length + block.Length };
            offset = p;
        }
        _free[offset] = block;
    }

    /// <summary>The largest single allocation that would succeed now.</summary>
    public long LargestFree => _free.Count == 0 ? 0 : _free.Values.Max(b => b.Length);

    /// <summary>Free blocks that have stayed free since <paramref name="before"/> and still hold memory; marked released.</summary>
    public List<(long Offset, long Length)> TakeReleasable(DateTimeOffset before)
    {
        var result = new List<(long, long)>();
        foreach (var (start, block) in _free.ToList())
        {
            if (block.Released || block.FreedAt > before) continue;
            _free[start] = block with { Released = true };
            result.Add((start, block.Length));
        }
        return result;
    }

    /// <summary>True when [offset, offset+length) lies inside one free block.</summary>
    public bool IsFree(long offset, long length)
    {
        foreach (var (start, block) in _free)
        {
            if (start > offset) return false;
            if (start + block.Length >= offset + length) return true;
        }
        return false;
    }

    private sealed record FreeBlock(long Length, DateTimeOffset FreedAt, bool Released);
}
