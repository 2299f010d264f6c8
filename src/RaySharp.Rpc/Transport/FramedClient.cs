using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace RaySharp.Rpc.Transport;

/// <summary>Opens hot-path connections to RaySharp servers (the port every <see cref="RpcServer"/> serves).</summary>
internal static class FramedClient
{
    public static async Task<FramedConnection> ConnectAsync(string host, int port, RpcSecurityOptions? security = null,
        IFramedHandler? handler = null, CancellationToken cancellationToken = default)
    {
        security ??= RpcSecurityOptions.FromEnvironment();
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(IPAddress.TryParse(host, out var ip) ? new IPEndPoint(ip, port) : new DnsEndPoint(host, port), cancellationToken).ConfigureAwait(false);
            var stream = new NetworkStream(socket, ownsSocket: true);
            var pipe = new StreamDuplexPipe(stream);
            pipe.Output.Write(FrameFormat.Preface);
            FrameFormat.Write(pipe.Output, FrameType.Hello, 0, 0, Encoding.UTF8.GetBytes(security.ClusterToken ?? ""));
            await pipe.Output.FlushAsync(cancellationToken).ConfigureAwait(false);
            var answer = await FrameFormat.ReadOneAsync(pipe.Input, cancellationToken).ConfigureAwait(false);
            if (answer.Type != FrameType.HelloAck)
            {
                throw new RemoteCallException(answer.Type == FrameType.Error ? Encoding.UTF8.GetString(answer.Payload) : $"unexpected {answer.Type} during the handshake");
            }
            var connection = new FramedConnection(pipe, handler);
            connection.Start();
            return connection;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private sealed class StreamDuplexPipe(Stream stream) : IDuplexPipe
    {
        // Larger than the 4 KiB defaults: object chunks are MiBs, and a socket read per 4 KiB caps a transfer far
        // below what the network gives.
        public PipeReader Input { get; } = PipeReader.Create(stream, new StreamPipeReaderOptions(bufferSize: 256 * 1024, minimumReadSize: 64 * 1024));
        public PipeWriter Output { get; } = PipeWriter.Create(stream, new StreamPipeWriterOptions(minimumBufferSize: 64 * 1024));
    }
}
