// Over 400 lines on purpose: the calls, the two loops and the inline write share the counters of the invariants below
// and the close; split apart, each part would have to expose them (the send queue is a channel plus three of those
// counters, not a unit of its own).
using System.Collections.Concurrent;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Text;
using System.Threading.Channels;

namespace RaySharp.Rpc.Transport;

/// <summary>
/// One long-lived, multiplexed connection: many calls in flight each way, matched by id. Outgoing frames go through a
/// queue drained by a single writer that flushes only when the queue is empty, so frames written while a flush is in
/// progress share the next one (write coalescing).
/// </summary>
/// <remarks>
/// <para>
/// Invariants the ordering and the inline writes rest on (the counters are plain ints beside the channel and the
/// semaphore, so nothing else enforces them):
/// </para>
/// <list type="number">
/// <item><c>_writing</c> is held by exactly one writer from the first byte of its frames until their flush has
/// finished, even when that flush finishes off the caller's thread (<see cref="FinishFlushAsync"/> releases it):
/// frames never interleave in the pipe, and nothing is written behind a flush still in progress.</item>
/// <item><c>_queued</c> is never below the number of frames in <c>_outgoing</c>: <see cref="Enqueue"/> counts a frame
/// before putting it in, the write loop uncounts it only after taking it out, and takes frames out only while holding
/// <c>_writing</c>. So a writer that holds <c>_writing</c> and reads <c>_queued == 0</c> knows every frame queued
/// before (its own included) is already in the pipe: writing inline then cannot overtake one of its earlier frames.
/// This is what keeps one caller's calls and one-way messages in order, though some go inline and some queue. The
/// read before taking <c>_writing</c> is only a cheap early refusal; the one after it is the one that counts.</item>
/// <item><c>_queuedBytes</c> is the payload bytes in <c>_outgoing</c> (inline frames are never counted): the bound
/// (<see cref="MaxQueuedBytes"/>) applies to what waits, not to what is being written.</item>
/// <item>A call leaves <c>_pending</c> exactly once, and whoever removes it (a reply, an error, a cancellation,
/// <see cref="Close"/>, or <see cref="Send"/> taking back a frame it could not send) gives it its one outcome. So
/// Send reports a call refused (false) only when it removed it itself: callers fail a refused call on their own.</item>
/// <item><c>_callsInFlight</c> and <c>_requestsInHand</c> only choose between inline and queued, never correctness: a
/// stale value costs a thread hop or a flush, not order (which point 2 keeps). <c>_callsInFlight</c> counts the
/// entries of <c>_pending</c> but may be one below for a moment (a call can be taken out between its insertion and
/// its increment); <c>_requestsInHand</c> is one per read batch being dispatched plus the requests dispatched and not
/// yet answered, which holds only because each request is answered exactly once (<see cref="FramedRequest"/>).</item>
/// <item>The receiving thread of a <see cref="ReceiveThreadPipe"/> never writes inline: blocked in send to a peer
/// doing the same, neither side would read again.</item>
/// </list>
/// </remarks>
internal sealed class FramedConnection : IAsyncDisposable
{
    private readonly IDuplexPipe _pipe;
    private readonly IFramedHandler? _handler;
    private readonly Channel<(FrameType Type, long Id, int Method, ReadOnlyMemory<byte> Payload)> _outgoing =
        Channel.CreateUnbounded<(FrameType, long, int, ReadOnlyMemory<byte>)>(new UnboundedChannelOptions { SingleReader = true });
    private readonly ConcurrentDictionary<long, IReplySink> _pending = new();
    private readonly Func<long, int, Memory<byte>?> _sinkFor;
    private readonly CancellationTokenSource _closed = new();
    private long _nextId;
    private Task _run = Task.CompletedTask;
    // Whoever writes to the pipe holds this: the write loop, or a caller writing its frame itself (see TryWriteInline).
    private readonly SemaphoreSlim _writing = new(1, 1);
    // Calls of this side awaiting their reply, and requests of the peer being handled here: when a frame is the only
    // one of either kind, nothing else is about to be written, so its writer sends it itself instead of waking the
    // write loop (one thread hop fewer per round trip); with more in flight, frames go through the write loop, which
    // coalesces them into one flush.
    private int _callsInFlight;
    // Frames in _outgoing not yet written (the single-reader channel does not count them).
    private int _queued;
    private int _requestsInHand;
    // Not _run: a handler may ask for Completion while the first frames are read, before RunAsync has returned.
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public FramedConnection(IDuplexPipe pipe, IFramedHandler? handler)
    {
        _sinkFor = SinkFor;
        _pipe = pipe;
        _handler = handler;
        _checked = handler?.CheckedAtDispatch ?? true;
    }

    // Requests and one-way messages pass FramedRequests' rules before reaching the handler (with none, they are
    // dropped anyway, so only the payload limits matter).
    private readonly bool _checked;
    // Bytes of a refused payload (over its method's limit) still to skip as they arrive.
    private long _skipping;

    /// <summary>Completes when the connection has closed, for whatever reason.</summary>
    /// <summary>Completes when the connection has closed, for whatever reason.</summary>
    public Task Completion => _completion.Task;

    public void Start() => RunAsync();

    /// <summary>Runs the connection until either side closes it; <see cref="Completion"/> completes with it.</summary>
    public Task RunAsync()
    {
        var reading = ReadLoopAsync();
        var writing = WriteLoopAsync();
        // Once nothing more can be read no reply can come: fail the calls waiting for one now, and cut the transport so a
        // writer blocked in send to the gone peer wakes (else Close would wait for that send, and so would they).
        _ = reading.ContinueWith(static (_, c) => ((FramedConnection)c!).Abort(), this, CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        return _run = Task.WhenAll(reading, writing).ContinueWith(_ => Close(), TaskScheduler.Default);
    }

    /// <summary>
    /// Most bytes queued for the peer and not yet written, default 512 MiB. More means the peer has stopped reading
    /// (hung, or behind a partition TCP has not given up on yet): the connection is closed rather than buffering on.
    /// </summary>
    internal const long MaxQueuedBytes = 512L * 1024 * 1024;

    private long _queuedBytes;
    private string? _closeReason;

    /// <summary>Payload bytes queued and not yet handed to the pipe (tests: a peer that reads slowly fills it).</summary>
    internal long QueuedBytes => Interlocked.Read(ref _queuedBytes);

    private void Abort(string? reason = null)
    {
        if (reason is not null) Interlocked.CompareExchange(ref _closeReason, reason, null);
        Close();
        if (_pipe is ReceiveThreadPipe blocking) blocking.Abort();
    }

    /// <summary>The connection whose request the current code is handling (so a handler can send notifications back).</summary>
    public static FramedConnection? Current => s_current.Value;

    private static readonly AsyncLocal<FramedConnection?> s_current = new();

    /// <summary>Sends a one-way message; false when the connection is closed.</summary>
    public bool Notify(int method, ReadOnlyMemory<byte> payload) =>
        !_closed.IsCancellationRequested && Enqueue(FrameType.Notify, 0, method, payload);

    public Task<byte[]> CallAsync(int method, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken = default) =>
        Call(method, payload, null, cancellationToken, out _);

    /// <summary>
    /// A call whose reply is handed to <paramref name="reply"/> on the read loop, with no task in between (for callers
    /// whose handling is short and never blocks nor runs user code: it holds up every other reply of the connection).
    /// False, with <paramref name="reply"/> not called, when the connection is closed.
    /// </summary>
    public bool Call(int method, ReadOnlyMemory<byte> payload, IReplySink reply)
    {
        var id = Interlocked.Increment(ref _nextId);
        return Send(id, method, payload, reply);
    }

    /// <summary>
    /// A call whose reply is written straight into <paramref name="destination"/> by the read loop (no array in
    /// between), when it has exactly that length; an object chunk lands in shared memory this way.
    /// </summary>
    public async Task CallIntoAsync(int method, ReadOnlyMemory<byte> payload, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        var reply = Call(method, payload, destination, cancellationToken, out var id);
        byte[] bytes;
        try
        {
            bytes = await reply.ConfigureAwait(false);
        }
        finally
        {
            _sinks.TryRemove(id, out _);
        }
        if (ReferenceEquals(bytes, FrameFormat.Sunk)) return;
        if (bytes.Length != destination.Length) throw new InvalidDataException($"the reply has {bytes.Length} bytes, expected {destination.Length}");
        bytes.CopyTo(destination);
    }

    private readonly ConcurrentDictionary<long, Memory<byte>> _sinks = new();

    private Memory<byte>? SinkFor(long id, int length)
    {
        // Not a conditional expression: `null` there converts to an empty Memory<byte> (through byte[]), not to no sink.
        if (_sinks.IsEmpty || !_sinks.TryRemove(id, out var destination) || destination.Length != length) return null;
        return destination;
    }

    private Task<byte[]> Call(int method, ReadOnlyMemory<byte> payload, Memory<byte>? sink, CancellationToken cancellationToken, out long id)
    {
        id = Interlocked.Increment(ref _nextId);
        if (sink is { } destination) _sinks[id] = destination;
        var reply = new TaskReply();
        if (!Send(id, method, payload, reply))
        {
            _sinks.TryRemove(id, out _);
            return Task.FromException<byte[]>(new IOException("the connection is closed"));
        }
        if (cancellationToken.CanBeCanceled)
        {
            var callId = id;
            cancellationToken.Register(() =>
            {
                // The sink goes first: once cancelled, nothing may be written into the caller's destination.
                _sinks.TryRemove(callId, out _);
                if (TryTakePending(callId, out var r)) r.OnFailure(new OperationCanceledException(cancellationToken));
            });
        }
        return reply.Task;
    }

    private bool Send(long id, int method, ReadOnlyMemory<byte> payload, IReplySink reply)
    {
        _pending[id] = reply;
        var alone = Interlocked.Increment(ref _callsInFlight) == 1;
        if (_closed.IsCancellationRequested
            || !(alone && TryWriteInline(FrameType.Request, id, method, payload)) && !Enqueue(FrameType.Request, id, method, payload))
        {
            // Whoever took the call out of _pending first has given it its outcome: most often the Close that the
            // enqueue itself ran on passing the queue's bound (Abort), else a Close on another thread, a reply or a
            // cancellation. Then it is not refused: callers fail a refused call themselves, and it would hear twice.
            if (!_pending.TryRemove(id, out _)) return true;
            Interlocked.Decrement(ref _callsInFlight);
            return false;
        }
        return true;
    }

    // Continued off the read loop: what awaits a call may block or take long.
    private sealed class TaskReply() : TaskCompletionSource<byte[]>(TaskCreationOptions.RunContinuationsAsynchronously), IReplySink
    {
        public void OnReply(byte[] payload) => TrySetResult(payload);

        public void OnFailure(Exception error)
        {
            if (error is OperationCanceledException cancelled) TrySetCanceled(cancelled.CancellationToken);
            else TrySetException(error);
        }
    }

    private async Task WriteLoopAsync()
    {
        var output = _pipe.Output;
        try
        {
            while (await _outgoing.Reader.WaitToReadAsync(_closed.Token).ConfigureAwait(false))
            {
                await _writing.WaitAsync(_closed.Token).ConfigureAwait(false);
                try
                {
                    while (_outgoing.Reader.TryRead(out var f))
                    {
                        // Counted before it went in (invariant 2), uncounted only now that it is out.
                        var queued = Interlocked.Decrement(ref _queued);
                        var queuedBytes = Interlocked.Add(ref _queuedBytes, -f.Payload.Length);
                        Debug.Assert(queued >= 0 && queuedBytes >= 0, "a frame was uncounted before it was counted");
                        FrameFormat.Write(output, f.Type, f.Id, f.Method, f.Payload.Span);
                        Release(f.Payload);
                    }
                    var flush = await output.FlushAsync(_closed.Token).ConfigureAwait(false);
                    if (flush.IsCompleted) break;
                }
                finally
                {
                    _writing.Release();
                }
            }
        }
        catch (OperationCanceledException) { }
        catch (IOException) { }
        catch (InvalidOperationException) { }
        finally
        {
            _closed.Cancel();
            while (_outgoing.Reader.TryRead(out var left))
            {
                Interlocked.Add(ref _queuedBytes, -left.Payload.Length);
                Release(left.Payload);
            }
            await output.CompleteAsync().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Writes and flushes a frame on the calling thread when no other writer holds the pipe and no frame is queued
    /// (a queued frame must go first: calls from one caller keep their order). False: queue it instead.
    /// </summary>
    private bool TryWriteInline(FrameType type, long id, int method, ReadOnlyMemory<byte> payload)
    {
        // A blocking socket's receiving thread never writes: a full peer would stop it from draining its own side.
        if (_pipe is ReceiveThreadPipe { OnReceivingThread: true }) return false;
        if (Volatile.Read(ref _queued) > 0 || !_writing.Wait(0)) return false;
        var handedOff = false;
        try
        {
            if (Volatile.Read(ref _queued) > 0 || _closed.IsCancellationRequested) return false;
            FrameFormat.Write(_pipe.Output, type, id, method, payload.Span);
            Release(payload);
            var flush = _pipe.Output.FlushAsync(_closed.Token);
            if (flush.IsCompletedSuccessfully)
            {
                if (flush.Result.IsCompleted) _closed.Cancel();
            }
            else
            {
                // The socket is full (or failed): the rest of the flush finishes off this thread, still holding the pipe.
                handedOff = true;
                _ = FinishFlushAsync(flush);
            }
            return true;
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or OperationCanceledException or ObjectDisposedException)
        {
            Fail();
            return true;
        }
        finally
        {
            if (!handedOff) _writing.Release();
        }
    }

    private async Task FinishFlushAsync(ValueTask<FlushResult> flush)
    {
        try
        {
            if ((await flush.ConfigureAwait(false)).IsCompleted) Fail();
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or OperationCanceledException or ObjectDisposedException)
        {
            Fail();
        }
        finally
        {
            _writing.Release();
        }
    }

    // A write failed outside the write loop: stop both loops; Close then fails whatever waits for a reply.
    private void Fail()
    {
        _closed.Cancel();
        _outgoing.Writer.TryComplete();
    }

    private bool Enqueue(FrameType type, long id, int method, ReadOnlyMemory<byte> payload)
    {
        if (Interlocked.Add(ref _queuedBytes, payload.Length) > MaxQueuedBytes)
        {
            Interlocked.Add(ref _queuedBytes, -payload.Length);
            Abort($"more than {MaxQueuedBytes / (1024 * 1024)} MiB waited to be written to a peer that did not read them");
            return false;
        }
        Interlocked.Increment(ref _queued);
        if (_outgoing.Writer.TryWrite((type, id, method, payload))) return true;
        Interlocked.Decrement(ref _queued);
        Interlocked.Add(ref _queuedBytes, -payload.Length);
        return false;
    }

    private bool TryTakePending(long id, [System.Diagnostics.CodeAnalysis.MaybeNullWhen(false)] out IReplySink reply)
    {
        if (!_pending.TryRemove(id, out reply)) return false;
        Interlocked.Decrement(ref _callsInFlight);
        return true;
    }

    private static void Release(ReadOnlyMemory<byte> payload)
    {
        if (System.Runtime.InteropServices.MemoryMarshal.TryGetMemoryManager<byte, System.Buffers.MemoryManager<byte>>(payload, out var manager)
            && manager is IReleasedAfterWrite borrowed)
            borrowed.Released();
    }

    private async Task ReadLoopAsync()
    {
        var input = _pipe.Input;
        // One-way messages are handled on this loop: they see their connection as current too.
        s_current.Value = this;
        try
        {
            while (true)
            {
                var result = await input.ReadAsync(_closed.Token).ConfigureAwait(false);
                var buffer = result.Buffer;
                // Replies made while this batch is dispatched see a request in hand, so they queue and share one
                // flush rather than being written one by one.
                Interlocked.Increment(ref _requestsInHand);
                try
                {
                    while (Skip(ref buffer) && FrameFormat.TryRead(ref buffer, out var frame, _sinkFor, methodLimits: _checked)) Dispatch(frame);
                }
                finally
                {
                    Interlocked.Decrement(ref _requestsInHand);
                }
                input.AdvanceTo(buffer.Start, buffer.End);
                if (result.IsCompleted) break;
            }
        }
        catch (OperationCanceledException) { }
        catch (IOException) { }
        catch (InvalidDataException) { }
        finally
        {
            _closed.Cancel();
            await input.CompleteAsync().ConfigureAwait(false);
        }
    }

    private bool Skip(ref System.Buffers.ReadOnlySequence<byte> buffer)
    {
        if (_skipping == 0) return true;
        var n = Math.Min(buffer.Length, _skipping);
        buffer = buffer.Slice(n);
        _skipping -= n;
        return _skipping == 0;
    }

    /// <summary>Applies the method's rules to a request or one-way message: null when admitted, else why not.</summary>
    private string? Admit(Frame frame)
    {
        if (!_checked) return null;
        if (frame.Refused > 0) return FramedRequests.Oversized(frame.Method, frame.Refused);
        return FramedRequests.BeginDispatch(frame.Method, frame.Payload);
    }

    private void Dispatch(Frame frame)
    {
        // Whoever the frame was for, its unread payload is not the next frame.
        _skipping = frame.Refused;
        switch (frame.Type)
        {
            case FrameType.Response when TryTakePending(frame.Id, out var ok):
                ok.OnReply(frame.Payload);
                break;
            case FrameType.Error when TryTakePending(frame.Id, out var failed):
                failed.OnFailure(new RemoteCallException(Encoding.UTF8.GetString(frame.Payload)));
                break;
            case FrameType.Request when _handler is not null:
                Interlocked.Increment(ref _requestsInHand);
                if (Admit(frame) is { } refused)
                {
                    Answer(FrameType.Error, frame.Id, frame.Method, ErrorPayload(new InvalidDataException(refused)));
                    break;
                }
                try
                {
                    if (!TryHandle(frame)) _ = HandleAsync(frame);
                }
                finally
                {
                    FramedRequests.EndDispatch();
                }
                break;
            case FrameType.Notify when _handler is not null:
                // A refused one-way message is dropped, as one its handler cannot take.
                if (Admit(frame) is not null) break;
                try
                {
                    _handler.OnNotify(frame.Method, frame.Payload);
                }
                catch (Exception)
                {
                    // A one-way message has no caller to fail: one that cannot be handled (malformed) is dropped. Letting
                    // it end the read loop would close the connection, and with it every call and pin the peer has on it.
                }
                finally
                {
                    FramedRequests.EndDispatch();
                }
                break;
        }
    }

    private bool TryHandle(Frame frame)
    {
        try
        {
            return _handler!.TryHandle(frame.Method, frame.Payload, new FramedRequest(this, frame.Id, frame.Method));
        }
        catch (Exception e)
        {
            Answer(FrameType.Error, frame.Id, frame.Method, ErrorPayload(e));
            return true;
        }
    }

    private async Task HandleAsync(Frame frame)
    {
        s_current.Value = this;
        try
        {
            var reply = await _handler!.HandleAsync(frame.Method, frame.Payload, _closed.Token).ConfigureAwait(false);
            Answer(FrameType.Response, frame.Id, frame.Method, reply);
        }
        catch (Exception e)
        {
            Answer(FrameType.Error, frame.Id, frame.Method, ErrorPayload(e));
        }
    }

    internal static byte[] ErrorPayload(Exception e) => Encoding.UTF8.GetBytes($"{e.GetType().Name}: {e.Message}");

    internal void Answer(FrameType type, long id, int method, ReadOnlyMemory<byte> payload)
    {
        var inHand = Interlocked.Decrement(ref _requestsInHand);
        Debug.Assert(inHand >= 0, "a request was answered twice");
        var alone = inHand == 0;
        if (alone && TryWriteInline(type, id, method, payload)) return;
        if (!Enqueue(type, id, method, payload)) Release(payload);
    }

    private void Close()
    {
        _closed.Cancel();
        _outgoing.Writer.TryComplete();
        foreach (var id in _pending.Keys)
        {
            if (TryTakePending(id, out var r)) r.OnFailure(new IOException(Volatile.Read(ref _closeReason) is { } why
                ? $"the connection was closed before the reply arrived: {why}"
                : "the connection closed before the reply arrived"));
        }
        _completion.TrySetResult();
    }

    public async ValueTask DisposeAsync()
    {
        _closed.Cancel();
        _outgoing.Writer.TryComplete();
        try
        {
            // A writer blocked in send to a peer that stopped reading would hold this up for as long as TCP waits.
            await _run.WaitAsync(DisposeGrace).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            Abort("closed by this side");
            try { await _run.ConfigureAwait(false); } catch (Exception) { /* closing anyway */ }
        }
        catch (Exception) { /* closing anyway */ }
    }

    private static readonly TimeSpan DisposeGrace = TimeSpan.FromSeconds(1);
}
