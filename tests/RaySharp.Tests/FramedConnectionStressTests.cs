using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging.Abstractions;
using RaySharp.Rpc;
using RaySharp.Rpc.Transport;

namespace RaySharp.Tests;

/// <summary>
/// <see cref="FramedConnection"/> under load over real loopback sockets: many writers on one connection, a peer that
/// reads slowly or not at all, a peer that goes away mid-frame, calls both ways at once. What every test checks: each
/// call gets exactly one outcome (its own reply, or a failure when no reply can come), one writer's messages arrive in
/// its order, nothing is handled twice, and no wait is unbounded. Sizes and message kinds come from a seeded
/// <see cref="Random"/>: a failure names its seed, and <c>RAYSHARP_STRESS_SEED</c> replays it.
/// </summary>
public sealed class FramedConnectionStressTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    // Methods of the test's own (the handlers are not the cluster's: CheckedAtDispatch is false).
    private const int Checked = 1;   // order-checked, answered with the payload's receipt
    private const int Notified = 2;  // one-way, order-checked
    private const int Empty = 3;     // an empty payload, answered with an empty one
    private const int Sunk = 4;      // order-checked, taken by TryHandle and answered from a pool thread
    private const int CallBack = 5;  // order-checked; the handler calls its caller back (Unchecked) before answering
    private const int Echo = 6;      // order-checked, answered with the payload itself
    private const int Unchecked = 7; // answered with the receipt, no order (calls back come from handlers, in any order)
    private const int Into = 8;      // only to fake peers: answered with IntoLength bytes of the call's id

    // A message's first bytes: the writer, its sequence number among that writer's messages, the call's id.
    private const int HeaderSize = 16;

    private static long s_callIds;

    private static (int Seed, string Context) Seed()
    {
        var seed = Environment.GetEnvironmentVariable("RAYSHARP_STRESS_SEED") is { Length: > 0 } s ? int.Parse(s) : Random.Shared.Next();
        return (seed, $"seed {seed} (RAYSHARP_STRESS_SEED={seed} replays it)");
    }

    private static ulong Checksum(ReadOnlySpan<byte> data)
    {
        var h = 14695981039346656037UL;
        var words = MemoryMarshal.Cast<byte, ulong>(data);
        foreach (var w in words) h = (h ^ w) * 1099511628211UL;
        foreach (var b in data[(words.Length * 8)..]) h = (h ^ b) * 1099511628211UL;
        return h ^ (ulong)data.Length;
    }

    private static byte[] Message(int writer, int sequence, long callId, int bodyLength, Random random)
    {
        var payload = GC.AllocateUninitializedArray<byte>(HeaderSize + bodyLength);
        BinaryPrimitives.WriteInt32LittleEndian(payload, writer);
        BinaryPrimitives.WriteInt32LittleEndian(payload.AsSpan(4), sequence);
        BinaryPrimitives.WriteInt64LittleEndian(payload.AsSpan(8), callId);
        random.NextBytes(payload.AsSpan(HeaderSize));
        return payload;
    }

    /// <summary>What a call is answered with: its id (so a reply given to the wrong call shows), the payload's checksum and length.</summary>
    private static byte[] Receipt(ReadOnlySpan<byte> payload)
    {
        var receipt = new byte[20];
        if (payload.Length >= HeaderSize) payload[8..16].CopyTo(receipt);
        BinaryPrimitives.WriteUInt64LittleEndian(receipt.AsSpan(8), Checksum(payload));
        BinaryPrimitives.WriteInt32LittleEndian(receipt.AsSpan(16), payload.Length);
        return receipt;
    }

    /// <summary>0 bytes up to <paramref name="max"/>, mostly small, some of a few hundred KB.</summary>
    private static int BodyLength(Random random, int max = 400 * 1024) => random.Next(100) switch
    {
        < 30 => 0,
        < 70 => random.Next(1, 1024),
        < 93 => random.Next(1024, 32 * 1024),
        _ => random.Next(32 * 1024, max + 1),
    };

    /// <summary>Serves the test's methods, and checks that each writer's messages arrive in its order, each once.</summary>
    private sealed class Peer : IFramedHandler
    {
        private readonly Lock _gate = new();
        private readonly Dictionary<int, int> _next = [];
        private int _received;

        public bool CheckedAtDispatch => false;
        public ConcurrentQueue<string> Violations { get; } = new();

        private int _answered;

        /// <summary>Calls answered (their replies handed to the connection) so far.</summary>
        public int Answered => Volatile.Read(ref _answered);

        private ReadOnlyMemory<byte> Answer(ReadOnlyMemory<byte> reply)
        {
            Interlocked.Increment(ref _answered);
            return reply;
        }

        /// <summary>Messages with a header handled so far (calls and one-way).</summary>
        public int Received => Volatile.Read(ref _received);

        /// <summary>The side of the connection this handler serves, from the first frame it handled.</summary>
        public TaskCompletionSource<FramedConnection> Caller { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>When set, the first message holds up the read loop (nothing more is read) until it is set.</summary>
        public ManualResetEventSlim? HoldFirst { get; init; }
        public TaskCompletionSource Holding { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>Answers after a short, random delay, off the read loop (replies overtake one another).</summary>
        public bool DelayReplies { get; init; }

        /// <summary>The calls its handler made back to the caller (method <see cref="CallBack"/>).</summary>
        public ConcurrentQueue<Task<byte[]>> CallsBack { get; } = new();

        public int Next(int writer)
        {
            lock (_gate) return _next.GetValueOrDefault(writer);
        }

        private void Check(byte[] payload)
        {
            if (payload.Length < HeaderSize)
            {
                Violations.Enqueue($"a message of {payload.Length} bytes, without its header");
                return;
            }
            var writer = BinaryPrimitives.ReadInt32LittleEndian(payload);
            var sequence = BinaryPrimitives.ReadInt32LittleEndian(payload.AsSpan(4));
            lock (_gate)
            {
                var due = _next.GetValueOrDefault(writer);
                if (sequence != due) Violations.Enqueue($"writer {writer}: message {sequence} arrived where {due} was due");
                _next[writer] = Math.Max(due, sequence + 1);
            }
            Interlocked.Increment(ref _received);
            if (HoldFirst is { } hold && Holding.TrySetResult() && !hold.Wait(TimeSpan.FromSeconds(60)))
                Violations.Enqueue("the read loop was held for 60 s");
        }

        private void Seen()
        {
            if (FramedConnection.Current is { } connection) Caller.TrySetResult(connection);
        }

        public async ValueTask<ReadOnlyMemory<byte>> HandleAsync(int method, byte[] payload, CancellationToken cancellationToken)
        {
            // Up to the first await this runs on the read loop, in arrival order: where the order is checked.
            Seen();
            switch (method)
            {
                case Checked:
                    Check(payload);
                    if (DelayReplies) await Task.Delay(Random.Shared.Next(3), cancellationToken);
                    return Answer(Receipt(payload));
                case Echo:
                    Check(payload);
                    if (DelayReplies && BinaryPrimitives.ReadInt32LittleEndian(payload) != Blocker) await Task.Yield();
                    return Answer(payload);
                case Empty:
                    if (payload.Length != 0) Violations.Enqueue($"an empty call came with {payload.Length} bytes");
                    return Answer(ReadOnlyMemory<byte>.Empty);
                case CallBack:
                    Check(payload);
                    var back = FramedConnection.Current!.CallAsync(Unchecked, payload, cancellationToken);
                    CallsBack.Enqueue(back);
                    var receipt = Receipt(payload);
                    if (!(await back).AsSpan().SequenceEqual(receipt)) Violations.Enqueue("a call back was answered with another call's reply");
                    return Answer(receipt);
                case Unchecked:
                    return Answer(Receipt(payload));
                default:
                    throw new NotSupportedException($"method {method}");
            }
        }

        public bool TryHandle(int method, byte[] payload, FramedRequest request)
        {
            if (method != Sunk) return false;
            Seen();
            Check(payload);
            ThreadPool.QueueUserWorkItem(_ => request.Reply(Answer(Receipt(payload))));
            return true;
        }

        public void OnNotify(int method, byte[] payload)
        {
            Seen();
            if (method == Notified) Check(payload);
            else Violations.Enqueue($"a one-way message of method {method}");
        }
    }

    /// <summary>The writer of the message that stops the client's read loop in the slow-reader test.</summary>
    private const int Blocker = 999;

    /// <summary>Counts what reaches it: exactly one outcome is the rule. Optionally holds up the read loop on its reply.</summary>
    private sealed class Sink(ManualResetEventSlim? holdOnReply = null) : IReplySink
    {
        private int _calls;
        public TaskCompletionSource<byte[]> Outcome { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public int Calls => Volatile.Read(ref _calls);

        public void OnReply(byte[] payload)
        {
            Interlocked.Increment(ref _calls);
            Outcome.TrySetResult(payload);
            holdOnReply?.Wait(TimeSpan.FromSeconds(60));
        }

        public void OnFailure(Exception error)
        {
            Interlocked.Increment(ref _calls);
            Outcome.TrySetException(error);
        }
    }

    /// <summary>Cumulative shares (of 100) of each kind of message a writer sends; the rest are <see cref="Checked"/> calls.</summary>
    private sealed record Mix(int Empty = 5, int Notify = 35, int Sunk = 55, int Echo = 65, int CallBack = 65);

    private sealed record Sent(long CallId, int Method, ulong Checksum, int Length, Task<byte[]> Reply, Sink? Sink);

    /// <summary>
    /// One writer: a sequence of calls and one-way messages on one connection. A sequential writer waits for each reply
    /// before its next message (so its calls are often alone in flight, and written inline, right behind one-way
    /// messages that were queued); the others fire and forget, waiting for their replies every <c>drainEvery</c> messages.
    /// </summary>
    private sealed class Writer(int id, FramedConnection connection, Random random, int messages, Mix mix,
        bool sequential = false, int drainEvery = 50, int bodyMax = 400 * 1024, Func<Random, int>? bodyLength = null)
    {
        public int Id => id;
        public List<Sent> Calls { get; } = [];
        public List<string> Problems { get; } = [];

        /// <summary>Messages with a header sent: the receiving peer's next sequence number for this writer, once all arrived.</summary>
        public int Sequence { get; private set; }

        public async Task RunAsync()
        {
            await Task.Yield();
            var outstanding = new List<Task<byte[]>>();
            for (var i = 0; i < messages; i++)
            {
                var kind = random.Next(100);
                Sent? call = null;
                if (kind < mix.Empty)
                {
                    call = new Sent(0, Empty, 0, 0, connection.CallAsync(Empty, ReadOnlyMemory<byte>.Empty), null);
                }
                else
                {
                    var callId = Interlocked.Increment(ref s_callIds);
                    var payload = Message(id, Sequence, callId, bodyLength?.Invoke(random) ?? BodyLength(random, bodyMax), random);
                    var checksum = Checksum(payload);
                    if (kind < mix.Notify)
                    {
                        if (!connection.Notify(Notified, payload))
                        {
                            Problems.Add($"writer {id}: Notify of message {Sequence} found the connection closed");
                            return;
                        }
                    }
                    else if (kind < mix.Sunk)
                    {
                        var sink = new Sink();
                        if (!connection.Call(Sunk, payload, sink))
                        {
                            Problems.Add($"writer {id}: Call of message {Sequence} found the connection closed");
                            return;
                        }
                        call = new Sent(callId, Sunk, checksum, payload.Length, sink.Outcome.Task, sink);
                    }
                    else
                    {
                        var method = kind < mix.Echo ? Echo : kind < mix.CallBack ? CallBack : Checked;
                        call = new Sent(callId, method, checksum, payload.Length, connection.CallAsync(method, payload), null);
                    }
                    Sequence++;
                }
                if (call is null) continue;
                Calls.Add(call);
                outstanding.Add(call.Reply);
                if (sequential || (drainEvery > 0 && outstanding.Count >= drainEvery))
                {
                    // Outcomes are judged by Verify; here only the in-flight count is let fall.
                    await Task.WhenAny(Task.WhenAll(outstanding), Task.Delay(Bound)).ConfigureAwait(false);
                    outstanding.Clear();
                }
            }
        }
    }

    /// <summary>Every call answered once, with its own reply; empty when so.</summary>
    private static async Task<List<string>> VerifyAsync(IEnumerable<Writer> writers)
    {
        var all = writers.ToList();
        var problems = all.SelectMany(w => w.Problems).ToList();
        var replies = all.SelectMany(w => w.Calls.Select(c => c.Reply)).ToList();
        await Task.WhenAny(Task.WhenAll(replies), Task.Delay(Bound));
        foreach (var writer in all)
        {
            foreach (var call in writer.Calls)
            {
                var what = $"writer {writer.Id}'s call {call.CallId} (method {call.Method}, {call.Length} bytes)";
                if (!call.Reply.IsCompleted)
                {
                    problems.Add($"{what} had no outcome within {Bound.TotalSeconds} s");
                    continue;
                }
                if (call.Sink is { Calls: not 1 } sink) problems.Add($"{what}: its sink was told {sink.Calls} times");
                if (!call.Reply.IsCompletedSuccessfully)
                {
                    problems.Add($"{what} failed: {call.Reply.Exception?.InnerException?.Message}");
                    continue;
                }
                var reply = call.Reply.Result;
                if (call.Method == Empty)
                {
                    if (reply.Length != 0) problems.Add($"{what} was answered with {reply.Length} bytes");
                }
                else if (call.Method == Echo)
                {
                    if (reply.Length != call.Length || Checksum(reply) != call.Checksum) problems.Add($"{what} was answered with other bytes ({reply.Length})");
                }
                else if (reply.Length != 20
                    || BinaryPrimitives.ReadInt64LittleEndian(reply) != call.CallId
                    || BinaryPrimitives.ReadUInt64LittleEndian(reply.AsSpan(8)) != call.Checksum
                    || BinaryPrimitives.ReadInt32LittleEndian(reply.AsSpan(16)) != call.Length)
                {
                    problems.Add($"{what} got another reply (for call {(reply.Length >= 8 ? BinaryPrimitives.ReadInt64LittleEndian(reply) : -1)})");
                }
            }
        }
        return problems;
    }

    /// <summary>Every message of every writer reached <paramref name="peer"/> (one-way ones may trail the last reply), in order, once.</summary>
    private static async Task<List<string>> VerifyArrivalsAsync(Peer peer, IReadOnlyCollection<Writer> writers, int others = 0)
    {
        var expected = writers.Sum(w => w.Sequence) + others;
        await Until(() => peer.Received >= expected, "every message to arrive", fail: false);
        var problems = peer.Violations.ToList();
        if (peer.Received != expected) problems.Add($"{peer.Received} messages were handled, {expected} sent");
        foreach (var w in writers.Where(w => peer.Next(w.Id) != w.Sequence))
            problems.Add($"writer {w.Id}: {w.Sequence} messages sent, the peer's next is {peer.Next(w.Id)}");
        return problems;
    }

    /// <summary>Waits for a condition, polling, within <see cref="Bound"/>.</summary>
    private static async Task Until(Func<bool> condition, string what, bool fail = true)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.Elapsed > Bound)
            {
                if (fail) Assert.Fail($"waited {Bound.TotalSeconds} s for {what}");
                return;
            }
            await Task.Delay(5);
        }
    }

    private static void AssertNone(List<string> problems, string context) =>
        Assert.True(problems.Count == 0, $"{context}: {problems.Count} problems\n{string.Join("\n", problems.Take(30))}");

    private sealed class Served(int port, IAsyncDisposable server) : IAsyncDisposable
    {
        public int Port => port;
        public ValueTask DisposeAsync() => server.DisposeAsync();
    }

    /// <summary>A worker's port (<see cref="FramedListener"/>, blocking sockets) or an <see cref="RpcServer"/>'s (Kestrel's pipes).</summary>
    private static async Task<Served> StartServer(bool framedOnly, IFramedHandler handler)
    {
        if (framedOnly)
        {
            var listener = FramedListener.Start("stress", RpcListenOptions.Fixed(0), handler, NullLoggerFactory.Instance, new RpcSecurityOptions());
            return new Served(listener.Port, listener);
        }
        var server = await RpcServer.StartAsync("stress", RpcListenOptions.Fixed(0), NullLoggerFactory.Instance, _ => { }, _ => { },
            new RpcSecurityOptions(), framedHandler: handler);
        return new Served(server.Port, server);
    }

    private static Task<FramedConnection> Connect(int port, IFramedHandler? handler = null) =>
        FramedClient.ConnectAsync("127.0.0.1", port, new RpcSecurityOptions(), handler).WaitAsync(Bound);

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task SixteenWritersOnOneConnectionGetEachReplyOnceAndKeepTheirOrder(bool framedOnly)
    {
        var (seed, context) = Seed();
        var peer = new Peer { DelayReplies = true };
        await using var server = await StartServer(framedOnly, peer);
        await using var connection = await Connect(server.Port);

        var writers = Enumerable.Range(0, 16).Select(i =>
            new Writer(i, connection, new Random(seed + i), messages: 120, new Mix(), sequential: i % 4 == 0)).ToList();
        var writing = Task.WhenAll(writers.Select(w => Task.Run(w.RunAsync)));
        Assert.True(await Task.WhenAny(writing, Task.Delay(Bound)) == writing, $"{context}: the writers did not finish within {Bound.TotalSeconds} s");

        var problems = await VerifyAsync(writers);
        problems.AddRange(await VerifyArrivalsAsync(peer, writers));
        AssertNone(problems, context);
    }

    /// <summary>
    /// The server stops reading (its read loop is held on the first message) while the client's writers go on: the
    /// client's queue grows to MiBs. Then the client stops reading (its read loop is held on the first reply) while the
    /// server echoes MiBs back: the server's queue grows. Both drain once let go, with everything in order and once.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task SendQueuesThatFillBehindASlowReaderDrainInOrderAndLoseNoReply(bool framedOnly)
    {
        var (seed, context) = Seed();
        using var holdServer = new ManualResetEventSlim();
        using var holdClient = new ManualResetEventSlim();
        var peer = new Peer { HoldFirst = holdServer, DelayReplies = true };
        await using var server = await StartServer(framedOnly, peer);
        await using var connection = await Connect(server.Port);
        try
        {
            var blocker = new Sink(holdOnReply: holdClient);
            var first = Message(Blocker, 0, Interlocked.Increment(ref s_callIds), 0, new Random(seed));
            Assert.True(connection.Call(Echo, first, blocker));
            await peer.Holding.Task.WaitAsync(Bound);

            var writers = Enumerable.Range(0, 8).Select(i => new Writer(i, connection, new Random(seed + i), messages: 60,
                new Mix(Empty: 2, Notify: 30, Sunk: 40, Echo: 90), drainEvery: 0, bodyLength: r => r.Next(0, 256 * 1024))).ToList();
            var writing = Task.WhenAll(writers.Select(w => Task.Run(w.RunAsync)));
            // At least this much waits in the client's queue. Not more: how much the kernel's socket buffers and the
            // server's receive pipe take first depends on the machine's load (a full suite run saw 2.5 MiB queued of
            // the tens of MiB written, where an idle machine queues more than 4).
            const long Filled = 1024 * 1024;
            // Writers never wait on a full socket (frames queue), so they all finish while the server still reads
            // nothing; all but the socket buffers' few MiB is then in the queue. (Not polled for the bound while
            // writing: the write loop moves whatever is queued into the pipe's buffer whenever its flush returns.)
            Assert.True(await Task.WhenAny(writing, Task.Delay(Bound)) == writing, $"{context}: the writers did not finish");
            var clientQueue = connection.QueuedBytes;
            Assert.True(clientQueue >= Filled, $"{context}: only {clientQueue} bytes queued behind a server that stopped reading");
            holdServer.Set();

            // Every reply made while the client reads nothing (tens of MiB of echoes): the server's output backs up.
            await blocker.Outcome.Task.WaitAsync(Bound);
            var calls = writers.Sum(w => w.Calls.Count) + 1;
            await Until(() => peer.Answered >= calls, $"the server to answer every call while the client does not read ({context})");
            holdClient.Set();

            var serverSide = await peer.Caller.Task.WaitAsync(Bound);
            var problems = await VerifyAsync(writers);
            if (!(await blocker.Outcome.Task).AsSpan().SequenceEqual(first)) problems.Add("the first call got another reply");
            if (blocker.Calls != 1) problems.Add($"the first call's sink was told {blocker.Calls} times");
            problems.AddRange(await VerifyArrivalsAsync(peer, writers, others: 1));
            AssertNone(problems, context);
            await Until(() => connection.QueuedBytes == 0 && serverSide.QueuedBytes == 0, "both queues to drain");
        }
        finally
        {
            holdServer.Set();
            holdClient.Set();
        }
    }

    /// <summary>A peer of this test's own, over a raw socket: it speaks the framing's handshake, then whatever the test does.</summary>
    private sealed class FakeServer : IDisposable
    {
        private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);

        public FakeServer()
        {
            _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            _listener.Listen(1);
        }

        public int Port => ((IPEndPoint)_listener.LocalEndPoint!).Port;
        public Socket? Socket { get; private set; }

        public async Task<NetworkStream> AcceptAsync()
        {
            Socket = await _listener.AcceptAsync();
            var stream = new NetworkStream(Socket, ownsSocket: false);
            var preface = new byte[FrameFormat.Preface.Length];
            await stream.ReadExactlyAsync(preface);
            var hello = await ReadFrameAsync(stream);
            Assert.Equal(FrameType.Hello, hello.Type);
            await stream.WriteAsync(FrameBytes(FrameType.HelloAck, hello.Id, 0, []));
            return stream;
        }

        public void Dispose()
        {
            Socket?.Dispose();
            _listener.Dispose();
        }
    }

    private static async Task<(FrameType Type, long Id, int Method, byte[] Payload)> ReadFrameAsync(Stream stream)
    {
        var header = new byte[FrameFormat.HeaderSize];
        await stream.ReadExactlyAsync(header);
        var payload = GC.AllocateUninitializedArray<byte>(BinaryPrimitives.ReadInt32LittleEndian(header) - (FrameFormat.HeaderSize - 4));
        await stream.ReadExactlyAsync(payload);
        return ((FrameType)header[4], BinaryPrimitives.ReadInt64LittleEndian(header.AsSpan(5)), BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(13)), payload);
    }

    private static byte[] FrameBytes(FrameType type, long id, int method, ReadOnlySpan<byte> payload)
    {
        var writer = new ArrayBufferWriter<byte>();
        FrameFormat.Write(writer, type, id, method, payload);
        return writer.WrittenSpan.ToArray();
    }

    /// <summary>Closes with a reset (RST), not an orderly end: frames in flight are dropped.</summary>
    private static void Reset(Socket socket)
    {
        socket.LingerState = new LingerOption(true, 0);
        socket.Close();
    }

    private static async Task AssertClosedAsync(FramedConnection connection, string context)
    {
        await connection.Completion.WaitAsync(Bound);
        var late = new Sink();
        Assert.False(connection.Call(Checked, new byte[HeaderSize], late), context);
        Assert.Equal(0, late.Calls);
        await Assert.ThrowsAsync<IOException>(() => connection.CallAsync(Checked, new byte[HeaderSize]).WaitAsync(Bound));
        Assert.False(connection.Notify(Notified, new byte[HeaderSize]), context);
    }

    private const int IntoLength = 200_000;

    private static async Task<byte[]> AsReply(Task call)
    {
        await call;
        return [];
    }

    private static byte[] IntoReply(long id) => Enumerable.Repeat((byte)id, IntoLength).ToArray();

    /// <summary>
    /// The peer answers the first calls, then sends a reply's header announcing 200 000 bytes and 1 000 of them, and
    /// closes (or resets). The answered calls keep their replies; every other one fails, once; the half-sent reply is
    /// never delivered (not even into its caller's destination).
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task APeerThatClosesMidFrameFailsEveryPendingCallOnceAndDeliversNoHalfFrame(bool reset)
    {
        var (seed, context) = Seed();
        var random = new Random(seed);
        using var fake = new FakeServer();
        var accepted = fake.AcceptAsync();
        await using var connection = await Connect(fake.Port);
        var stream = await accepted.WaitAsync(Bound);
        const int Total = 60, Answered = 20;
        var cut = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var peer = Task.Run(async () =>
        {
            var requests = new List<(long Id, int Method, byte[] Payload)>();
            var notifies = 0;
            while (requests.Count < Total)
            {
                var frame = await ReadFrameAsync(stream);
                if (frame.Type == FrameType.Request) requests.Add((frame.Id, frame.Method, frame.Payload));
                else if (frame.Type == FrameType.Notify) notifies++;
            }
            foreach (var (id, method, payload) in requests.Take(Answered))
                await stream.WriteAsync(FrameBytes(FrameType.Response, id, method,
                    method == Into ? IntoReply(BinaryPrimitives.ReadInt64LittleEndian(payload.AsSpan(8))) : Receipt(payload)));
            await cut.Task.WaitAsync(Bound);
            var half = requests[Answered];
            await stream.WriteAsync(FrameBytes(FrameType.Response, half.Id, half.Method, IntoReply(half.Id)).AsMemory(0, FrameFormat.HeaderSize + 1000));
            if (reset) Reset(fake.Socket!);
            else fake.Socket!.Shutdown(SocketShutdown.Send);
            return notifies;
        });

        // Three kinds of call in turn: a task, a sink on the read loop, a reply written into the caller's memory. The
        // first one cut short (the 21st) is of the last kind.
        var calls = new List<(Task<byte[]> Reply, Sink? Sink, byte[]? Destination, byte[] Payload)>();
        var notified = 0;
        for (var i = 0; i < Total; i++)
        {
            var payload = Message(0, i, Interlocked.Increment(ref s_callIds), BodyLength(random, 64 * 1024), random);
            switch (i % 3)
            {
                case 0:
                    calls.Add((connection.CallAsync(Checked, payload), null, null, payload));
                    break;
                case 1:
                    var sink = new Sink();
                    Assert.True(connection.Call(Sunk, payload, sink), context);
                    calls.Add((sink.Outcome.Task, sink, null, payload));
                    break;
                default:
                    var destination = new byte[IntoLength];
                    calls.Add((AsReply(connection.CallIntoAsync(Into, payload, destination)), null, destination, payload));
                    break;
            }
            if (i % 4 == 0 && connection.Notify(Notified, payload)) notified++;
        }

        await Task.WhenAll(calls.Take(Answered).Select(c => c.Reply)).WaitAsync(Bound);
        cut.SetResult();
        var problems = new List<string>();
        for (var i = 0; i < Total; i++)
        {
            var (reply, sink, destination, payload) = calls[i];
            var outcome = await Task.WhenAny(reply, Task.Delay(Bound));
            if (outcome != reply)
            {
                problems.Add($"call {i} had no outcome within {Bound.TotalSeconds} s");
                continue;
            }
            if (sink is { Calls: not 1 }) problems.Add($"call {i}'s sink was told {sink.Calls} times");
            if (i < Answered)
            {
                if (!reply.IsCompletedSuccessfully) problems.Add($"call {i} failed though answered: {reply.Exception?.InnerException?.Message}");
                else if (destination is not null ? !destination.AsSpan().SequenceEqual(IntoReply(BinaryPrimitives.ReadInt64LittleEndian(payload.AsSpan(8))))
                    : !(await reply).AsSpan().SequenceEqual(Receipt(payload)))
                    problems.Add($"call {i} got another reply");
            }
            else
            {
                if (reply.Exception?.InnerException is not IOException) problems.Add($"call {i} ended with {(reply.IsCompletedSuccessfully ? "a reply" : reply.Exception?.InnerException?.GetType().Name)}, not an IOException");
                if (destination is not null && destination.AsSpan().ContainsAnyExcept((byte)0)) problems.Add($"call {i}'s destination was written though its reply never came whole");
            }
        }
        AssertNone(problems, context);
        Assert.Equal(notified, await peer.WaitAsync(Bound));
        await AssertClosedAsync(connection, context);
        Assert.All(calls, c => Assert.True(c.Sink is null or { Calls: 1 }, "a sink told again after the close"));
    }

    /// <summary>
    /// Writers keep calling while the peer reads a few frames then resets the connection: frames are queued, half
    /// written and in flight when it goes. Each call gets one outcome (a failure), or, once the connection is seen
    /// closed, is refused without its sink being told; nothing hangs.
    /// </summary>
    [Fact]
    public async Task APeerResettingWhileFramesAreInFlightFailsEveryCallOnce()
    {
        var (seed, context) = Seed();
        using var fake = new FakeServer();
        var accepted = fake.AcceptAsync();
        await using var connection = await Connect(fake.Port);
        var stream = await accepted.WaitAsync(Bound);
        // On a thread of its own, with blocking reads: the writers below keep the pool's threads busy.
        var peer = Task.Factory.StartNew(() =>
        {
            var header = new byte[FrameFormat.HeaderSize];
            for (var requests = 0; requests < 20; requests++)
            {
                stream.ReadExactly(header);
                stream.ReadExactly(new byte[BinaryPrimitives.ReadInt32LittleEndian(header) - (FrameFormat.HeaderSize - 4)]);
                if ((FrameType)header[4] != FrameType.Request) requests--;
            }
            Reset(fake.Socket!);
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

        var shared = new byte[256 * 1024];
        new Random(seed).NextBytes(shared);
        var writers = Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
        {
            var random = new Random(seed + w);
            var calls = new List<(bool Accepted, Sink? Sink, Task<byte[]>? Reply)>();
            var clock = Stopwatch.StartNew();
            // Until the connection is seen closed, and one call more; at most 4 x 4 000 x 32 KiB (far from the
            // queue's bound: the reset is what closes it).
            for (var i = 0; clock.Elapsed < Bound && i < 4_000; i++)
            {
                if (i % 8 == 0) await Task.Yield();
                var closed = connection.Completion.IsCompleted;
                var payload = shared.AsMemory(0, random.Next(0, 64 * 1024));
                switch (random.Next(3))
                {
                    case 0:
                        var sink = new Sink();
                        calls.Add((connection.Call(Checked, payload, sink), sink, null));
                        break;
                    case 1:
                        calls.Add((true, null, connection.CallAsync(Checked, payload)));
                        break;
                    default:
                        connection.Notify(Notified, payload);
                        break;
                }
                if (closed) break;
            }
            return calls;
        })).ToList();

        var all = (await Task.WhenAll(writers).WaitAsync(Bound + Bound)).SelectMany(c => c).ToList();
        await peer.WaitAsync(Bound);
        var problems = new List<string>();
        var outcomes = all.Select(c => c.Sink?.Outcome.Task ?? c.Reply!).Where((_, i) => all[i].Accepted).ToList();
        await Task.WhenAny(Task.WhenAll(outcomes), Task.Delay(Bound));
        for (var i = 0; i < all.Count; i++)
        {
            var (accepted2, sink, reply) = all[i];
            var task = sink?.Outcome.Task ?? reply!;
            if (!accepted2)
            {
                if (sink!.Calls != 0) problems.Add($"call {i} was refused (Call returned false) and its sink was told too ({sink.Calls} times)");
                continue;
            }
            if (!task.IsCompleted) problems.Add($"call {i} had no outcome within {Bound.TotalSeconds} s");
            else if (task.Exception?.InnerException is not IOException) problems.Add($"call {i} ended with {(task.IsCompletedSuccessfully ? "a reply" : task.Exception?.InnerException?.GetType().Name)}");
            if (sink is { Calls: not 1 }) problems.Add($"call {i}'s sink was told {sink.Calls} times");
        }
        AssertNone(problems, $"{context}, {all.Count} calls");
        await AssertClosedAsync(connection, context);
    }

    /// <summary>
    /// A peer that reads one frame and then nothing: the client's queue passes its bound and the connection is closed.
    /// Every call gets exactly one outcome: the queued ones fail with the reason, the one that passed the bound too (it
    /// is in the pending table when the close fails them all), and a call refused outright (false) is not told at all.
    /// </summary>
    [Fact]
    public async Task APeerThatStopsReadingHasTheConnectionClosedAtTheQueuesBoundWithOneOutcomePerCall()
    {
        using var fake = new FakeServer();
        var accepted = fake.AcceptAsync();
        await using var connection = await Connect(fake.Port);
        var stream = await accepted.WaitAsync(Bound);
        // The same array each time: queued frames hold their payload, they do not copy it.
        var payload = new byte[64 * 1024 * 1024];
        var firstRead = ReadFrameAsync(stream);
        var calls = await Task.Run(async () =>
        {
            var made = new List<(bool Accepted, Sink Sink)>();
            // The first is alone: written inline on this thread, which the peer's read lets go.
            var first = new Sink();
            made.Add((connection.Call(Checked, payload, first), first));
            await firstRead.WaitAsync(Bound);
            for (var i = 0; i < 20 && made[^1].Accepted; i++)
            {
                var sink = new Sink();
                made.Add((connection.Call(Checked, payload, sink), sink));
            }
            return made;
        }).WaitAsync(Bound);

        await Task.WhenAny(Task.WhenAll(calls.Where(c => c.Accepted).Select(c => c.Sink.Outcome.Task)), Task.Delay(Bound));
        await connection.Completion.WaitAsync(Bound);
        var problems = new List<string>();
        for (var i = 0; i < calls.Count; i++)
        {
            var (accepted2, sink) = calls[i];
            if (!accepted2)
            {
                if (sink.Calls != 0) problems.Add($"call {i} was refused (Call returned false) and its sink was told too: {sink.Outcome.Task.Exception?.InnerException?.Message}");
                continue;
            }
            if (sink.Calls != 1) problems.Add($"call {i}'s sink was told {sink.Calls} times");
            else if (sink.Outcome.Task.Exception?.InnerException is not IOException) problems.Add($"call {i} did not fail with an IOException");
        }
        var reasons = calls.Count(c => c.Sink.Outcome.Task.Exception?.InnerException?.Message.Contains("did not read them", StringComparison.Ordinal) == true);
        if (reasons < 5) problems.Add($"only {reasons} calls failed with the queue's bound as the reason");
        AssertNone(problems, $"{calls.Count} calls");
    }

    /// <summary>
    /// The server's handler calls its client back; the client (a raw socket) answers some of those calls, then sends the
    /// header of a request announcing 1 MB and 100 bytes of it, and closes. On the server, the calls back still
    /// waiting fail, the answered ones do not, and the half-sent request is never handled.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AClientThatClosesMidFrameFailsTheServersCallsBackToItAndNothingIsHandledTwice(bool reset)
    {
        var (seed, context) = Seed();
        var random = new Random(seed);
        var peer = new Peer();
        await using var server = await StartServer(framedOnly: true, peer);
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Loopback, server.Port);
        await using var stream = new NetworkStream(socket, ownsSocket: false);
        await stream.WriteAsync(FrameFormat.Preface.ToArray().Concat(FrameBytes(FrameType.Hello, 0, 0, [])).ToArray());
        Assert.Equal(FrameType.HelloAck, (await ReadFrameAsync(stream).WaitAsync(Bound)).Type);

        const int Requests = 10, Answered = 3;
        for (var i = 0; i < Requests; i++)
            await stream.WriteAsync(FrameBytes(FrameType.Request, i + 1, CallBack, Message(0, i, i + 1, BodyLength(random), random)));
        var back = new List<(long Id, byte[] Payload)>();
        while (back.Count < Requests)
        {
            var frame = await ReadFrameAsync(stream).WaitAsync(Bound);
            if (frame.Type == FrameType.Request && frame.Method == Unchecked) back.Add((frame.Id, frame.Payload));
        }
        foreach (var (id, payload) in back.Take(Answered)) await stream.WriteAsync(FrameBytes(FrameType.Response, id, Unchecked, Receipt(payload)));
        var half = FrameBytes(FrameType.Request, 99, Checked, Message(0, Requests, 99, 1_000_000, random));
        await stream.WriteAsync(half.AsMemory(0, FrameFormat.HeaderSize + 100));
        var answeredIds = back.Take(Answered).Select(b => BinaryPrimitives.ReadInt64LittleEndian(b.Payload.AsSpan(8))).ToHashSet();
        // The answered calls back complete before the close, so that none is failed for arriving after it.
        await Until(() => peer.CallsBack.Count(t => t.IsCompletedSuccessfully) >= Answered, "the answered calls back to complete");
        if (reset) Reset(socket);
        else socket.Shutdown(SocketShutdown.Send);

        var serverSide = await peer.Caller.Task.WaitAsync(Bound);
        await serverSide.Completion.WaitAsync(Bound);
        var callsBack = peer.CallsBack.ToList();
        await Task.WhenAny(Task.WhenAll(callsBack), Task.Delay(Bound));
        var problems = peer.Violations.ToList();
        if (callsBack.Count != Requests) problems.Add($"{callsBack.Count} calls back, {Requests} requests");
        if (peer.Received != Requests) problems.Add($"{peer.Received} requests handled, {Requests} sent whole");
        var succeeded = callsBack.Count(t => t.IsCompletedSuccessfully);
        if (succeeded != Answered) problems.Add($"{succeeded} calls back succeeded, {Answered} were answered");
        foreach (var call in callsBack.Where(t => !t.IsCompletedSuccessfully))
        {
            // Failed by the close, or cancelled by it: the handler made its call with the connection's token.
            if (!call.IsCompleted) problems.Add($"a call back had no outcome within {Bound.TotalSeconds} s");
            else if (!call.IsCanceled && call.Exception?.InnerException is not IOException) problems.Add($"a call back ended with {call.Exception?.InnerException?.GetType().Name}");
        }
        foreach (var call in callsBack.Where(t => t.IsCompletedSuccessfully))
            if (!answeredIds.Contains(BinaryPrimitives.ReadInt64LittleEndian(await call))) problems.Add("a call back got another call's reply");
        AssertNone(problems, context);
    }

    /// <summary>
    /// Calls both ways at once on one connection: the client's writers call the server, the server's call the client,
    /// and some calls are called back before their answer (a handler calling its caller). Each side checks the other's
    /// order.
    /// </summary>
    [Fact]
    public async Task BothSidesCallEachOtherAtOnceOverOneConnection()
    {
        var (seed, context) = Seed();
        var serverPeer = new Peer { DelayReplies = true };
        var clientPeer = new Peer { DelayReplies = true };
        await using var server = await StartServer(framedOnly: true, serverPeer);
        await using var connection = await Connect(server.Port, clientPeer);
        Assert.Empty(await connection.CallAsync(Empty, ReadOnlyMemory<byte>.Empty).WaitAsync(Bound));
        var serverSide = await serverPeer.Caller.Task.WaitAsync(Bound);

        var mix = new Mix(Empty: 5, Notify: 35, Sunk: 50, Echo: 60, CallBack: 75);
        var fromClient = Enumerable.Range(0, 8).Select(i => new Writer(i, connection, new Random(seed + i), 100, mix, sequential: i % 4 == 0)).ToList();
        var fromServer = Enumerable.Range(100, 8).Select(i => new Writer(i, serverSide, new Random(seed + i), 100, mix, sequential: i % 4 == 0)).ToList();
        var writing = Task.WhenAll(fromClient.Concat(fromServer).Select(w => Task.Run(w.RunAsync)));
        Assert.True(await Task.WhenAny(writing, Task.Delay(Bound)) == writing, $"{context}: the writers did not finish within {Bound.TotalSeconds} s");

        var problems = await VerifyAsync(fromClient.Concat(fromServer));
        problems.AddRange((await VerifyArrivalsAsync(serverPeer, fromClient)).Select(p => "on the server: " + p));
        problems.AddRange((await VerifyArrivalsAsync(clientPeer, fromServer)).Select(p => "on the client: " + p));
        var callsBack = serverPeer.CallsBack.Concat(clientPeer.CallsBack).ToList();
        if (callsBack.Any(t => !t.IsCompletedSuccessfully)) problems.Add($"{callsBack.Count(t => !t.IsCompletedSuccessfully)} calls back did not succeed");
        AssertNone(problems, context);
    }
}
