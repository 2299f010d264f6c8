using System.Collections.Concurrent;
using Google.Protobuf;
using RaySharp.Common;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

namespace RaySharp.ObjectStore;

/// <summary>
/// The store's side of the raylet port: the core workers of this node create, seal, get (pin), release and free
/// objects over their framed connection. A connection's pins, and objects it left unsealed, go when it closes.
/// </summary>
internal sealed class ObjectStoreService(PlasmaStore store, ObjectManager objectManager, string nodeIp, Func<int> objectManagerPort) : IFramedHandler
{
    private readonly ConcurrentDictionary<FramedConnection, ConcurrentDictionary<string, byte>> _clients = new();
    private readonly ConcurrentDictionary<FramedConnection, string> _clientNames = new();

    private ConcurrentDictionary<string, byte> Client(FramedConnection connection) =>
        _clients.GetOrAdd(connection, c =>
        {
            var unsealed = new ConcurrentDictionary<string, byte>(StringComparer.Ordinal);
            c.Completion.ContinueWith(_ =>
            {
                _clients.TryRemove(c, out var left);
                _clientNames.TryRemove(c, out string? _);
                store.ReleaseAll(c, left?.Keys ?? []);
            }, TaskScheduler.Default);
            return unsealed;
        });

    public async ValueTask<ReadOnlyMemory<byte>> HandleAsync(int method, byte[] payload, CancellationToken cancellationToken)
    {
        var connection = FramedConnection.Current ?? throw new InvalidOperationException("store calls arrive on a connection");
        switch (method)
        {
            case FramedMethods.ObjectStoreConnect:
                Client(connection);
                var who = FramedRequests.Message<ObjectStoreClientInfo>(method, payload);
                _clientNames[connection] = who.WorkerId.Length > 0
                    ? $"worker {who.WorkerId[..Math.Min(8, who.WorkerId.Length)]} pid {who.Pid}"
                    : $"driver pid {who.Pid}" + (who.JobId.Length > 0 ? $" (job {who.JobId})" : "");
                return new ObjectStoreConnectReply
                {
                    ArenaPath = store.Arena.Path,
                    Capacity = store.Arena.Capacity,
                    NodeId = objectManager.NodeId,
                    NodeIpAddress = nodeIp,
                    ObjectManagerPort = objectManagerPort(),
                }.ToByteArray();
            case FramedMethods.ObjectCreate:
            {
                var request = FramedRequests.Message<ObjectCreateRequest>(method, payload);
                try
                {
                    var offset = await store.CreateAsync(request.ObjectId, request.Size, request.JobId, primary: true, _clientNames.GetValueOrDefault(connection, "")).ConfigureAwait(false);
                    Client(connection)[request.ObjectId] = 0;
                    return new ObjectCreateReply { Offset = offset }.ToByteArray();
                }
                catch (ObjectStoreFullException e)
                {
                    return new ObjectCreateReply { Offset = -1, Error = e.Message }.ToByteArray();
                }
            }
            case FramedMethods.ObjectGet:
            {
                // Ids, addresses, size and timeout checked at dispatch (FramedRequests): the object may be pulled from that address.
                var request = FramedRequests.Message<ObjectGetRequest>(method, payload);
                using var timeout = request.TimeoutMs > 0 ? new CancellationTokenSource(TimeSpan.FromMilliseconds(request.TimeoutMs)) : null;
                var token = timeout?.Token ?? CancellationToken.None;
                try
                {
                    while (true)
                    {
                        await objectManager.EnsureLocalAsync(request.Object, token).ConfigureAwait(false);
                        // Null: freed or evicted between the two steps; pull it again.
                        if (await store.PinAsync(request.Object.ObjectId, connection, token).ConfigureAwait(false) is { } at)
                            return new ObjectGetReply { Offset = at.Offset, Size = at.Size }.ToByteArray();
                        if (request.Object.NodeId == objectManager.NodeId) throw new KeyNotFoundException($"object {request.Object.ObjectId} was freed");
                    }
                }
                catch (OperationCanceledException) when (timeout?.IsCancellationRequested == true)
                {
                    return new ObjectGetReply { Offset = -1, Error = $"timed out after {request.TimeoutMs} ms" }.ToByteArray();
                }
                catch (Exception e) when (e is IOException or KeyNotFoundException or ObjectStoreFullException or InvalidOperationException or InvalidDataException)
                {
                    return new ObjectGetReply { Offset = -1, Error = e.Message }.ToByteArray();
                }
            }
            case FramedMethods.ObjectStoreStats:
            {
                var stats = store.Stats(largest: 20);
                stats.NodeId = objectManager.NodeId;
                stats.NodeIpAddress = nodeIp;
                (stats.PulledBytes, stats.NumPulls) = objectManager.PullTotals;
                stats.ServedBytes = objectManager.ServedBytes;
                return stats.ToByteArray();
            }
            default:
                throw new NotSupportedException($"method {method} is not served by the object store");
        }
    }

    public void OnNotify(int method, byte[] payload)
    {
        var connection = FramedConnection.Current;
        switch (method)
        {
            case FramedMethods.ObjectSeal:
                foreach (var id in FramedRequests.Message<ObjectIdsRequest>(method, payload).ObjectIds)
                {
                    if (connection is not null && _clients.TryGetValue(connection, out var unsealed)) unsealed.TryRemove(id, out _);
                    store.Seal(id);
                }
                break;
            case FramedMethods.ObjectRelease:
                if (connection is null) return;
                foreach (var id in FramedRequests.Message<ObjectIdsRequest>(method, payload).ObjectIds) store.Release(id, connection);
                break;
            case FramedMethods.ObjectFree:
                objectManager.Free(FramedRequests.Message<ObjectFreeRequest>(method, payload).Objects);
                break;
        }
    }
}
