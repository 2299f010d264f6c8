using Google.Protobuf;
using Grpc.Core;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs.Services;

internal sealed class InternalKvGcsServiceImpl(GcsKvManager kv) : InternalKvGcsService.InternalKvGcsServiceBase
{
    public override async Task<KvGetReply> KvGet(KvGetRequest request, ServerCallContext context)
    {
        var value = await kv.GetAsync(request.Namespace, request.Key.ToByteArray()).ConfigureAwait(false);
        return value is null ? new KvGetReply() : new KvGetReply { Found = true, Value = ByteString.CopyFrom(value) };
    }

    public override async Task<KvPutReply> KvPut(KvPutRequest request, ServerCallContext context) =>
        new() { Added = await kv.PutAsync(request.Namespace, request.Key.ToByteArray(), request.Value.ToByteArray(), request.Overwrite).ConfigureAwait(false) };

    public override async Task<KvDelReply> KvDel(KvDelRequest request, ServerCallContext context) =>
        new() { DeletedNum = await kv.DeleteAsync(request.Namespace, request.Key.ToByteArray(), request.DelByPrefix).ConfigureAwait(false) };

    public override async Task<KvExistsReply> KvExists(KvExistsRequest request, ServerCallContext context) =>
        new() { Exists = await kv.ExistsAsync(request.Namespace, request.Key.ToByteArray()).ConfigureAwait(false) };

    public override async Task<KvKeysReply> KvKeys(KvKeysRequest request, ServerCallContext context)
    {
        var reply = new KvKeysReply();
        foreach (var key in await kv.KeysAsync(request.Namespace, request.Prefix.ToByteArray()).ConfigureAwait(false))
            reply.Keys.Add(ByteString.CopyFrom(key));
        return reply;
    }
}
