namespace RaySharp.ObjectStore;

/// <summary>Settings of a node's object store. Each default is the value used when the option is not given.</summary>
internal sealed class ObjectStoreOptions
{
    /// <summary>Values whose serialized size is above this travel through the store; smaller ones inline. Default 100 KiB (Ray's max_direct_call_object_size).</summary>
    public const int InlineThreshold = 100 * 1024;

    /// <summary>Where the arena file lives. Default <c>/dev/shm</c> (<c>--plasma-directory</c>).</summary>
    public string Directory { get; set; } = "/dev/shm";

    /// <summary>
    /// Bytes of shared memory the store may use (<c>--object-store-memory</c>). Default 30% of the machine's memory,
    /// never more than 95% of what the arena's file system has free.
    /// </summary>
    public long? Capacity { get; set; }

    /// <summary>Where primary copies go when the store is full (<c>--object-spilling-directory</c>). Default: the session directory's <c>spill/</c>.</summary>
    public string? SpillDirectory { get; set; }

    /// <summary>A freed range of the arena gives its memory back to the system after staying free this long (reused at once before that, with no page faults). Default 2 s.</summary>
    public TimeSpan ReleaseFreedMemoryAfter { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Size of the pieces an object is pulled in between nodes. Default 4 MiB.</summary>
    public int ChunkSize { get; set; } = 4 * 1024 * 1024;

    /// <summary>Chunks of one pull in flight at once. Default 4.</summary>
    public int ChunksInFlight { get; set; } = 4;

    /// <summary>
    /// How long a pull waits for one chunk from one holder before asking the next (a holder that is alive but does
    /// not answer, which TCP alone never notices). Default 30 s: a 4 MiB chunk takes milliseconds;
    /// <c>RAYSHARP_object_chunk_timeout_ms</c> overrides it for a raylet.
    /// </summary>
    public TimeSpan ChunkTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>The capacity to use: the configured one, or the default, checked against the file system.</summary>
    public long ResolveCapacity()
    {
        var free = new DriveInfo(Directory).AvailableFreeSpace;
        var limit = (long)(free * 0.95);
        if (Capacity is { } asked)
        {
            if (asked < 1024 * 1024)
                throw new ArgumentException($"--object-store-memory must be at least 1 MiB, got {asked} bytes");
            if (asked > limit)
                throw new ArgumentException(
                    $"--object-store-memory is {asked >> 20} MiB but {Directory} has only {free >> 20} MiB free; " +
                    "give a smaller --object-store-memory, or a --plasma-directory with more room");
            return asked;
        }
        var total = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        return Math.Min((long)(total * 0.3), limit);
    }
}
