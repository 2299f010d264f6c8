using System.Buffers;
using System.IO.Pipelines;
using System.Net.Sockets;
using CsCheck;
using RaySharp.Rpc.Transport;
using Xunit.Abstractions;

namespace RaySharp.Tests.Fuzzing;

/// <summary>
/// The frame readers on arbitrary byte streams that arrive split at arbitrary points: <see cref="FrameFormat.TryRead"/>
/// (the connection's read loop), <see cref="FrameFormat.ReadOneAsync"/> (the handshake on the gRPC port) and
/// <see cref="ReceiveThreadPipe.ReceiveFrame"/> (the handshake on a blocking socket). Their contract: a stream either
/// yields the frames it holds, or is refused with <see cref="InvalidDataException"/> (a length outside the bounds), or
/// ends early (<see cref="IOException"/> for the handshake readers; "need more bytes" for TryRead); how the bytes are
/// split never changes which; and a reader never allocates for a frame before its bytes have arrived (so a peer that
/// announces 1 GiB costs nothing until it sends 1 GiB), except the handshake reader, bounded by its 64 KiB.
/// </summary>
public sealed class FrameReaderFuzzTests(ITestOutputHelper output)
{
    public sealed record Input(byte[] Bytes, int[] Cuts, int MaxPayload)
    {
        public override string ToString() => $"max {MaxPayload}, cuts [{string.Join(",", Cuts)}], bytes {FuzzHarness.Hex(Bytes)}";
    }

    private const int DefaultMax = FrameFormat.MaxFrameSize - (FrameFormat.HeaderSize - 4);

    private static readonly Gen<byte[]> Frames =
        Gen.Select(Gen.Byte[0, 8], Gen.Long, Gen.Int[0, 20], Gen.Byte.Array[0, 80], (type, id, method, payload) => (type, id, method, payload))
            .Array[1, 4]
            .Select(frames =>
            {
                var writer = new ArrayBufferWriter<byte>();
                foreach (var (type, id, method, payload) in frames) FrameFormat.Write(writer, (FrameType)type, id, method, payload);
                return writer.WrittenSpan.ToArray();
            });

    // A header announcing far more than follows: the reader must wait for the bytes, not make room for them.
    private static readonly Gen<byte[]> BigAnnouncements =
        Gen.Select(Gen.Int[0, Mutations.EdgeInts.Length - 1], Gen.Byte.Array[0, 40], (i, tail) =>
        {
            var header = new byte[FrameFormat.HeaderSize];
            System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(header, Mutations.EdgeInts[i] is var n && n > 1000 ? n : FrameFormat.MaxFrameSize);
            header[4] = (byte)FrameType.Response;
            return header.Concat(tail).ToArray();
        });

    private static readonly Gen<Input> Inputs =
        Gen.Select(
            Gen.Frequency((1, Mutations.Random(200)), (4, Mutations.Of(Frames)), (1, BigAnnouncements)),
            Gen.Int,
            Gen.Frequency((3, Gen.Const(DefaultMax)), (3, Gen.Const(FrameFormat.MaxHandshakePayload)), (1, Gen.Int[0, 100])),
            (bytes, seed, max) => new Input(bytes, Mutations.CutPoints(bytes.Length, new Random(seed)), max));

    private sealed record Outcome(List<Frame> Frames, bool Refused)
    {
        public bool SameAs(Outcome other) =>
            Refused == other.Refused && Frames.Count == other.Frames.Count
            && Frames.Zip(other.Frames).All(p => p.First.Type == p.Second.Type && p.First.Id == p.Second.Id
                && p.First.Method == p.Second.Method && p.First.Payload.AsSpan().SequenceEqual(p.Second.Payload));
    }

    [Fact]
    public void Frame_readers_take_whole_frames_refuse_bad_lengths_and_allocate_nothing_ahead()
    {
        var socketPath = Path.Combine(Path.GetTempPath(), $"raysharp-fuzz-{Environment.ProcessId}.sock");
        File.Delete(socketPath);
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(socketPath));
        listener.Listen(16);
        try
        {
            new FuzzHarness("frame-reader", output, TimeSpan.FromSeconds(5)).Run(Inputs, input =>
            {
                var reference = ReadAll(new ReadOnlySequence<byte>(input.Bytes), input.MaxPayload);
                var split = ReadArriving(Mutations.Split(input.Bytes, input.Cuts), input.MaxPayload);
                if (!split.SameAs(reference)) throw new InvalidOperationException("TryRead read the split stream differently from the whole one");
                CheckReadOne(input, reference);
                if (input.MaxPayload <= FrameFormat.MaxHandshakePayload) CheckReceiveFrame(input, reference, listener, socketPath);
            }, i => i.ToString());
        }
        finally
        {
            File.Delete(socketPath);
        }
    }

    private static Outcome ReadAll(ReadOnlySequence<byte> buffer, int max)
    {
        var frames = new List<Frame>();
        try
        {
            while (TryReadBounded(ref buffer, out var frame, max)) frames.Add(frame);
            return new Outcome(frames, false);
        }
        catch (InvalidDataException)
        {
            return new Outcome(frames, true);
        }
    }

    /// <summary>As the connection's read loop sees the stream: what is unread so far, again after each arrival.</summary>
    private static Outcome ReadArriving(List<byte[]> pieces, int max)
    {
        var frames = new List<Frame>();
        long consumed = 0;
        for (var arrived = 1; arrived <= pieces.Count; arrived++)
        {
            var buffer = Mutations.Sequence(pieces.Take(arrived).ToList()).Slice(consumed);
            var before = buffer.Length;
            try
            {
                while (TryReadBounded(ref buffer, out var frame, max)) frames.Add(frame);
            }
            catch (InvalidDataException)
            {
                return new Outcome(frames, true);
            }
            consumed += before - buffer.Length;
        }
        return new Outcome(frames, false);
    }

    /// <summary>TryRead, checked to allocate only the payload it returns, and only once that payload is there.</summary>
    private static bool TryReadBounded(ref ReadOnlySequence<byte> buffer, out Frame frame, int max)
    {
        var available = buffer.Length;
        var before = GC.GetAllocatedBytesForCurrentThread();
        bool read;
        try
        {
            read = FrameFormat.TryRead(ref buffer, out frame, maxPayload: max);
        }
        catch (InvalidDataException)
        {
            // An exception costs its message and trace, never the announced frame.
            if (GC.GetAllocatedBytesForCurrentThread() - before > 64 * 1024) throw new InvalidOperationException("TryRead allocated ahead before refusing a frame");
            throw;
        }
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        if (read)
        {
            if (frame.Payload.Length > available - FrameFormat.HeaderSize || frame.Payload.Length > max)
                throw new InvalidOperationException($"TryRead returned {frame.Payload.Length} payload bytes out of {available} available (max {max})");
            if (allocated > frame.Payload.Length + 4096) throw new InvalidOperationException($"TryRead allocated {allocated} bytes for a {frame.Payload.Length}-byte payload");
        }
        else if (allocated > 4096)
        {
            throw new InvalidOperationException($"TryRead allocated {allocated} bytes while waiting for the rest of a frame ({available} bytes there)");
        }
        return read;
    }

    private static void CheckReadOne(Input input, Outcome reference)
    {
        var pipe = new Pipe(new PipeOptions(pauseWriterThreshold: 0, resumeWriterThreshold: 0, readerScheduler: PipeScheduler.Inline,
            writerScheduler: PipeScheduler.Inline, useSynchronizationContext: false));
        var before = GC.GetAllocatedBytesForCurrentThread();
        // The reader resumes inline on each flush, on this thread: its allocations are counted here.
        var read = FrameFormat.ReadOneAsync(pipe.Reader, input.MaxPayload, CancellationToken.None);
        foreach (var piece in Mutations.Split(input.Bytes, input.Cuts))
        {
            if (read.IsCompleted) break;
            var flush = pipe.Writer.WriteAsync(piece);
            if (!flush.IsCompleted) throw new InvalidOperationException("the test pipe applied back-pressure");
        }
        pipe.Writer.Complete();
        if (!((IAsyncResult)read).AsyncWaitHandle.WaitOne(TimeSpan.FromSeconds(5))) throw new FuzzHarness.HangException("ReadOneAsync did not finish on a completed stream");
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        if (allocated > 2L * input.Bytes.Length + 128 * 1024) throw new InvalidOperationException($"ReadOneAsync allocated {allocated} bytes for {input.Bytes.Length} bytes received");
        CheckFirst(read, reference, "ReadOneAsync");
    }

    private static void CheckReceiveFrame(Input input, Outcome reference, Socket listener, string socketPath)
    {
        using var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        client.Connect(new UnixDomainSocketEndPoint(socketPath));
        using var server = listener.Accept();
        server.ReceiveTimeout = 5000;
        // Handshakes are small: the whole input fits in the socket's buffer, so it can be sent before it is read.
        client.Send(input.Bytes);
        client.Shutdown(SocketShutdown.Send);
        // As the handshakes read it: a stream over the blocking socket, made before the allocation is counted.
        using var stream = new NetworkStream(server, ownsSocket: false);
        var before = GC.GetAllocatedBytesForCurrentThread();
        Task<Frame> read;
        try
        {
            read = Task.FromResult(ReceiveThreadPipe.ReceiveFrame(stream, input.MaxPayload));
        }
        catch (Exception e)
        {
            read = Task.FromException<Frame>(e);
        }
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        if (allocated > 2L * (FrameFormat.HeaderSize + input.MaxPayload) + 64 * 1024)
            throw new InvalidOperationException($"ReceiveFrame allocated {allocated} bytes with a {input.MaxPayload}-byte limit");
        CheckFirst(read, reference, "ReceiveFrame");
    }

    /// <summary>A handshake reader's result: the stream's first frame, a refusal where it refuses, else an early end.</summary>
    private static void CheckFirst(Task<Frame> read, Outcome reference, string reader)
    {
        if (reference.Frames.Count > 0)
        {
            if (!read.IsCompletedSuccessfully) throw new InvalidOperationException($"{reader} failed on a whole first frame", read.Exception?.GetBaseException());
            if (!new Outcome([read.Result], false).SameAs(new Outcome([reference.Frames[0]], false))) throw new InvalidOperationException($"{reader} read another frame than TryRead");
            return;
        }
        var error = read.Exception?.GetBaseException();
        var expected = reference.Refused ? typeof(InvalidDataException) : typeof(IOException);
        if (error?.GetType() != expected)
            throw new InvalidOperationException($"{reader}: expected {expected.Name}, got {(error is null ? "a frame" : error.GetType().Name)}", error);
    }
}
