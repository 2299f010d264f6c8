using System.Collections.Concurrent;

namespace RaySharp.CoreWorker.Execution;

/// <summary>
/// A thread of its own that runs what is posted to it one item at a time, in order: where a worker runs its tasks and
/// a dedicated actor its calls. A call handed from the connection's thread to this one wakes exactly this thread, where
/// the shared pool would wake (and leave spinning) several of its own on a machine with few cores.
/// </summary>
internal sealed class ExecutionThread
{
    private readonly ConcurrentQueue<(SendOrPostCallback Callback, object? State)> _queue = new();
    private readonly SemaphoreSlim _ready = new(0);
    // 1 while the thread is about to block or blocked on _ready. Posts release _ready only then: a busy thread (the
    // usual case when calls come pipelined) costs a post no lock and no kernel call.
    private int _sleeping;

    public ExecutionThread(string name)
    {
        // Unflowed: the thread must not carry the creator's flow-locals (the connection it was made on, a running task).
        new Thread(Run) { IsBackground = true, Name = name }.UnsafeStart();
    }

    public void Post(SendOrPostCallback callback, object? state)
    {
        _queue.Enqueue((callback, state));
        // The enqueue is a full fence, as is the thread's exchange before its last look at the queue: either it sees
        // the item, or this sees it sleeping.
        if (Volatile.Read(ref _sleeping) == 1 && Interlocked.Exchange(ref _sleeping, 0) == 1) _ready.Release();
    }

    private void Run()
    {
        while (true)
        {
            if (!_queue.TryDequeue(out var item))
            {
                if (Common.YieldingSpin.Until(static q => !q.IsEmpty, _queue)) continue;
                Interlocked.Exchange(ref _sleeping, 1);
                // Not empty after all: take back the flag, unless a post already took it (and so releases _ready once).
                if (!_queue.IsEmpty && Interlocked.Exchange(ref _sleeping, 0) == 1) continue;
                _ready.Wait();
                continue;
            }
            try
            {
                item.Callback(item.State);
            }
            catch (Exception e)
            {
                // What runs here catches its own exceptions (task and call failures travel back as replies): this is a bug.
                Console.Error.WriteLine($"unhandled exception on {Thread.CurrentThread.Name}: {e}");
            }
        }
    }
}
