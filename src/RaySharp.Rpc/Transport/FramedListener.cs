using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;

namespace RaySharp.Rpc.Transport;

/// <summary>
/// Serves framed connections alone on a port (a worker's: it serves no gRPC), each connection on a thread of its own
/// that sleeps in <c>recv</c> and runs the connection's read loop (<see cref="ReceiveThreadPipe"/>). A request thus
/// reaches its handler in one wake-up by the kernel, where Kestrel's sockets take two (the epoll thread, then a pool
/// thread). Admission is the <see cref="RpcGatekeeper"/>'s, as on every RaySharp port.
/// </summary>
internal sealed class FramedListener : IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly IFramedHandler _handler;
    private readonly RpcGatekeeper _gatekeeper;
    private readonly ConcurrentDictionary<FramedConnection, byte> _connections = new();
    private volatile bool _disposed;

    private readonly ClusterTls? _tls;

    private FramedListener(Socket listener, IFramedHandler handler, RpcGatekeeper gatekeeper, ClusterTls? tls)
    {
        _listener = listener;
        _handler = handler;
        _gatekeeper = gatekeeper;
        _tls = tls;
        Port = ((IPEndPoint)listener.LocalEndPoint!).Port;
    }

    public int Port { get; }

    /// <summary>Binds the port (the first free one of a range, tried in random order) and starts accepting.</summary>
    /// <exception cref="IOException">The port, or every port of the range, is in use.</exception>
    public static FramedListener Start(string name, RpcListenOptions listen, IFramedHandler handler, ILoggerFactory loggerFactory, RpcSecurityOptions? security = null)
    {
        security ??= RpcSecurityOptions.Current;
        var gatekeeper = new RpcGatekeeper(security, loggerFactory.CreateLogger<RpcGatekeeper>());
        SocketException? lastError = null;
        foreach (var port in listen.Candidates())
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                socket.Bind(new IPEndPoint(IPAddress.Any, port));
                socket.Listen(512);
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse)
            {
                socket.Dispose();
                lastError = e;
                if (listen.RangeMax > 0) continue;
                throw new IOException($"port {port} for {name} is in use: {e.Message}", e);
            }
            var listener = new FramedListener(socket, handler, gatekeeper, security.Tls);
            new Thread(listener.Accept) { IsBackground = true, Name = $"{name} accept" }.UnsafeStart();
            RpcLog.Listening(loggerFactory.CreateLogger<RpcServer>(), name, listener.Port);
            return listener;
        }
        throw new IOException($"no free port in {listen.RangeMin}-{listen.RangeMax} for {name}; widen --min-worker-port/--max-worker-port", lastError);
    }

    private void Accept()
    {
        while (!_disposed)
        {
            Socket socket;
            try
            {
                socket = _listener.Accept();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                if (_disposed) return;
                continue;
            }
            // Each peer in its handshake holds a thread for up to the handshake's time: past a bound, newcomers are
            // closed at once, so a flood of unauthenticated connections cannot exhaust the process.
            if (Interlocked.Increment(ref _handshaking) > MaxConcurrentHandshakes)
            {
                Interlocked.Decrement(ref _handshaking);
                socket.Dispose();
                continue;
            }
            new Thread(Serve) { IsBackground = true, Name = $"framed recv {socket.RemoteEndPoint}" }.UnsafeStart(socket);
        }
    }

    /// <summary>Connections in their handshake at once (a worker has a few peers: its lessees and the GCS).</summary>
    internal const int MaxConcurrentHandshakes = 128;

    private int _handshaking;

    private void Serve(object? state)
    {
        var socket = (Socket)state!;
        socket.NoDelay = true;
        TcpLiveness.Configure(socket);
        Stream? stream;
        try
        {
            stream = _gatekeeper.AcceptConnection(socket.RemoteEndPoint) ? Handshake(socket) : null;
        }
        finally
        {
            Interlocked.Decrement(ref _handshaking);
        }
        if (stream is null)
        {
            socket.Dispose();
            return;
        }
        var pipe = new ReceiveThreadPipe(socket, stream as System.Net.Security.SslStream);
        var connection = new FramedConnection(pipe, _handler);
        _connections[connection] = 0;
        connection.Completion.ContinueWith(_ => _connections.TryRemove(connection, out var _), TaskScheduler.Default);
        connection.Start();
        if (_disposed) _ = connection.DisposeAsync();
        pipe.Receive();
    }

    /// <summary>TLS's handshake when the cluster uses it, then the framing's; the connection's stream once admitted, else null.</summary>
    private Stream? Handshake(Socket socket)
    {
        // The whole handshake within its timeout, not each receive: a peer trickling a byte at a time is cut off too.
        using var deadline = new CancellationTokenSource(FrameFormat.HandshakeTimeout);
        var closing = deadline.Token.UnsafeRegister(s => ((Socket)s!).Dispose(), socket);
        try
        {
            socket.ReceiveTimeout = (int)FrameFormat.HandshakeTimeout.TotalMilliseconds;
            Stream stream = new NetworkStream(socket, ownsSocket: false);
            if (_tls is { } tls)
            {
                var session = new System.Net.Security.SslStream(stream, leaveInnerStreamOpen: false);
                stream = session;
                // A peer without a certificate of the cluster's CA fails here, before any framing is read.
                session.AuthenticateAsServer(tls.ServerOptions());
            }
            Span<byte> preface = stackalloc byte[FrameFormat.Preface.Length];
            ReceiveThreadPipe.ReceiveExactly(stream, preface);
            // Not the framing (an HTTP/2 client, a port scanner): close without a word, as nothing here speaks anything else.
            if (!preface.SequenceEqual(FrameFormat.Preface)) return null;
            var hello = ReceiveThreadPipe.ReceiveFrame(stream, maxPayload: FrameFormat.MaxHandshakePayload);
            var answer = new System.Buffers.ArrayBufferWriter<byte>();
            var admitted = _gatekeeper.AdmitFramedConnection(hello, socket.RemoteEndPoint, answer);
            stream.Write(answer.WrittenSpan);
            socket.ReceiveTimeout = 0;
            // Once unregistered the deadline can no longer close the socket; if it already did, the handshake failed.
            closing.Dispose();
            return admitted && !deadline.IsCancellationRequested ? stream : null;
        }
        catch (Exception e) when (e is IOException or InvalidDataException or SocketException or ObjectDisposedException or System.Security.Authentication.AuthenticationException)
        {
            return null;
        }
        finally
        {
            closing.Dispose();
        }
    }

    public async ValueTask DisposeAsync()
    {
        _disposed = true;
        _listener.Dispose();
        await Task.WhenAll(_connections.Keys.Select(c => c.DisposeAsync().AsTask())).ConfigureAwait(false);
    }
}
