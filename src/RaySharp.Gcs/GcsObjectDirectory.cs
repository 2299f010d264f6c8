using Grpc.Core;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs;

/// <summary>
/// The cluster's object location table: which nodes hold secondary copies of each large object. Written by raylets
/// as pulls complete and copies go, read by raylets choosing where to pull from. In memory only (rebuilt as pulls
/// happen); a node's rows go when the node dies.
/// </summary>
internal sealed class GcsObjectDirectory
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, Dictionary<string, string>> _copies = new(StringComparer.Ordinal);

    public void Add(IEnumerable<string> objectIds, string nodeId, string address)
    {
        lock (_gate)
        {
            foreach (var id in objectIds)
            {
                if (!_copies.TryGetValue(id, out var nodes)) _copies[id] = nodes = new Dictionary<string, string>(StringComparer.Ordinal);
                nodes[nodeId] = address;
            }
        }
    }

    public void Remove(IEnumerable<string> objectIds, string nodeId)
    {
        lock (_gate)
        {
            foreach (var id in objectIds)
            {
                if (_copies.TryGetValue(id, out var nodes) && nodes.Remove(nodeId) && nodes.Count == 0) _copies.Remove(id);
            }
        }
    }

    public IReadOnlyList<ObjectLocation> Get(string objectId)
    {
        lock (_gate)
        {
            return _copies.TryGetValue(objectId, out var nodes)
                ? nodes.Select(kv => new ObjectLocation { NodeId = kv.Key, Address = kv.Value }).ToList()
                : [];
        }
    }

    public void OnNodeRemoved(NodeInfo node)
    {
        lock (_gate)
        {
            foreach (var id in _copies.Keys.ToList())
            {
                var nodes = _copies[id];
                if (nodes.Remove(node.NodeId) && nodes.Count == 0) _copies.Remove(id);
            }
        }
    }
}

internal sealed class ObjectLocationGcsServiceImpl(GcsObjectDirectory directory) : ObjectLocationGcsService.ObjectLocationGcsServiceBase
{
    public override Task<ObjectLocationReply> AddObjectLocation(ObjectLocationRequest request, ServerCallContext context)
    {
        if (request.NodeId.Length == 0 || request.Address.Length == 0)
            throw new RpcException(new Status(StatusCode.InvalidArgument, "node_id and address are required"));
        directory.Add(request.ObjectIds, request.NodeId, request.Address);
        return Task.FromResult(new ObjectLocationReply());
    }

    public override Task<ObjectLocationReply> RemoveObjectLocation(ObjectLocationRequest request, ServerCallContext context)
    {
        directory.Remove(request.ObjectIds, request.NodeId);
        return Task.FromResult(new ObjectLocationReply());
    }

    public override Task<GetObjectLocationsReply> GetObjectLocations(GetObjectLocationsRequest request, ServerCallContext context)
    {
        var reply = new GetObjectLocationsReply();
        reply.Locations.Add(directory.Get(request.ObjectId));
        return Task.FromResult(reply);
    }
}
