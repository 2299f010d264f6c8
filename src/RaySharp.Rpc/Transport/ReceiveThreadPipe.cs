using System.IO.Pipelines;
using System.Net.Sockets;

namespace RaySharp.Rpc.Transport;

/// <summary>
/// A framed connection's pipe over a socket kept in blocking mode (both sides: <see cref="FramedClient"/> and
/// <see cref="FramedListener"/>): a thread of its own sleeps in
/// <c>recv</c> and is woken by the kernel when bytes arrive, then runs the connection's read loop itself (the input
/// pipe resumes its reader inline). A reply thus reaches the thread waiting for it in one wake-up, where an
/// asynchronous socket takes two (the socket engine's epoll thread, then a thread-pool thread), and no pool thread is
/// left spinning for more work on a machine with few cores. Writes are plain blocking <c>send</c>s on the writer's
/// thread.
/// </summary>
/// <remarks>
/// The socket must never run an asynchronous operation: .NET makes a socket non-blocking for good on its first one,
/// after which synchronous calls wait on the epoll thread too.
/// </remarks>
internal sealed class ReceiveThreadPipe : IDuplexPipe
{
    /// <summary>Bytes asked of each <c>recv</c>: a whole object chunk's worth of frames in few calls.</summary>
    private const int ReceiveSize = 64 * 1024;

    private readonly Socket _socket;

    /// <summary>The TLS session over the socket, when the cluster uses TLS: read and written with blocking calls too.</summary>
    private readonly Stream? _tls;
    // No back-pressure: the read loop runs on the receiving thread, so nothing is received while a batch is handled,
    // and a frame larger than any threshold must be buffered whole before it can be read.
    private readonly Pipe _received = new(new PipeOptions(pauseWriterThreshold: 0, resumeWriterThreshold: 0,
        readerScheduler: PipeScheduler.Inline, writerScheduler: PipeScheduler.Inline, minimumSegmentSize: ReceiveSize, useSynchronizationContext: false));

    public ReceiveThreadPipe(Socket socket, Stream? tls = null)
    {
        _socket = socket;
        _tls = tls;
        Output = PipeWriter.Create(new SendStream(socket, tls), new StreamPipeWriterOptions(minimumBufferSize: 64 * 1024));
    }

    public PipeReader Input => _received.Reader;

    [ThreadStatic]
    private static ReceiveThreadPipe? t_receiving;

    /// <summary>
    /// True on this pipe's receiving thread. That thread must never block in <c>send</c>: it is what drains the socket,
    /// and two peers whose receiving threads both waited for the other to read would wait forever.
    /// </summary>
    public bool OnReceivingThread => ReferenceEquals(t_receiving, this);

    public PipeWriter Output { get; }

    /// <summary>Starts the receiving thread; call once the handshake has been read off the socket.</summary>
    public void Start(string peer) =>
        new Thread(Receive) { IsBackground = true, Name = $"framed recv {peer}" }.UnsafeStart();

    /// <summary>
    /// Shuts the socket down from any thread: a <c>send</c> or <c>recv</c> blocked in it returns at once (closing alone
    /// does not wake a blocked call on Linux). Frames not yet sent are lost; for a connection that is over.
    /// </summary>
    public void Abort()
    {
        try { _socket.Shutdown(SocketShutdown.Both); } catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
    }

    /// <summary>Receives on the calling thread until the connection ends.</summary>
    public void Receive()
    {
        t_receiving = this;
        var writer = _received.Writer;
        Exception? failure = null;
        try
        {
            while (true)
            {
                var memory = writer.GetMemory(ReceiveSize);
                var read = _tls is null ? _socket.Receive(memory.Span, SocketFlags.None) : _tls.Read(memory.Span);
                if (read == 0) break;
                writer.Advance(read);
                // Runs the read loop here, up to its next read.
                var flush = writer.FlushAsync();
                var result = flush.IsCompleted ? flush.Result : flush.AsTask().GetAwaiter().GetResult();
                if (result.IsCompleted || result.IsCanceled) break;
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException)
        {
            failure = new IOException($"the connection broke: {e.Message}", e);
        }
        writer.Complete(failure);
    }

    /// <summary>Reads exactly one frame off the connection, no byte more (handshakes, before the receiving thread starts).</summary>
    /// <param name="maxPayload">Larger frames are refused: the peer is not a RaySharp process.</param>
    public static Frame ReceiveFrame(Stream connection, int maxPayload)
    {
        var header = new byte[FrameFormat.HeaderSize];
        ReceiveExactly(connection, header);
        var length = System.Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(header);
        if (length < FrameFormat.HeaderSize - 4 || length > FrameFormat.HeaderSize - 4 + maxPayload)
            throw new InvalidDataException($"a handshake frame of {length} bytes: not a RaySharp peer");
        var frame = new byte[4 + length];
        header.CopyTo(frame, 0);
        ReceiveExactly(connection, frame.AsSpan(FrameFormat.HeaderSize));
        var sequence = new System.Buffers.ReadOnlySequence<byte>(frame);
        FrameFormat.TryRead(ref sequence, out var read);
        return read;
    }

    /// <summary>
    /// Fills <paramref name="destination"/> from the connection (a <see cref="NetworkStream"/> over the blocking socket,
    /// or its TLS session); IOException when the peer closes or times out first.
    /// </summary>
    public static void ReceiveExactly(Stream connection, Span<byte> destination)
    {
        try
        {
            while (!destination.IsEmpty)
            {
                var read = connection.Read(destination);
                if (read == 0) throw new IOException("the connection closed during the handshake");
                destination = destination[read..];
            }
        }
        catch (IOException e) when (e.InnerException is SocketException s)
        {
            throw new IOException(s.SocketErrorCode == SocketError.TimedOut ? "no handshake within the time allowed" : $"the connection broke during the handshake: {s.Message}", e);
        }
    }

    /// <summary>Blocking sends; disposing shuts the socket down, which also wakes the receiving thread.</summary>
    private sealed class SendStream(Socket socket, Stream? tls) : Stream
    {
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            try
            {
                if (tls is not null) tls.Write(buffer);
                else while (!buffer.IsEmpty) buffer = buffer[socket.Send(buffer, SocketFlags.None)..];
            }
            catch (SocketException e)
            {
                throw new IOException($"the connection broke: {e.Message}", e);
            }
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            try
            {
                Write(buffer.Span);
                return ValueTask.CompletedTask;
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException)
            {
                return ValueTask.FromException(e);
            }
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Flush() { }
        public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                try { socket.Shutdown(SocketShutdown.Both); } catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
                socket.Dispose();
                tls?.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}
