using System.Buffers;
using Google.Protobuf;
using RaySharp.Common;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

namespace RaySharp.ObjectStore.Client;

/// <summary>
/// A core worker's handle on its node's object store: the arena mapped once into this process, and a framed
/// connection to the raylet for creating, sealing, getting (pinning), releasing and freeing objects. Writes and reads
/// go straight to shared memory; only the bookkeeping crosses the connection.
/// </summary>
internal sealed class PlasmaClient : IAsyncDisposable
{
    private readonly FramedConnection _raylet;
    private readonly PlasmaArena _arena;
    private readonly ObjectStoreConnectReply _info;

    private PlasmaClient(FramedConnection raylet, PlasmaArena arena, ObjectStoreConnectReply info)
    {
        _raylet = raylet;
        _arena = arena;
        _info = info;
    }

    public string NodeId => _info.NodeId;

    public Task Closed => _raylet.Completion;

    public static async Task<PlasmaClient> ConnectAsync(string rayletAddress, ObjectStoreClientInfo? who = null, CancellationToken cancellationToken = default)
    {
        if (!NodeAddress.TryParse(rayletAddress, out var host, out var port, out var error)) throw new ArgumentException(error);
        var connection = await FramedClient.ConnectAsync(host, port, handler: CollectOnRequest.Instance, cancellationToken: cancellationToken).ConfigureAwait(false);
        try
        {
            var info = ObjectStoreConnectReply.Parser.ParseFrom(
                await connection.CallAsync(FramedMethods.ObjectStoreConnect, (who ?? new ObjectStoreClientInfo { Pid = Environment.ProcessId }).ToByteArray(), cancellationToken).ConfigureAwait(false));
            return new PlasmaClient(connection, MappedArena(info.ArenaPath, info.Capacity), info);
        }
        catch
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private static readonly Dictionary<(string Path, long Capacity), PlasmaArena> s_arenas = [];

    /// <summary>
    /// One mapping per arena for the life of the process: a client made again (the raylet connection broke and came
    /// back) reuses it rather than mapping the same file once more each time. Mappings are never unmapped, as
    /// zero-copy values handed to user code may point into them; a process sees one arena per raylet it ever used.
    /// </summary>
    private static PlasmaArena MappedArena(string path, long capacity)
    {
        lock (s_arenas)
        {
            if (!s_arenas.TryGetValue((path, capacity), out var arena)) s_arenas[(path, capacity)] = arena = PlasmaArena.Open(path, capacity);
            return arena;
        }
    }

    /// <summary>Writes an object of <paramref name="size"/> bytes into the store with <paramref name="write"/> and seals it.</summary>
    public async Task<StoredObject> PutAsync(string objectId, string jobId, int size, SpanAction<byte, object?> write, object? state)
    {
        var request = new ObjectCreateRequest { ObjectId = objectId, Size = size, JobId = jobId };
        var reply = ObjectCreateReply.Parser.ParseFrom(await _raylet.CallAsync(FramedMethods.ObjectCreate, request.ToByteArray()).ConfigureAwait(false));
        if (reply.Error.Length > 0) throw new ObjectStoreFullException(reply.Error);
        try
        {
            write(_arena.Span(reply.Offset, size), state);
        }
        finally
        {
            // Sealed even when the writer threw: readers must not wait forever; the owner frees it with its ref.
            var seal = new ObjectIdsRequest();
            seal.ObjectIds.Add(objectId);
            _raylet.Notify(FramedMethods.ObjectSeal, seal.ToByteArray());
        }
        return new StoredObject
        {
            ObjectId = objectId,
            Size = size,
            NodeId = _info.NodeId,
            NodeIpAddress = _info.NodeIpAddress,
            ObjectManagerPort = _info.ObjectManagerPort,
            JobId = jobId,
        };
    }

    /// <summary>Maps an object, pulled from another node first when it is not on this one; pinned until the result is disposed or collected.</summary>
    public async Task<SharedObjectMemory> GetAsync(StoredObject obj, TimeSpan? timeout = null)
    {
        var request = new ObjectGetRequest { Object = obj, TimeoutMs = timeout is { } t ? Math.Max(1, (long)t.TotalMilliseconds) : 0 };
        var reply = ObjectGetReply.Parser.ParseFrom(await _raylet.CallAsync(FramedMethods.ObjectGet, request.ToByteArray()).ConfigureAwait(false));
        if (reply.Error.Length > 0) throw new IOException($"object {obj.ObjectId} ({obj.Size} bytes, made on node {obj.NodeId} at {obj.NodeIpAddress}) cannot be read: {reply.Error}");
        return Map(obj.ObjectId, reply.Offset, (int)reply.Size);
    }

    private unsafe SharedObjectMemory Map(string objectId, long offset, int size) => new(this, objectId, _arena.Base + offset, size);

    internal void Release(string objectId)
    {
        var request = new ObjectIdsRequest();
        request.ObjectIds.Add(objectId);
        _raylet.Notify(FramedMethods.ObjectRelease, request.ToByteArray());
    }

    /// <summary>The owner holds no reference to these objects any more.</summary>
    public void Free(IEnumerable<StoredObject> objects)
    {
        var request = new ObjectFreeRequest();
        request.Objects.Add(objects);
        if (request.Objects.Count > 0) _raylet.Notify(FramedMethods.ObjectFree, request.ToByteArray());
    }

    public async Task<ObjectStoreStats> StatsAsync() =>
        ObjectStoreStats.Parser.ParseFrom(await _raylet.CallAsync(FramedMethods.ObjectStoreStats, ReadOnlyMemory<byte>.Empty).ConfigureAwait(false));

    public async ValueTask DisposeAsync()
    {
        await _raylet.DisposeAsync().ConfigureAwait(false);
        // The arena stays mapped: zero-copy values handed to user code may still point into it.
    }
}

/// <summary>
/// Answers the raylet's <see cref="FramedMethods.ObjectStoreCollect"/>: a full collection (finalizers included) on a
/// pool thread, at most once a second, so that freed objects pinned only by dead views are unpinned.
/// </summary>
internal sealed class CollectOnRequest : IFramedHandler
{
    public static readonly CollectOnRequest Instance = new();
    private long _lastTicks;
    private int _scheduled;

    public ValueTask<ReadOnlyMemory<byte>> HandleAsync(int method, byte[] payload, CancellationToken cancellationToken) =>
        throw new NotSupportedException($"method {method} is not served by an object store client");

    public void OnNotify(int method, byte[] payload)
    {
        if (method != FramedMethods.ObjectStoreCollect || Interlocked.Exchange(ref _scheduled, 1) == 1) return;
        // Requests arriving while one is scheduled share it; none is lost.
        var wait = Math.Max(0, 1000 - (Environment.TickCount64 - Interlocked.Read(ref _lastTicks)));
        _ = Task.Delay(TimeSpan.FromMilliseconds(wait)).ContinueWith(_ =>
        {
            Volatile.Write(ref _scheduled, 0);
            GC.Collect();
            GC.WaitForPendingFinalizers();
            Interlocked.Exchange(ref _lastTicks, Environment.TickCount64);
        }, TaskScheduler.Default);
    }
}

/// <summary>
/// An object mapped from the store, pinned while this lives: values read without copying (a <c>ReadOnlyMemory&lt;T&gt;</c>
/// result) keep it alive through their <see cref="MemoryManager{T}"/>, and it unpins when disposed or collected.
/// </summary>
internal sealed unsafe class SharedObjectMemory : MemoryManager<byte>
{
    private readonly byte* _pointer;
    private readonly int _length;
    private readonly StorePin _pin;

    internal SharedObjectMemory(PlasmaClient client, string objectId, byte* pointer, int length)
    {
        _pin = new StorePin(client, objectId);
        ObjectId = objectId;
        _pointer = pointer;
        _length = length;
    }

    public string ObjectId { get; }

    /// <summary>Set when a zero-copy view of the object was handed out: it must stay pinned until collected.</summary>
    public bool Retained { get; set; }

    public override Span<byte> GetSpan() => new(_pointer, _length);

    public override MemoryHandle Pin(int elementIndex = 0) => new(_pointer + elementIndex);

    public override void Unpin() { }

    /// <summary>A typed view of part of the object, keeping it pinned as long as the view lives.</summary>
    public Memory<T> Slice<T>(int byteOffset, int count) where T : unmanaged
    {
        Retained = true;
        return new TypedView<T>(this, (T*)(_pointer + byteOffset), count).Memory;
    }

    /// <summary>Unpins now unless a zero-copy view was handed out (then the collector does it).</summary>
    public void ReleaseIfNotRetained()
    {
        if (!Retained) _pin.Release();
    }

    protected override void Dispose(bool disposing) => _pin.Release();

    /// <summary>The store's pin on the object: dropped once, when released or when the memory is no longer reachable.</summary>
    private sealed class StorePin(PlasmaClient client, string objectId)
    {
        private int _released;

        public void Release()
        {
            if (Interlocked.Exchange(ref _released, 1) != 0) return;
            GC.SuppressFinalize(this);
            client.Release(objectId);
        }

        ~StorePin()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0) client.Release(objectId);
        }
    }

    private sealed class TypedView<T>(SharedObjectMemory owner, T* pointer, int length) : MemoryManager<T> where T : unmanaged
    {
        // Holding the owner keeps the object pinned while any Memory<T> over this view is reachable.
        private readonly SharedObjectMemory _owner = owner;

        public override Span<T> GetSpan()
        {
            GC.KeepAlive(_owner);
            return new Span<T>(pointer, length);
        }

        public override MemoryHandle Pin(int elementIndex = 0) => new(pointer + elementIndex);

        public override void Unpin() { }

        protected override void Dispose(bool disposing) { }
    }
}
