using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;

namespace RaySharp.Rpc.Transport;

internal enum FrameType : byte
{
    /// <summary>First frame of a client: the payload is the cluster token (UTF-8), empty when none.</summary>
    Hello = 1,
    HelloAck = 2,
    Request = 3,
    Response = 4,
    /// <summary>A request failed on the server; the payload is the message (UTF-8).</summary>
    Error = 5,
    /// <summary>One-way message: no reply is sent or expected.</summary>
    Notify = 6,
}

/// <param name="Refused">
/// Bytes of a request or one-way payload over its method's limit (<see cref="FramedRequests.MaxPayload"/>): not read
/// (the payload is empty); the reader skips them as they arrive.
/// </param>
internal readonly record struct Frame(FrameType Type, long Id, int Method, byte[] Payload, int Refused = 0);

/// <summary>
/// The hot-path framing: after a 4-byte preface (<c>RSF1</c>, which can never begin an HTTP/2 connection, so the same
/// port serves gRPC too), every frame is <c>int32 length | byte type | int64 id | int32 method | payload</c>,
/// little-endian, where length counts the bytes after itself.
/// </summary>
internal static class FrameFormat
{
    public static ReadOnlySpan<byte> Preface => "RSF1"u8;
    public const int HeaderSize = 4 + 1 + 8 + 4;
    private const int BodyHeaderSize = HeaderSize - 4;

    /// <summary>How long either side of a new connection may take to send its part of the handshake.</summary>
    public static readonly TimeSpan HandshakeTimeout = TimeSpan.FromSeconds(10);

    /// <summary>Largest handshake frame accepted (a cluster token, an error message).</summary>
    public const int MaxHandshakePayload = 64 * 1024;

    /// <summary>Largest frame accepted (1 GiB: large task arguments and results travel inline until the object store exists); a peer announcing more is cut off.</summary>
    public const int MaxFrameSize = 1024 * 1024 * 1024;

    public static void Write(IBufferWriter<byte> writer, FrameType type, long id, int method, ReadOnlySpan<byte> payload)
    {
        var span = writer.GetSpan(HeaderSize + payload.Length);
        BinaryPrimitives.WriteInt32LittleEndian(span, BodyHeaderSize + payload.Length);
        span[4] = (byte)type;
        BinaryPrimitives.WriteInt64LittleEndian(span[5..], id);
        BinaryPrimitives.WriteInt32LittleEndian(span[13..], method);
        payload.CopyTo(span[HeaderSize..]);
        writer.Advance(HeaderSize + payload.Length);
    }

    /// <summary>The payload of a response that went straight into its caller's destination.</summary>
    public static readonly byte[] Sunk = new byte[1];

    /// <summary>Takes one whole frame off the front of <paramref name="buffer"/>, if one is there.</summary>
    /// <param name="sinkFor">
    /// For a response, where its payload may go instead of a new array (the caller's destination, same length); the
    /// frame's payload is then <see cref="Sunk"/>.
    /// </param>
    /// <param name="maxPayload">Largest payload accepted (<see cref="MaxHandshakePayload"/> before a peer is admitted).</param>
    /// <param name="methodLimits">
    /// Requests and one-way messages over their method's own limit come back from their header alone, as
    /// <see cref="Frame.Refused"/>: a peer cannot make the reader buffer a payload its method never needs.
    /// </param>
    public static bool TryRead(ref ReadOnlySequence<byte> buffer, out Frame frame, Func<long, int, Memory<byte>?>? sinkFor = null, int maxPayload = MaxFrameSize - BodyHeaderSize, bool methodLimits = false)
    {
        frame = default;
        if (buffer.Length < HeaderSize) return false;
        Span<byte> header = stackalloc byte[HeaderSize];
        buffer.Slice(0, HeaderSize).CopyTo(header);
        var length = BinaryPrimitives.ReadInt32LittleEndian(header);
        if (length < BodyHeaderSize || length - BodyHeaderSize > maxPayload)
            throw new InvalidDataException($"frame length {length} is outside {BodyHeaderSize}..{(long)maxPayload + BodyHeaderSize}: not a RaySharp peer, or a broken one");
        var id = BinaryPrimitives.ReadInt64LittleEndian(header[5..]);
        if (methodLimits && (FrameType)header[4] is FrameType.Request or FrameType.Notify)
        {
            var method = BinaryPrimitives.ReadInt32LittleEndian(header[13..]);
            if (length - BodyHeaderSize > FramedRequests.MaxPayload(method))
            {
                frame = new Frame((FrameType)header[4], id, method, [], length - BodyHeaderSize);
                buffer = buffer.Slice(HeaderSize);
                return true;
            }
        }
        if (buffer.Length < 4 + length) return false;
        byte[] payload;
        if ((FrameType)header[4] == FrameType.Response && sinkFor?.Invoke(id, length - BodyHeaderSize) is { } destination)
        {
            buffer.Slice(HeaderSize, destination.Length).CopyTo(destination.Span);
            payload = Sunk;
        }
        else
        {
            // Not zeroed first: every byte is overwritten at once (object chunks are MiBs).
            payload = GC.AllocateUninitializedArray<byte>(length - BodyHeaderSize);
            buffer.Slice(HeaderSize, payload.Length).CopyTo(payload);
        }
        frame = new Frame((FrameType)header[4], id, BinaryPrimitives.ReadInt32LittleEndian(header[13..]), payload);
        buffer = buffer.Slice(4 + length);
        return true;
    }

    /// <summary>Reads exactly one frame (handshakes) of at most <paramref name="maxPayload"/> bytes.</summary>
    public static async Task<Frame> ReadOneAsync(PipeReader reader, int maxPayload, CancellationToken cancellationToken)
    {
        while (true)
        {
            var result = await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
            var buffer = result.Buffer;
            if (TryRead(ref buffer, out var frame, maxPayload: maxPayload))
            {
                reader.AdvanceTo(buffer.Start);
                return frame;
            }
            reader.AdvanceTo(buffer.Start, buffer.End);
            if (result.IsCompleted) throw new IOException("the connection closed during the handshake");
        }
    }
}
