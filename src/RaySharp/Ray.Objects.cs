using System.Diagnostics;
using System.Runtime.ExceptionServices;
using Google.Protobuf;
using RaySharp.CoreWorker;
using RaySharp.CoreWorker.Objects;
using Tasks = System.Threading.Tasks;

namespace RaySharp;

/// <summary>Objects: Get, Put, Wait (each with its async twin).</summary>
public static partial class Ray
{
    /// <summary>The value of <paramref name="reference"/>, waiting for it at most <paramref name="timeout"/> (default: forever).</summary>
    public static T Get<T>(ObjectRef<T> reference, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(reference);
        var started = timeout is null ? 0 : Stopwatch.GetTimestamp();
        // The bytes first: a small value then deserializes at once, with no asynchronous state per read.
        var value = reference.Bytes.IsCompleted || WaitForBytes(reference.Bytes, timeout) ? reference.Value : null;
        if (value is { IsCompletedSuccessfully: true }) return value.Result;
        try
        {
            if (value is null || !WaitLendingCpus(value, Remaining(timeout, started)))
                throw new GetTimeoutException($"{reference} was not ready within {timeout!.Value.TotalSeconds:0.###} s");
        }
        catch (AggregateException e) when (e.InnerExceptions.Count == 1)
        {
            ExceptionDispatchInfo.Capture(e.InnerException!).Throw();
        }
        return value.Result;
    }

    /// <summary>The values of <paramref name="references"/>, in order, waiting at most <paramref name="timeout"/> for all of them.</summary>
    public static T[] Get<T>(IEnumerable<ObjectRef<T>> references, TimeSpan? timeout = null)
    {
        var list = references.ToList();
        var started = timeout is null ? 0 : Stopwatch.GetTimestamp();
        string NotReady() => $"{list.Count(r => !r.IsReady)} of {list.Count} objects were not ready within {timeout!.Value.TotalSeconds:0.###} s";
        // As for one reference: the bytes of all, then the values (started together: large ones may be fetched).
        if (!list.TrueForAll(static r => r.Bytes.IsCompleted)
            && !WaitForBytes(Tasks.Task.WhenAll(list.Select(r => (Tasks.Task)r.Bytes)), timeout))
            throw new GetTimeoutException(NotReady());
        var all = Tasks.Task.WhenAll(list.Select(r => r.Value));
        try
        {
            if (!WaitLendingCpus(all, Remaining(timeout, started))) throw new GetTimeoutException(NotReady());
        }
        catch (AggregateException)
        {
            // Rethrow the first failure in list order, as a sequential Get would.
            foreach (var r in list) Get(r);
        }
        return all.Result;
    }

    /// <summary>Awaits the values of <paramref name="references"/>, in order.</summary>
    public static Task<T[]> GetAsync<T>(IEnumerable<ObjectRef<T>> references) =>
        Detach(Tasks.Task.WhenAll(references.Select(r => r.Value)));

    /// <summary>
    /// Waits for serialized values; false when the time ran out. A failure is left for the values, which turn it into
    /// the API's exception.
    /// </summary>
    private static bool WaitForBytes(Tasks.Task bytes, TimeSpan? timeout)
    {
        try
        {
            return WaitLendingCpus(bytes, timeout ?? Timeout.InfiniteTimeSpan);
        }
        catch (AggregateException)
        {
            return true;
        }
    }

    private static TimeSpan Remaining(TimeSpan? timeout, long started) => timeout is { } limit
        ? TimeSpan.FromTicks(Math.Max(0, (limit - Stopwatch.GetElapsedTime(started)).Ticks))
        : Timeout.InfiniteTimeSpan;

    /// <summary>Stores <paramref name="value"/> in the cluster and returns a reference to it, owned by this driver.</summary>
    public static ObjectRef<T> Put<T>(T value)
    {
        var storing = StartPut(value);
        ByteString bytes;
        try
        {
            bytes = storing.IsCompletedSuccessfully ? storing.Result : storing.AsTask().GetAwaiter().GetResult();
        }
        catch (ObjectStoreFullCoreException e)
        {
            throw new ObjectStoreFullException(e.Message);
        }
        return new ObjectRef<T>(Common.UniqueId.New(), Tasks.Task.FromResult(bytes));
    }

    /// <summary>As <see cref="Put{T}(T)"/>, awaited: a large value's write into the node's store does not block the caller.</summary>
    public static Task<ObjectRef<T>> PutAsync<T>(T value)
    {
        var storing = StartPut(value);
        return storing.IsCompletedSuccessfully
            ? Tasks.Task.FromResult(new ObjectRef<T>(Common.UniqueId.New(), Tasks.Task.FromResult(storing.Result)))
            : Detach(Finish(storing));

        static async Task<ObjectRef<T>> Finish(ValueTask<ByteString> storing)
        {
            try
            {
                return new ObjectRef<T>(Common.UniqueId.New(), Tasks.Task.FromResult(await storing.ConfigureAwait(false)));
            }
            catch (ObjectStoreFullCoreException e)
            {
                throw new ObjectStoreFullException(e.Message);
            }
        }
    }

    /// <summary>Serializes a value for Put: small values stay in this process; large ones are written once into the node's shared-memory store.</summary>
    private static ValueTask<ByteString> StartPut<T>(T value)
    {
        var (jobId, runtime) = SubmitContext();
        try
        {
            return runtime.Store.SerializeAsync(typeof(T), value, jobId);
        }
        catch (Exception e) when (e is MessagePack.MessagePackSerializationException or NotSupportedException or InvalidOperationException)
        {
            throw new ArgumentException($"a value of type {typeof(T)} cannot be serialized for Ray.Put: {e.GetBaseException().Message}", nameof(value), e);
        }
    }

    /// <summary>
    /// Waits until <paramref name="numReturns"/> of <paramref name="references"/> are ready (succeeded or failed) or
    /// <paramref name="timeout"/> passes; returns the ready ones and the others, each in their original order.
    /// </summary>
    public static (List<ObjectRef<T>> Ready, List<ObjectRef<T>> NotReady) Wait<T>(IReadOnlyList<ObjectRef<T>> references, int numReturns = 1, TimeSpan? timeout = null)
    {
        CheckWait(references, numReturns);
        var deadline = timeout is { } t ? DateTime.UtcNow + t : DateTime.MaxValue;
        while (references.Count(r => r.IsReady) < numReturns)
        {
            var pending = references.Where(r => !r.IsReady).Select(r => (Tasks.Task)r.Bytes).ToArray();
            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero) break;
            Tasks.Task.WaitAny(pending, deadline == DateTime.MaxValue ? Timeout.InfiniteTimeSpan : left);
        }
        return Split(references, numReturns);
    }

    /// <summary>As <see cref="Wait{T}(IReadOnlyList{ObjectRef{T}}, int, TimeSpan?)"/>, awaited; <paramref name="cancellationToken"/> stops the wait (it throws).</summary>
    public static Task<(List<ObjectRef<T>> Ready, List<ObjectRef<T>> NotReady)> WaitAsync<T>(IReadOnlyList<ObjectRef<T>> references, int numReturns = 1,
        TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        CheckWait(references, numReturns);
        return Detach(WaitLoopAsync(references, numReturns, timeout, cancellationToken));

        static async Task<(List<ObjectRef<T>>, List<ObjectRef<T>>)> WaitLoopAsync(IReadOnlyList<ObjectRef<T>> references, int numReturns, TimeSpan? timeout, CancellationToken cancellationToken)
        {
            var deadline = timeout is { } t ? DateTime.UtcNow + t : DateTime.MaxValue;
            while (references.Count(r => r.IsReady) < numReturns)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var pending = references.Where(r => !r.IsReady).Select(r => (Tasks.Task)r.Bytes).ToArray();
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero) break;
                using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                var expiry = Tasks.Task.Delay(deadline == DateTime.MaxValue ? Timeout.InfiniteTimeSpan : left, stop.Token);
                await Tasks.Task.WhenAny(Tasks.Task.WhenAny(pending), expiry).ConfigureAwait(false);
                await stop.CancelAsync().ConfigureAwait(false);
            }
            cancellationToken.ThrowIfCancellationRequested();
            return Split(references, numReturns);
        }
    }

    private static void CheckWait<T>(IReadOnlyList<ObjectRef<T>> references, int numReturns)
    {
        ArgumentNullException.ThrowIfNull(references);
        if (numReturns < 0 || numReturns > references.Count)
            throw new ArgumentOutOfRangeException(nameof(numReturns), $"numReturns must be between 0 and the number of references ({references.Count}), got {numReturns}");
    }

    private static (List<ObjectRef<T>> Ready, List<ObjectRef<T>> NotReady) Split<T>(IReadOnlyList<ObjectRef<T>> references, int numReturns)
    {
        var ready = references.Where(r => r.IsReady).Take(numReturns).ToList();
        return (ready, references.Where(r => !ready.Contains(r)).ToList());
    }

    /// <summary>
    /// Values complete on connection read loops: the caller's continuation must not run there, so what an async twin
    /// returns completes on the thread pool.
    /// </summary>
    private static Task<TResult> Detach<TResult>(Task<TResult> task)
    {
        if (task.IsCompleted) return task;
        var detached = new TaskCompletionSource<TResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        task.ContinueWith(static (t, d) => ((TaskCompletionSource<TResult>)d!).TrySetFromTask(t), detached, CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        return detached.Task;
    }

    /// <summary>Inside a task, a wait for other tasks lends the worker's CPUs back to its node (no nested deadlock).</summary>
    private static bool WaitLendingCpus(Tasks.Task value, TimeSpan timeout)
    {
        // A reply usually comes within tens of microseconds: stay awake for it before sleeping.
        // Wait(0) on a completed task: throws its failure as Wait does.
        if (Common.YieldingSpin.Until(static t => t.IsCompleted, value)) return value.Wait(0);
        if (CoreWorkerProcess.Current?.NotifyBlocked is not { } notify) return value.Wait(timeout);
        notify(true).GetAwaiter().GetResult();
        try
        {
            return value.Wait(timeout);
        }
        finally
        {
            notify(false).GetAwaiter().GetResult();
        }
    }
}
