using System.Collections.Concurrent;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using RaySharp.Common;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

namespace RaySharp.ObjectStore;

/// <summary>
/// Moves objects between nodes. A read of an object this node lacks becomes one pull (shared by every reader that
/// asks meanwhile): room is made in the local store, the object is fetched from the node holding it in chunks with
/// several in flight over one connection, then sealed as a secondary copy. It also serves chunks of local objects to
/// other nodes, remembering who took a copy so that freeing the object frees those copies too.
/// </summary>
internal sealed partial class ObjectManager : IFramedHandler, IAsyncDisposable
{
    private readonly PlasmaStore store;
    private readonly ObjectStoreOptions options;
    private readonly string nodeId;
    private readonly ILogger logger;
    private readonly IObjectLocations? _locations;
    private readonly TimeSpan _chunkDelay;

    public ObjectManager(PlasmaStore store, ObjectStoreOptions options, string nodeId, ILogger logger, IObjectLocations? locations = null)
    {
        this.store = store;
        this.options = options;
        this.nodeId = nodeId;
        this.logger = logger;
        _locations = locations;
        // Fault injection for tests: slow transfers down enough to kill a source in the middle of one.
        _chunkDelay = int.TryParse(Environment.GetEnvironmentVariable(ChunkDelayEnv), out var ms) && ms > 0 ? TimeSpan.FromMilliseconds(ms) : TimeSpan.Zero;
        store.SecondaryCopyDropped += id => Report(id, added: false);
    }

    /// <summary>Environment variable (tests only): milliseconds this node waits before serving each chunk.</summary>
    public const string ChunkDelayEnv = "RAYSHARP_testing_object_chunk_delay_ms";

    private readonly ConcurrentDictionary<string, Task> _pulls = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, Task<FramedConnection>> _peers = new(StringComparer.Ordinal);
    private long _pulledBytes;
    private long _servedBytes;
    private int _numPulls;

    /// <summary>This node's object-manager address, <c>ip:port</c>, once its server listens.</summary>
    public string Address { get; set; } = "";

    public string NodeId => nodeId;

    public (long Bytes, int Count) PullTotals => (Interlocked.Read(ref _pulledBytes), Volatile.Read(ref _numPulls));

    public long ServedBytes => Interlocked.Read(ref _servedBytes);

    /// <summary>Makes <paramref name="obj"/> local: at once when it is here, else pulled from its node.</summary>
    public Task EnsureLocalAsync(StoredObject obj, CancellationToken cancellationToken)
    {
        if (store.Find(obj.ObjectId) is { } entry) return entry.Sealed.Task.WaitAsync(cancellationToken);
        if (obj.NodeId == nodeId)
        {
            return Task.FromException(new KeyNotFoundException(
                $"object {obj.ObjectId} is no longer in this node's store: it was freed (no reference to it was left) or lost"));
        }
        var pull = _pulls.GetOrAdd(obj.ObjectId, _ => PullAsync(obj));
        return pull.WaitAsync(cancellationToken);
    }

    private async Task PullAsync(StoredObject obj)
    {
        try
        {
            // Yield first: GetOrAdd must have stored this task before it can complete and remove itself.
            await Task.Yield();
            long offset;
            try
            {
                offset = await store.CreateAsync(obj.ObjectId, obj.Size, obj.JobId, primary: false, createdBy: $"pulled from {obj.NodeIpAddress}").ConfigureAwait(false);
            }
            catch (InvalidOperationException)
            {
                // Made here meanwhile (a racing pull finished and was removed): wait for that copy.
                await (store.Find(obj.ObjectId)?.Sealed.Task ?? Task.CompletedTask).ConfigureAwait(false);
                return;
            }
            store.BeginChunks(obj.ObjectId, options.ChunkSize);
            // Known as a holder from the start: readers pulling the same object at the same time take chunks from
            // each other (each pulls in its own random order), not all from the primary's node.
            Report(obj.ObjectId, added: true);
            try
            {
                await FetchAsync(obj, offset).ConfigureAwait(false);
            }
            catch (Exception e)
            {
                // Whatever ended the fetch, the half-pulled object must not stay: a later read of it here would find it
                // and wait for a seal that never comes (it hung when every holder, the primary last, timed out), and
                // other readers would keep asking this node for chunks it will never have.
                store.Abort(obj.ObjectId);
                Report(obj.ObjectId, added: false);
                if (e is IOException or System.Net.Sockets.SocketException or RemoteCallException or InvalidDataException or TimeoutException)
                    throw new IOException($"could not pull object {obj.ObjectId} ({obj.Size} bytes, primary copy on node {obj.NodeId}) from any node holding it: {e.Message}", e);
                throw;
            }
            store.Seal(obj.ObjectId);
            Interlocked.Add(ref _pulledBytes, obj.Size);
            Interlocked.Increment(ref _numPulls);
            LogPulled(logger, obj.ObjectId, obj.Size);
        }
        finally
        {
            _pulls.TryRemove(obj.ObjectId, out _);
        }
    }

    /// <summary>
    /// The other nodes known to hold the object, whole or in part, in random order (the primary's node excluded: every
    /// reader knows it, so it is the one to spare).
    /// </summary>
    private async Task<List<string>> HoldersAsync(StoredObject obj, string primary)
    {
        var holders = new List<string>();
        if (_locations is null) return holders;
        try
        {
            holders.AddRange((await _locations.GetAsync(obj.ObjectId).ConfigureAwait(false)).Where(a => a != Address && a != primary));
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // The directory is an optimisation: without it the primary still serves.
        }
        Random.Shared.Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(holders));
        return holders;
    }

    /// <summary>
    /// Lists every copy this node holds in the location table again (the GCS restarted: that table is not stored), so
    /// readers find them as before. Returns how many were listed.
    /// </summary>
    public int ReportCopiesAgain()
    {
        var copies = store.SecondaryCopies();
        foreach (var id in copies) Report(id, added: true);
        return copies.Count;
    }

    private void Report(string objectId, bool added)
    {
        if (_locations is null || Address.Length == 0) return;
        _ = Task.Run(async () =>
        {
            try
            {
                if (added) await _locations.AddAsync(objectId, nodeId, Address).ConfigureAwait(false);
                else await _locations.RemoveAsync(objectId, nodeId).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // Best effort: a stale location costs one failed attempt, a missing one a farther source.
            }
        });
    }

    /// <summary>
    /// Fetches every chunk, several at a time, in a random order. Each chunk is asked of the other holders first (a
    /// holder still pulling answers only for chunks it has), then of the primary's node. A holder that cannot be reached
    /// (its node died, even mid-transfer) is dropped and its chunks are asked elsewhere. The list of holders is refreshed
    /// as the pull goes, so readers that started together find each other.
    /// </summary>
    private async Task FetchAsync(StoredObject obj, long offset)
    {
        var primary = NodeAddress.Format(obj.NodeIpAddress, obj.ObjectManagerPort);
        var chunk = options.ChunkSize;
        var count = (int)((obj.Size + chunk - 1) / chunk);
        var order = Enumerable.Range(0, count).ToArray();
        Random.Shared.Shuffle(order);
        var dead = new HashSet<string>(StringComparer.Ordinal);
        var holders = await HoldersAsync(obj, primary).ConfigureAwait(false);
        var refreshedAt = Environment.TickCount64;
        var next = -1;
        async Task Worker()
        {
            int position;
            while ((position = Interlocked.Increment(ref next)) < count)
            {
                if (Environment.TickCount64 - Volatile.Read(ref refreshedAt) > 250)
                {
                    Volatile.Write(ref refreshedAt, Environment.TickCount64);
                    Volatile.Write(ref holders, await HoldersAsync(obj, primary).ConfigureAwait(false));
                }
                var i = order[position];
                var start = (long)i * chunk;
                var length = (int)Math.Min(chunk, obj.Size - start);
                var request = new ObjectChunkRequest { ObjectId = obj.ObjectId, Offset = start, Length = length, Requester = Address }.ToByteArray();
                List<string> candidates;
                lock (dead) candidates = Volatile.Read(ref holders).Where(h => !dead.Contains(h)).Append(primary).ToList();
                Exception? last = null;
                var done = false;
                // The chunk's bytes go from the socket's buffer straight into its place in the arena.
                var destination = store.Arena.Memory(offset + start, length);
                foreach (var source in candidates)
                {
                    try
                    {
                        var peer = await PeerAsync(source).ConfigureAwait(false);
                        using var deadline = new CancellationTokenSource(options.ChunkTimeout);
                        await peer.CallIntoAsync(FramedMethods.ObjectChunk, request, destination, deadline.Token).ConfigureAwait(false);
                        done = true;
                        break;
                    }
                    catch (OperationCanceledException)
                    {
                        // A holder that does not answer (hung, or cut off and TCP has not given up yet): ask the next.
                        last = new TimeoutException($"{source} sent no chunk of {obj.ObjectId} within {options.ChunkTimeout.TotalSeconds:0} s");
                        bool first;
                        lock (dead) first = dead.Add(source);
                        if (first) LogSourceFailed(logger, obj.ObjectId, source, last.Message);
                    }
                    catch (RemoteCallException e)
                    {
                        last = e; // that holder lacks the chunk (still arriving there, or freed): ask the next
                    }
                    catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or InvalidDataException)
                    {
                        last = e;
                        bool first;
                        lock (dead) first = dead.Add(source);
                        if (first) LogSourceFailed(logger, obj.ObjectId, source, e.Message);
                    }
                }
                if (!done) throw last ?? new IOException("no node holds the object");
                store.MarkChunk(obj.ObjectId, i);
            }
        }
        await Task.WhenAll(Enumerable.Range(0, Math.Max(1, Math.Min(options.ChunksInFlight, count))).Select(_ => Worker())).ConfigureAwait(false);
    }

    private async Task<FramedConnection> PeerAsync(string address)
    {
        while (true)
        {
            var connecting = _peers.GetOrAdd(address, a =>
                // Addresses come from other processes (an object's owner, the location table): one that does not parse
                // is a source that cannot be reached, like any other.
                NodeAddress.TryParse(a, out var host, out var port, out var error)
                    ? FramedClient.ConnectAsync(host, port, handler: this)
                    : Task.FromException<FramedConnection>(new InvalidDataException($"'{a}' is not a node address: {error}")));
            FramedConnection connection;
            try
            {
                connection = await connecting.ConfigureAwait(false);
            }
            catch
            {
                _peers.TryRemove(new KeyValuePair<string, Task<FramedConnection>>(address, connecting));
                throw;
            }
            if (!connection.Completion.IsCompleted) return connection;
            _peers.TryRemove(new KeyValuePair<string, Task<FramedConnection>>(address, connecting));
        }
    }

    /// <summary>
    /// The owner freed these objects: drop the local copies, and tell the nodes involved (the primary's node when the
    /// primary is elsewhere; the nodes that pulled copies from here).
    /// </summary>
    public void Free(IEnumerable<StoredObject> objects)
    {
        var byNode = new Dictionary<string, ObjectIdsRequest>(StringComparer.Ordinal);
        foreach (var obj in objects)
        {
            foreach (var holder in FreeLocal(obj.ObjectId)) Add(byNode, holder, obj.ObjectId);
            if (obj.NodeId != nodeId) Add(byNode, NodeAddress.Format(obj.NodeIpAddress, obj.ObjectManagerPort), obj.ObjectId);
        }
        Send(byNode);
    }

    private string[] FreeLocal(string id)
    {
        var entry = store.Find(id);
        if (entry is null) return [];
        string[] holders;
        lock (entry.CopyHolders) holders = entry.CopyHolders.ToArray();
        store.Free(id);
        // Still here: readers pin it, some through zero-copy views that only the collector ends. Ask them to collect.
        if (store.Find(id) is not null)
        {
            foreach (var reader in store.PinnedBy(id).OfType<FramedConnection>()) reader.Notify(FramedMethods.ObjectStoreCollect, ReadOnlyMemory<byte>.Empty);
        }
        return holders;
    }

    private static void Add(Dictionary<string, ObjectIdsRequest> byNode, string address, string id)
    {
        if (!byNode.TryGetValue(address, out var request)) byNode[address] = request = new ObjectIdsRequest();
        request.ObjectIds.Add(id);
    }

    private void Send(Dictionary<string, ObjectIdsRequest> byNode)
    {
        foreach (var (address, request) in byNode)
        {
            if (address == Address) continue;
            _ = Task.Run(async () =>
            {
                try
                {
                    var peer = await PeerAsync(address).ConfigureAwait(false);
                    peer.Notify(FramedMethods.ObjectFreeCopies, request.ToByteArray());
                }
                catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or RemoteCallException or InvalidDataException)
                {
                    // The node is gone, and its copies with it.
                }
            });
        }
    }

    public async ValueTask<ReadOnlyMemory<byte>> HandleAsync(int method, byte[] payload, CancellationToken cancellationToken)
    {
        if (method != FramedMethods.ObjectChunk) throw new NotSupportedException($"method {method} is not served on the object-manager port");
        var request = FramedRequests.Message<ObjectChunkRequest>(method, payload);
        if (request.Offset == 0 && request.Requester.Length > 0 && store.Find(request.ObjectId) is { } entry)
        {
            lock (entry.CopyHolders) entry.CopyHolders.Add(request.Requester);
        }
        if (_chunkDelay > TimeSpan.Zero) await Task.Delay(_chunkDelay, cancellationToken).ConfigureAwait(false);
        // Served from shared memory as it lies; the object stays pinned until the connection has written the chunk.
        var bytes = store.BorrowChunk(request.ObjectId, request.Offset, request.Length);
        Interlocked.Add(ref _servedBytes, bytes.Length);
        return bytes;
    }

    public void OnNotify(int method, byte[] payload)
    {
        if (method != FramedMethods.ObjectFreeCopies) return;
        var byNode = new Dictionary<string, ObjectIdsRequest>(StringComparer.Ordinal);
        foreach (var id in FramedRequests.Message<ObjectIdsRequest>(method, payload).ObjectIds)
        {
            foreach (var holder in FreeLocal(id)) Add(byNode, holder, id);
        }
        Send(byNode);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var peer in _peers.Values)
        {
            try { await (await peer.ConfigureAwait(false)).DisposeAsync().ConfigureAwait(false); }
            catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or RemoteCallException or OperationCanceledException) { }
        }
    }

    [LoggerMessage(EventId = 711, Level = LogLevel.Warning, Message = "Pulling object {ObjectId} from {Source} failed ({Reason}); its chunks are asked of another holder")]
    private static partial void LogSourceFailed(ILogger logger, string objectId, string source, string reason);

    [LoggerMessage(EventId = 710, Level = LogLevel.Debug, Message = "Pulled object {ObjectId} ({Size} bytes)")]
    private static partial void LogPulled(ILogger logger, string objectId, long size);
}

/// <summary>The cluster's object location table (the GCS's), as the object manager uses it.</summary>
internal interface IObjectLocations
{
    Task<IReadOnlyList<string>> GetAsync(string objectId);
    Task AddAsync(string objectId, string nodeId, string address);
    Task RemoveAsync(string objectId, string nodeId);
}
