using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;

namespace RaySharp.Rpc.Transport;

/// <summary>The server side of the hot-path framing, run inside the Kestrel connection of an <see cref="RpcServer"/>.</summary>
internal static class FramedServer
{
    /// <summary>Peeks at the first bytes without consuming them: true when they are the framing preface.</summary>
    public static async Task<bool> IsFramedAsync(PipeReader input, CancellationToken cancellationToken)
    {
        try
        {
            var result = await input.ReadAtLeastAsync(FrameFormat.Preface.Length, cancellationToken).ConfigureAwait(false);
            var buffer = result.Buffer;
            var framed = buffer.Length >= FrameFormat.Preface.Length && StartsWithPreface(buffer);
            // Leave everything unread for whichever protocol takes the connection.
            input.AdvanceTo(buffer.Start, buffer.Start);
            return framed;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    private static bool StartsWithPreface(System.Buffers.ReadOnlySequence<byte> buffer)
    {
        Span<byte> first = stackalloc byte[4];
        buffer.Slice(0, 4).CopyTo(first);
        return first.SequenceEqual(FrameFormat.Preface);
    }

    public static async Task ServeAsync(ConnectionContext connection, RpcGatekeeper gatekeeper, IFramedHandler handler)
    {
        var input = connection.Transport.Input;
        var output = connection.Transport.Output;
        try
        {
            var preface = await input.ReadAtLeastAsync(FrameFormat.Preface.Length, connection.ConnectionClosed).ConfigureAwait(false);
            input.AdvanceTo(preface.Buffer.GetPosition(FrameFormat.Preface.Length));
            using var handshakeTimeout = CancellationTokenSource.CreateLinkedTokenSource(connection.ConnectionClosed);
            handshakeTimeout.CancelAfter(FrameFormat.HandshakeTimeout);
            var hello = await FrameFormat.ReadOneAsync(input, FrameFormat.MaxHandshakePayload, handshakeTimeout.Token).ConfigureAwait(false);
            var admitted = gatekeeper.AdmitFramedConnection(hello, connection.RemoteEndPoint, output);
            await output.FlushAsync().ConfigureAwait(false);
            if (!admitted) return;
        }
        catch (Exception e) when (e is IOException or InvalidDataException or OperationCanceledException)
        {
            return;
        }
        var framed = new FramedConnection(connection.Transport, handler);
        using var registration = connection.ConnectionClosed.Register(() => _ = framed.DisposeAsync());
        await framed.RunAsync().ConfigureAwait(false);
    }
}
