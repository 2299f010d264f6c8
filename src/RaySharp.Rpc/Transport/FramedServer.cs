using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;

namespace RaySharp.Rpc.Transport;

/// <summary>The server side of the hot-path framing, run inside the Kestrel connection of an <see cref="RpcServer"/>.</summary>
internal static class FramedServer
{
    /// <summary>Peeks at the first bytes without consuming them: true when they are the framing preface.</summary>
    /// <exception cref="OperationCanceledException">No 4 bytes came before <paramref name="cancellationToken"/>.</exception>
    public static async Task<bool> IsFramedAsync(PipeReader input, CancellationToken cancellationToken)
    {
        var result = await input.ReadAtLeastAsync(FrameFormat.Preface.Length, cancellationToken).ConfigureAwait(false);
        var buffer = result.Buffer;
        var framed = buffer.Length >= FrameFormat.Preface.Length && StartsWithPreface(buffer);
        // Leave everything unread for whichever protocol takes the connection.
        input.AdvanceTo(buffer.Start, buffer.Start);
        return framed;
    }

    private static bool StartsWithPreface(System.Buffers.ReadOnlySequence<byte> buffer)
    {
        Span<byte> first = stackalloc byte[4];
        buffer.Slice(0, 4).CopyTo(first);
        return first.SequenceEqual(FrameFormat.Preface);
    }

    /// <param name="handshake">Cancelled when the peer's time for its Hello is up (or the connection closed).</param>
    public static async Task ServeAsync(ConnectionContext connection, RpcGatekeeper gatekeeper, IFramedHandler handler, CancellationToken handshake)
    {
        var input = connection.Transport.Input;
        var output = connection.Transport.Output;
        try
        {
            var preface = await input.ReadAtLeastAsync(FrameFormat.Preface.Length, handshake).ConfigureAwait(false);
            input.AdvanceTo(preface.Buffer.GetPosition(FrameFormat.Preface.Length));
            var hello = await FrameFormat.ReadOneAsync(input, FrameFormat.MaxHandshakePayload, handshake).ConfigureAwait(false);
            var admitted = gatekeeper.AdmitFramedConnection(hello, connection.RemoteEndPoint, output);
            await output.FlushAsync().ConfigureAwait(false);
            if (!admitted) return;
        }
        catch (Exception e) when (e is IOException or InvalidDataException or OperationCanceledException)
        {
            return;
        }
        if (connection.Features.Get<Microsoft.AspNetCore.Connections.Features.IConnectionSocketFeature>()?.Socket is { } socket) TcpLiveness.Configure(socket);
        var framed = new FramedConnection(connection.Transport, handler);
        using var registration = connection.ConnectionClosed.Register(() => _ = framed.DisposeAsync());
        await framed.RunAsync().ConfigureAwait(false);
    }
}
