using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Text;
using System.Threading.Channels;

namespace RaySharp.Rpc.Transport;

/// <summary>Serves requests arriving on a framed connection.</summary>
internal interface IFramedHandler
{
    /// <summary>
    /// Handles one request. Called in arrival order on the connection's read loop: the work done before the first await
    /// runs in order (how per-caller ordering of actor calls is kept); what follows may overlap.
    /// </summary>
    ValueTask<ReadOnlyMemory<byte>> HandleAsync(int method, byte[] payload, CancellationToken cancellationToken);

    /// <summary>A one-way message from the peer. Called on the read loop: keep it short.</summary>
    void OnNotify(int method, byte[] payload) { }
}

/// <summary>
/// Implemented by the <see cref="System.Buffers.MemoryManager{T}"/> behind a reply payload that borrows memory (an object
/// chunk served straight from shared memory): told once the bytes are in the connection's output, or will never be.
/// </summary>
internal interface IReleasedAfterWrite
{
    void Released();
}

/// <summary>The call failed on the remote side; the message is the remote error.</summary>
internal sealed class RemoteCallException(string message) : Exception(message);

/// <summary>
/// One long-lived, multiplexed connection: many calls in flight each way, matched by id. Outgoing frames go through a
/// queue drained by a single writer that flushes only when the queue is empty, so frames written while a flush is in
/// progress share the next one (write coalescing).
/// </summary>
internal sealed class FramedConnection : IAsyncDisposable
{
    private readonly IDuplexPipe _pipe;
    private readonly IFramedHandler? _handler;
    private readonly Channel<(FrameType Type, long Id, int Method, ReadOnlyMemory<byte> Payload)> _outgoing =
        Channel.CreateUnbounded<(FrameType, long, int, ReadOnlyMemory<byte>)>(new UnboundedChannelOptions { SingleReader = true });
    private readonly ConcurrentDictionary<long, TaskCompletionSource<byte[]>> _pending = new();
    private readonly Func<long, int, Memory<byte>?> _sinkFor;
    private readonly CancellationTokenSource _closed = new();
    private long _nextId;
    private Task _run = Task.CompletedTask;
    // Not _run: a handler may ask for Completion while the first frames are read, before RunAsync has returned.
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public FramedConnection(IDuplexPipe pipe, IFramedHandler? handler)
    {
        _sinkFor = SinkFor;
        _pipe = pipe;
        _handler = handler;
    }

    /// <summary>Completes when the connection has closed, for whatever reason.</summary>
    /// <summary>Completes when the connection has closed, for whatever reason.</summary>
    public Task Completion => _completion.Task;

    public void Start() => RunAsync();

    /// <summary>Runs the connection until either side closes it; <see cref="Completion"/> completes with it.</summary>
    public Task RunAsync()
    {
        var reading = ReadLoopAsync();
        var writing = WriteLoopAsync();
        return _run = Task.WhenAll(reading, writing).ContinueWith(_ => Close(), TaskScheduler.Default);
    }

    /// <summary>The connection whose request the current code is handling (so a handler can send notifications back).</summary>
    public static FramedConnection? Current => s_current.Value;

    private static readonly AsyncLocal<FramedConnection?> s_current = new();

    /// <summary>Sends a one-way message; false when the connection is closed.</summary>
    public bool Notify(int method, ReadOnlyMemory<byte> payload) =>
        !_closed.IsCancellationRequested && _outgoing.Writer.TryWrite((FrameType.Notify, 0, method, payload));

    public Task<byte[]> CallAsync(int method, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken = default) =>
        Call(method, payload, null, cancellationToken, out _);

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
        var reply = new TaskCompletionSource<byte[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pending[id] = reply;
        if (_closed.IsCancellationRequested || !_outgoing.Writer.TryWrite((FrameType.Request, id, method, payload)))
        {
            _pending.TryRemove(id, out _);
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
                if (_pending.TryRemove(callId, out var r)) r.TrySetCanceled(cancellationToken);
            });
        }
        return reply.Task;
    }

    private async Task WriteLoopAsync()
    {
        var output = _pipe.Output;
        try
        {
            while (await _outgoing.Reader.WaitToReadAsync(_closed.Token).ConfigureAwait(false))
            {
                while (_outgoing.Reader.TryRead(out var f))
                {
                    FrameFormat.Write(output, f.Type, f.Id, f.Method, f.Payload.Span);
                    Release(f.Payload);
                }
                var flush = await output.FlushAsync(_closed.Token).ConfigureAwait(false);
                if (flush.IsCompleted) break;
            }
        }
        catch (OperationCanceledException) { }
        catch (IOException) { }
        catch (InvalidOperationException) { }
        finally
        {
            _closed.Cancel();
            while (_outgoing.Reader.TryRead(out var left)) Release(left.Payload);
            await output.CompleteAsync().ConfigureAwait(false);
        }
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
                while (FrameFormat.TryRead(ref buffer, out var frame, _sinkFor)) Dispatch(frame);
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

    private void Dispatch(Frame frame)
    {
        switch (frame.Type)
        {
            case FrameType.Response when _pending.TryRemove(frame.Id, out var ok):
                ok.TrySetResult(frame.Payload);
                break;
            case FrameType.Error when _pending.TryRemove(frame.Id, out var failed):
                failed.TrySetException(new RemoteCallException(Encoding.UTF8.GetString(frame.Payload)));
                break;
            case FrameType.Request when _handler is not null:
                _ = HandleAsync(frame);
                break;
            case FrameType.Notify when _handler is not null:
                _handler.OnNotify(frame.Method, frame.Payload);
                break;
        }
    }

    private async Task HandleAsync(Frame frame)
    {
        s_current.Value = this;
        try
        {
            var reply = await _handler!.HandleAsync(frame.Method, frame.Payload, _closed.Token).ConfigureAwait(false);
            if (!_outgoing.Writer.TryWrite((FrameType.Response, frame.Id, frame.Method, reply))) Release(reply);
        }
        catch (Exception e)
        {
            _outgoing.Writer.TryWrite((FrameType.Error, frame.Id, frame.Method, Encoding.UTF8.GetBytes($"{e.GetType().Name}: {e.Message}")));
        }
    }

    private void Close()
    {
        _closed.Cancel();
        _outgoing.Writer.TryComplete();
        foreach (var id in _pending.Keys)
        {
            if (_pending.TryRemove(id, out var r)) r.TrySetException(new IOException("the connection closed before the reply arrived"));
        }
        _completion.TrySetResult();
    }

    public async ValueTask DisposeAsync()
    {
        _closed.Cancel();
        _outgoing.Writer.TryComplete();
        try { await _run.ConfigureAwait(false); } catch (Exception) { /* closing anyway */ }
    }
}
