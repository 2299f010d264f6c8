using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace RaySharp.ObjectStore;

/// <summary>
/// The node's shared memory: one sparse file in <c>/dev/shm</c> (or <c>--plasma-directory</c>) as large as the store's
/// capacity, mapped once by the raylet and once by each core worker of the node. Pages are allocated when first
/// written and handed back (hole punched) when a range stays free, so the file costs only what objects use. One file
/// rather than a file per object because this machine's page faults dominate a put: a range reused while still mapped
/// is written at memory speed, a fresh file at a tenth of it.
/// </summary>
internal sealed unsafe partial class PlasmaArena : IDisposable
{
    private readonly SafeFileHandle _file;
    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;

    public string Path { get; }
    public long Capacity { get; }
    public byte* Base { get; }

    private PlasmaArena(string path, long capacity, SafeFileHandle file, MemoryMappedFile map, MemoryMappedViewAccessor view)
    {
        Path = path;
        Capacity = capacity;
        _file = file;
        _map = map;
        _view = view;
        byte* pointer = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
        Base = pointer + view.PointerOffset;
    }

    /// <summary>
    /// The arena file name of a node. The session name in it lets <c>raysharp stop</c> remove it with the session's other
    /// shared memory; the raylet's pid lets a later raylet remove arenas of raylets that were killed.
    /// </summary>
    public static string FileName(string sessionName, int rayletPid, string nodeId) => $"raysharp_{sessionName}{Marker}{rayletPid}_{nodeId}";

    private const string Marker = "_plasma_";

    public static PlasmaArena Create(string directory, string sessionName, string nodeId, long capacity)
    {
        System.IO.Directory.CreateDirectory(directory);
        var path = System.IO.Path.Combine(directory, FileName(sessionName, Environment.ProcessId, nodeId));
        var file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
        try
        {
            RandomAccess.SetLength(file, capacity);
            var map = MemoryMappedFile.CreateFromFile(file, null, capacity, MemoryMappedFileAccess.ReadWrite, HandleInheritability.None, leaveOpen: true);
            return new PlasmaArena(path, capacity, file, map, map.CreateViewAccessor(0, capacity, MemoryMappedFileAccess.ReadWrite));
        }
        catch
        {
            file.Dispose();
            File.Delete(path);
            throw;
        }
    }

    /// <summary>Maps an existing arena (a core worker's side).</summary>
    public static PlasmaArena Open(string path, long capacity)
    {
        var file = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
        try
        {
            var map = MemoryMappedFile.CreateFromFile(file, null, capacity, MemoryMappedFileAccess.ReadWrite, HandleInheritability.None, leaveOpen: true);
            return new PlasmaArena(path, capacity, file, map, map.CreateViewAccessor(0, capacity, MemoryMappedFileAccess.ReadWrite));
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    public Span<byte> Span(long offset, int length) => new(Base + offset, length);

    /// <summary>A range of the arena as <see cref="Memory{T}"/> (a network read lands there directly).</summary>
    public Memory<byte> Memory(long offset, int length) => new Range(Base + offset, length).Memory;

    private sealed class Range(byte* pointer, int length) : System.Buffers.MemoryManager<byte>
    {
        public override Span<byte> GetSpan() => new(pointer, length);

        public override System.Buffers.MemoryHandle Pin(int elementIndex = 0) => new(pointer + elementIndex);

        public override void Unpin() { }

        protected override void Dispose(bool disposing) { }
    }

    /// <summary>Gives a free range's memory back to the system; the file keeps its size and the range reads as zeros.</summary>
    public void Release(long offset, long length)
    {
        const long page = 4096;
        var start = (offset + page - 1) / page * page;
        var end = (offset + length) / page * page;
        if (end <= start) return;
        _ = Fallocate((int)_file.DangerousGetHandle(), FallocPunchHole | FallocKeepSize, start, end - start);
    }

    private const int FallocKeepSize = 1;
    private const int FallocPunchHole = 2;

    [LibraryImport("libc", EntryPoint = "fallocate", SetLastError = true)]
    private static partial int Fallocate(int fd, int mode, long offset, long length);

    public void Dispose()
    {
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
        _file.Dispose();
    }

    /// <summary>Removes the arena file (the raylet, when it stops).</summary>
    public void Delete()
    {
        try { File.Delete(Path); } catch (IOException) { }
    }

    /// <summary>Arena files of raylets that are no longer running (killed without a chance to clean up).</summary>
    public static void DeleteLeftovers(string directory)
    {
        if (!System.IO.Directory.Exists(directory)) return;
        foreach (var path in System.IO.Directory.EnumerateFiles(directory, "raysharp_*" + Marker + "*"))
        {
            var name = System.IO.Path.GetFileName(path);
            var rest = name[(name.LastIndexOf(Marker, StringComparison.Ordinal) + Marker.Length)..];
            var pidText = rest.Split('_')[0];
            if (int.TryParse(pidText, out var pid) && pid > 0 && !Common.Posix.IsAlive(pid))
            {
                try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            }
        }
    }
}

/// <summary>memcpy for large values: one slice per core above a few MiB, where one thread leaves bandwidth unused.</summary>
internal static unsafe class ParallelCopy
{
    private const int ParallelAbove = 8 * 1024 * 1024;

    public static void Copy(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        if (destination.Length < source.Length) throw new ArgumentException($"{source.Length} bytes do not fit in {destination.Length}", nameof(destination));
        fixed (byte* to = destination) Copy(source, to);
    }

    public static void Copy(ReadOnlySpan<byte> source, byte* destination)
    {
        if (source.Length < ParallelAbove || Environment.ProcessorCount < 2)
        {
            source.CopyTo(new Span<byte>(destination, source.Length));
            return;
        }
        fixed (byte* src = source)
        {
            var from = (nint)src;
            var to = (nint)destination;
            long total = source.Length;
            var parts = Math.Min(Environment.ProcessorCount, 8);
            var slice = (total / parts + 4095) / 4096 * 4096;
            Parallel.For(0, parts, i =>
            {
                var start = i * slice;
                if (start >= total) return;
                var length = Math.Min(slice, total - start);
                Buffer.MemoryCopy((byte*)from + start, (byte*)to + start, length, length);
            });
        }
    }
}
