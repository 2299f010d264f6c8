using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Google.Protobuf;
using RaySharp.CoreWorker.Serialization;
using RaySharp.ObjectStore;
using RaySharp.ObjectStore.Client;
using RaySharp.Rpc.Protocol;

namespace RaySharp.CoreWorker.Objects;

/// <summary>
/// Where values go once serialized. Up to <see cref="ObjectStoreOptions.InlineThreshold"/> they travel inline (in the
/// task, the reply, the owner's memory); above it they are written once into this node's shared-memory store and
/// what travels is a <see cref="StoredObject"/> envelope, which readers on this node map in place and readers on
/// other nodes have pulled by their raylet first.
/// <para>
/// Ownership: the process that stored an object (a driver's <c>Ray.Put</c>, a submitter's large argument) or that
/// received a stored result (the task's submitter) owns it. The owner's envelope instance carries a
/// <see cref="OwnedObject"/> with it; when nothing in the owner references that envelope any more (no
/// <c>ObjectRef</c>, no pending task carrying it, no value it was nested in), the object is freed on every node.
/// </para>
/// One per process, owned by its <see cref="CoreWorkerRuntime"/>; the envelope helpers (<see cref="IsStored"/>,
/// <see cref="ParseEnvelope"/>) are static because they only read bytes.
/// </summary>
internal sealed class LocalObjectStore(Func<Task<string>> rayletAddress, string workerId)
{
    /// <summary>The first byte of an envelope: 0xC1 is the one byte MessagePack never writes.</summary>
    public const byte EnvelopeMarker = 0xC1;

    private readonly ConditionalWeakTable<ByteString, OwnedObject> _owned = new();

    /// <summary>Objects this large are stored after a collection (see <see cref="StoreAsync"/>); small against their copy time.</summary>
    private const int CollectBeforeStoring = 64 * 1024 * 1024;
    private readonly Lock _gate = new();
    private Func<Task<string>>? _rayletAddress = rayletAddress;
    private Task<PlasmaClient>? _client;

    /// <summary>
    /// Disconnects from the node's store: from here on values travel inline and stored ones cannot be read. Objects
    /// this process still owns are freed by the raylet, which sees the connection close.
    /// </summary>
    public void Close()
    {
        Task<PlasmaClient>? previous;
        lock (_gate)
        {
            _rayletAddress = null;
            previous = _client;
            _client = null;
        }
        if (previous is { IsCompletedSuccessfully: true }) _ = previous.Result.DisposeAsync().AsTask();
    }

    public bool IsConfigured => Volatile.Read(ref _rayletAddress) is not null;

    private Task<PlasmaClient> ClientAsync()
    {
        lock (_gate)
        {
            if (_client is { } existing && !(existing.IsFaulted || existing.IsCanceled || (existing.IsCompletedSuccessfully && existing.Result.Closed.IsCompleted)))
                return existing;
            var address = _rayletAddress ?? throw new InvalidOperationException("this process is not connected to a RaySharp node, so it has no object store");
            return _client = ConnectAsync(address, workerId);
        }

        static async Task<PlasmaClient> ConnectAsync(Func<Task<string>> address, string workerId) =>
            await PlasmaClient.ConnectAsync(await address().ConfigureAwait(false), new ObjectStoreClientInfo
            {
                Pid = Environment.ProcessId,
                WorkerId = workerId,
            }).ConfigureAwait(false);
    }

    public static bool IsStored(ByteString bytes) => bytes.Length > 0 && bytes[0] == EnvelopeMarker;

    public static StoredObject ParseEnvelope(ByteString bytes) => StoredObject.Parser.ParseFrom(bytes.Span[1..]);

    private static ByteString Envelope(StoredObject obj)
    {
        var bytes = new byte[1 + obj.CalculateSize()];
        bytes[0] = EnvelopeMarker;
        obj.WriteTo(bytes.AsSpan(1));
        return UnsafeByteOperations.UnsafeWrap(bytes);
    }

    /// <summary>Makes this process the owner of a stored object whose envelope it holds (a result it received).</summary>
    public ByteString TakeOwnership(ByteString bytes)
    {
        if (IsStored(bytes)) _owned.TryAdd(bytes, new OwnedObject(this, ParseEnvelope(bytes)));
        return bytes;
    }

    /// <summary>
    /// Serializes <paramref name="value"/> as <paramref name="type"/>: inline when small (or when this process has
    /// no store), else into the store. Stored objects made here are owned here unless <paramref name="owned"/> is false
    /// (a task's result: its submitter takes ownership when the reply arrives).
    /// </summary>
    public ValueTask<ByteString> SerializeAsync(Type type, object? value, string jobId, bool owned = true)
    {
        if (IsConfigured && RawLayout.TryGet(type, value, ObjectStoreOptions.InlineThreshold, out var raw))
            return StoreAsync(raw.TotalLength, static (span, s) => ((RawLayout)s!).WriteTo(span), raw, jobId, owned, () => ValueSerializer.Serialize(type, value));
        var bytes = ValueSerializer.Serialize(type, value);
        if (bytes.Length <= ObjectStoreOptions.InlineThreshold || !IsConfigured)
            return ValueTask.FromResult(UnsafeByteOperations.UnsafeWrap(bytes));
        return StoreAsync(bytes.Length, static (span, s) => ParallelCopy.Copy((byte[])s!, span), bytes, jobId, owned, () => bytes);
    }

    private async ValueTask<ByteString> StoreAsync(int size, SpanAction<byte, object?> write, object state, string jobId, bool owned, Func<byte[]> inline)
    {
        PlasmaClient client;
        try
        {
            client = await ClientAsync().ConfigureAwait(false);
        }
        catch (Exception e) when (e is InvalidOperationException or IOException or System.Net.Sockets.SocketException or Rpc.Transport.RemoteCallException)
        {
            // No node on this machine (a driver outside the cluster): the value travels inline, as small ones do.
            return UnsafeByteOperations.UnsafeWrap(inline());
        }
        if (size >= CollectBeforeStoring)
        {
            // Refs dropped since the last collection free their objects first, so this one reuses their memory: pages
            // already mapped are written at memory speed, fresh ones at a fraction of it.
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        StoredObject stored;
        try
        {
            stored = await client.PutAsync(Common.UniqueId.New(), jobId, size, write, state).ConfigureAwait(false);
        }
        catch (ObjectStoreFullException e)
        {
            throw new ObjectStoreFullCoreException(e.Message);
        }
        var envelope = Envelope(stored);
        if (owned) _owned.AddOrUpdate(envelope, new OwnedObject(this, stored));
        return envelope;
    }

    /// <summary>Reads a value serialized by <see cref="SerializeAsync"/>: inline bytes at once, a stored object mapped from this node's store.</summary>
    public ValueTask<T> DeserializeAsync<T>(ByteString bytes, TimeSpan? timeout = null)
    {
        if (!IsStored(bytes)) return ValueTask.FromResult(ValueSerializer.Deserialize<T>(bytes.Memory));
        return ReadStoredAsync(bytes, timeout, static memory => ValueSerializer.Deserialize<T>(memory));
    }

    public ValueTask<object?> DeserializeAsync(Type type, ByteString bytes) =>
        IsStored(bytes) ? ReadStoredAsync(type, bytes) : ValueTask.FromResult(ValueSerializer.Deserialize(type, bytes.Memory));

    // Its own method so that the inline path above allocates no closure.
    private ValueTask<object?> ReadStoredAsync(Type type, ByteString bytes) =>
        ReadStoredAsync(bytes, null, memory => ValueSerializer.Deserialize(type, memory));

    private async ValueTask<T> ReadStoredAsync<T>(ByteString envelope, TimeSpan? timeout, Func<ReadOnlyMemory<byte>, T> read)
    {
        var obj = ParseEnvelope(envelope);
        var client = await ClientAsync().ConfigureAwait(false);
        var mapped = await client.GetAsync(obj, timeout).ConfigureAwait(false);
        try
        {
            return read(mapped.Memory);
        }
        finally
        {
            // Values that point into the object (zero-copy reads) keep it pinned until they are collected.
            mapped.ReleaseIfNotRetained();
        }
    }

    /// <summary>
    /// Reads the arguments of a task or call into <paramref name="into"/> (from <paramref name="offset"/>) with the
    /// parameters' types; stored ones are mapped from the node's store (pulled to it first when made elsewhere).
    /// </summary>
    public async ValueTask ReadArgumentsAsync(Type[] types, IReadOnlyList<ByteString> args, object?[] into, int offset = 0)
    {
        for (var i = 0; i < types.Length; i++) into[i + offset] = await DeserializeAsync(types[i], args[i]).ConfigureAwait(false);
    }

    /// <summary>What the node's store holds (for <c>raysharp memory</c> and tests).</summary>
    public async Task<ObjectStoreStats> StatsAsync() => await (await ClientAsync().ConfigureAwait(false)).StatsAsync().ConfigureAwait(false);

    private void Free(StoredObject obj)
    {
        var client = _client;
        if (client is { IsCompletedSuccessfully: true }) client.Result.Free([obj]);
    }

    /// <summary>An object this process owns: freed on every node when its envelope is no longer referenced here.</summary>
    private sealed class OwnedObject
    {
        private readonly LocalObjectStore _store;
        private readonly StoredObject _obj;

        public OwnedObject(LocalObjectStore store, StoredObject obj)
        {
            _store = store;
            _obj = obj;
            // The collector sees nothing of the shared memory a ref holds: told, it collects dropped refs sooner.
            GC.AddMemoryPressure(Math.Max(1, obj.Size));
        }

        ~OwnedObject()
        {
            GC.RemoveMemoryPressure(Math.Max(1, _obj.Size));
            if (!Environment.HasShutdownStarted) _store.Free(_obj);
        }
    }
}

/// <summary>The object store is full even after evicting and spilling; the API turns it into its public exception.</summary>
internal sealed class ObjectStoreFullCoreException(string message) : Exception(message);

/// <summary>
/// Arrays and memory of primitive elements, laid out as MessagePack would write them with <see cref="RawArrayFormatters"/>
/// (a header, then the elements' bytes as they are in memory), so a large one is copied straight into the store with
/// no serializer in between.
/// </summary>
internal sealed class RawLayout
{
    private readonly byte[] _header;
    private readonly ReadOnlyMemory<byte> _raw;
    private readonly object? _keep;

    private RawLayout(byte[] header, ReadOnlyMemory<byte> raw, object? keep)
    {
        _header = header;
        _raw = raw;
        _keep = keep;
    }

    public int TotalLength => _header.Length + _raw.Length;

    /// <summary>
    /// The layout of a primitive array taking more than <paramref name="above"/> bytes once written; false for anything
    /// else. Every task argument and result comes through here, so small values are turned away before any allocation.
    /// </summary>
    public static bool TryGet(Type type, object? value, int above, out RawLayout layout)
    {
        layout = null!;
        if (value is byte[] bytes)
        {
            if (5 + bytes.Length <= above) return false;
            layout = new RawLayout(BinHeader(bytes.Length), bytes, bytes);
            return true;
        }
        if (value is not Array array || !type.IsArray || type.GetArrayRank() != 1 || RawArrayFormatters.TypeCode(type.GetElementType()!) is not { } code)
            return false;
        var length = Buffer.ByteLength(array);
        if (6 + length <= above) return false;
        layout = new RawLayout(ExtHeader(code, length), new RawArrayMemory(array, length).Memory, array);
        return true;
    }

    public void WriteTo(Span<byte> destination)
    {
        _header.CopyTo(destination);
        ParallelCopy.Copy(_raw.Span, destination[_header.Length..]);
        GC.KeepAlive(_keep);
    }

    private static byte[] BinHeader(int length)
    {
        var header = new byte[5];
        header[0] = 0xC6;
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(1), length);
        return header;
    }

    private static byte[] ExtHeader(sbyte code, int length)
    {
        var header = new byte[6];
        header[0] = 0xC9;
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(1), length);
        header[5] = unchecked((byte)code);
        return header;
    }

    /// <summary>The bytes of a primitive array as memory, without copying.</summary>
    private sealed class RawArrayMemory(Array array, int length) : MemoryManager<byte>
    {
        private GCHandle _handle;

        public override Span<byte> GetSpan() => MemoryMarshal.CreateSpan(ref MemoryMarshal.GetArrayDataReference(array), length);

        public override unsafe MemoryHandle Pin(int elementIndex = 0)
        {
            if (!_handle.IsAllocated) _handle = GCHandle.Alloc(array, GCHandleType.Pinned);
            return new MemoryHandle((byte*)_handle.AddrOfPinnedObject() + elementIndex);
        }

        public override void Unpin()
        {
            if (_handle.IsAllocated) _handle.Free();
        }

        protected override void Dispose(bool disposing) => Unpin();
    }
}
