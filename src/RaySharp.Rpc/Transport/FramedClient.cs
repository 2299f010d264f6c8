using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Text;
using RaySharp.Common;

namespace RaySharp.Rpc.Transport;

/// <summary>Opens hot-path connections to RaySharp servers (the port every <see cref="RpcServer"/> serves).</summary>
internal static class FramedClient
{
    public static async Task<FramedConnection> ConnectAsync(string host, int port, RpcSecurityOptions? security = null,
        IFramedHandler? handler = null, CancellationToken cancellationToken = default)
    {
        security ??= RpcSecurityOptions.Current;
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        TcpLiveness.Configure(socket);
        System.Net.Security.SslStream? tls = null;
        try
        {
            // Connected and greeted with blocking calls, off the caller's thread: the socket stays in blocking mode for
            // the receiving thread (see ReceiveThreadPipe). On a thread of its own, not the pool's: a connect to an
            // unreachable host blocks until TCP gives up (minutes). Cancelling closes the socket, which ends it.
            await using (cancellationToken.Register(socket.Dispose))
            {
                tls = await Task.Factory.StartNew(() => Handshake(socket, host, port, security), cancellationToken,
                    TaskCreationOptions.LongRunning, TaskScheduler.Default).ConfigureAwait(false);
            }
            cancellationToken.ThrowIfCancellationRequested();
            var pipe = new ReceiveThreadPipe(socket, tls);
            var connection = new FramedConnection(pipe, handler);
            connection.Start();
            pipe.Start(NodeAddress.Format(host, port));
            return connection;
        }
        catch (ObjectDisposedException) when (cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException(cancellationToken);
        }
        catch
        {
            socket.Dispose();
            tls?.Dispose();
            throw;
        }
    }

    /// <summary>Connects, runs TLS's handshake when the cluster uses it, then the framing's; returns the TLS session, if any.</summary>
    private static System.Net.Security.SslStream? Handshake(Socket socket, string host, int port, RpcSecurityOptions security)
    {
        socket.Connect(IPAddress.TryParse(host, out var ip) ? new IPEndPoint(ip, port) : new DnsEndPoint(host, port));
        socket.ReceiveTimeout = (int)FrameFormat.HandshakeTimeout.TotalMilliseconds;
        // Blocking reads and writes both ways, TLS's included: the socket stays in blocking mode (see ReceiveThreadPipe).
        Stream stream = new NetworkStream(socket, ownsSocket: false);
        System.Net.Security.SslStream? tls = null;
        if (security.Tls is { } clusterTls)
        {
            tls = new System.Net.Security.SslStream(stream, leaveInnerStreamOpen: false);
            try
            {
                tls.AuthenticateAsClient(clusterTls.ClientOptions(host));
            }
            catch (System.Security.Authentication.AuthenticationException e)
            {
                tls.Dispose();
                throw new RemoteCallException($"TLS with {host}:{port} failed: {e.Message} (its certificate is not of this cluster's CA, or it refused ours)");
            }
            stream = tls;
        }
        var hello = new ArrayBufferWriter<byte>();
        hello.Write(FrameFormat.Preface);
        FrameFormat.Write(hello, FrameType.Hello, 0, 0, Encoding.UTF8.GetBytes(security.ClusterToken ?? ""));
        stream.Write(hello.WrittenSpan);
        // Exactly one frame is read here: whatever follows belongs to the connection's read loop.
        Frame answer;
        try
        {
            answer = ReceiveThreadPipe.ReceiveFrame(stream, maxPayload: FrameFormat.MaxHandshakePayload);
        }
        catch (InvalidDataException e)
        {
            throw new RemoteCallException($"the server at {host}:{port} is not a RaySharp server ({e.Message})");
        }
        socket.ReceiveTimeout = 0;
        if (answer.Type != FrameType.HelloAck)
        {
            tls?.Dispose();
            throw new RemoteCallException(answer.Type == FrameType.Error ? Encoding.UTF8.GetString(answer.Payload) : $"unexpected {answer.Type} during the handshake");
        }
        return tls;
    }
}
