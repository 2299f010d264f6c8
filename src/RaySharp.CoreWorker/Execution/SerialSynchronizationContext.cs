namespace RaySharp.CoreWorker.Execution;

/// <summary>
/// Runs what is posted to it one callback at a time, in order: an async actor's calls interleave at their awaits but
/// never run in parallel, as on Ray's per-actor event loop. An actor with a worker of its own runs on a thread of its
/// own (<see cref="ExecutionThread"/>); lightweight actors, thousands to a process, share the thread pool.
/// </summary>
internal sealed class SerialSynchronizationContext(ExecutionThread? thread = null) : SynchronizationContext
{
    private readonly System.Collections.Concurrent.ConcurrentQueue<(SendOrPostCallback Callback, object? State)> _queue = new();
    private int _scheduled;

    public override void Post(SendOrPostCallback d, object? state)
    {
        _queue.Enqueue((d, state));
        if (Interlocked.CompareExchange(ref _scheduled, 1, 0) != 0) return;
        if (thread is not null) thread.Post(static c => ((SerialSynchronizationContext)c!).Drain(), this);
        else ThreadPool.UnsafeQueueUserWorkItem(static c => c.Drain(), this, preferLocal: true);
    }

    public override void Send(SendOrPostCallback d, object? state) => throw new NotSupportedException("an actor's context runs callbacks asynchronously only");

    public override SynchronizationContext CreateCopy() => this;

    private void Drain()
    {
        var previous = Current;
        SetSynchronizationContext(this);
        try
        {
            while (true)
            {
                while (_queue.TryDequeue(out var item))
                {
                    try
                    {
                        item.Callback(item.State);
                    }
                    catch (Exception e)
                    {
                        // A callback that throws must not stop the actor; async methods capture their own exceptions.
                        Console.Error.WriteLine($"unhandled exception on an actor's context: {e}");
                    }
                }
                Volatile.Write(ref _scheduled, 0);
                // Something posted between the last TryDequeue and the reset: take it, unless another drain already did.
                if (_queue.IsEmpty || Interlocked.CompareExchange(ref _scheduled, 1, 0) != 0) return;
            }
        }
        finally
        {
            SetSynchronizationContext(previous);
        }
    }
}
