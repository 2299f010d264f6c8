using Grpc.Core;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs.Services;

internal sealed class PubsubGcsServiceImpl(GcsPublisher publisher, GcsNodeManager nodes) : PubsubGcsService.PubsubGcsServiceBase
{
    public override async Task Subscribe(SubscribeRequest request, IServerStreamWriter<PubMessage> responseStream, ServerCallContext context)
    {
        using var subscription = publisher.Subscribe(request.Channels);
        // A new subscriber first receives the current node table, so it never misses a node that joined before it.
        if (request.Channels.Contains(Channel.NodeInfo))
        {
            foreach (var node in nodes.GetAll(aliveOnly: false))
                await responseStream.WriteAsync(new PubMessage { Channel = Channel.NodeInfo, NodeInfo = node }, context.CancellationToken).ConfigureAwait(false);
        }
        try
        {
            await foreach (var message in subscription.Queue.Reader.ReadAllAsync(context.CancellationToken).ConfigureAwait(false))
                await responseStream.WriteAsync(message, context.CancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (context.CancellationToken.IsCancellationRequested)
        {
        }
    }
}
