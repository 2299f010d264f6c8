using System.Collections.Concurrent;
using System.Reflection;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using RaySharp.CoreWorker.CodeShipping;
using RaySharp.CoreWorker.Serialization;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

namespace RaySharp.CoreWorker.Execution;

/// <summary>
/// Runs the tasks pushed to this worker: loads the job's code on its first task, resolves the function once, reads
/// the arguments with the parameters' types, runs it off the connection's read loop, and answers with the result or
/// the exception (type, message, remote stack trace, where it ran).
/// </summary>
/// <param name="store">This worker's object store: arguments are read from it, large results written to it.</param>
/// <param name="objects">Serves the objects this worker passed on by reference inside values.</param>
internal sealed partial class TaskExecutor(CoreWorkerOptions options, GcsClient gcs, Objects.LocalObjectStore store, Objects.ObjectDirectory objects,
    ILogger<TaskExecutor> logger) : IFramedHandler
{
    private readonly JobCodeCache _code = new(options, gcs);
    private ActorExecutor? _actors;

    /// <summary>The actors of this worker, made on the first actor it is given.</summary>
    private ActorExecutor Actors => LazyInitializer.EnsureInitialized(ref _actors, () => new ActorExecutor(options, _code, store, logger));

    // Tasks pushed ahead (pipelined by the lessee) wait here and run one at a time, in arrival order: a worker is
    // leased for one task's resources. The runner takes the next one itself when a task ends without awaiting.
    private readonly Lock _gate = new();
    private readonly Queue<PushedTask> _waiting = new();
    private bool _busy;

    /// <summary>A task pushed to this worker, answered through the request it came in.</summary>
    private sealed class PushedTask(TaskExecutor executor, PushTaskRequest request, FramedRequest reply)
    {
        public TaskExecutor Executor => executor;
        public PushTaskRequest Request => request;
        public FramedRequest Reply => reply;
    }
    // Tasks start here, off the connection's read loop (user code may block); made on the first task.
    private ExecutionThread? _thread;

    private ExecutionThread Runner => LazyInitializer.EnsureInitialized(ref _thread, () => new ExecutionThread("task executor"));

    /// <summary>Tasks and actor calls, the hottest requests, are answered by whoever runs them: no async frame per call.</summary>
    public bool TryHandle(int method, byte[] payload, FramedRequest request)
    {
        if (method == FramedMethods.ActorCall)
        {
            Actors.Call(FramedRequests.Message<PushTaskRequest>(method, payload), request);
            return true;
        }
        if (method != FramedMethods.PushTask) return false;
        var task = new PushedTask(this, FramedRequests.Message<PushTaskRequest>(method, payload), request);
        lock (_gate)
        {
            if (_busy)
            {
                _waiting.Enqueue(task);
                return true;
            }
            _busy = true;
        }
        Runner.Post(static state => RunFrom((PushedTask)state!), task);
        return true;
    }

    /// <summary>On the runner: runs this task, then the next ones queued, as long as each ends without awaiting.</summary>
    private static void RunFrom(PushedTask? task)
    {
        while (task is not null)
        {
            var executor = task.Executor;
            var running = executor.ExecuteAsync(task.Request, task.Reply.Connection);
            if (!running.IsCompleted)
            {
                // It awaits (an argument being fetched, an async function): the next one starts when it ends.
                running.ContinueWith(static (done, state) =>
                {
                    var ended = (PushedTask)state!;
                    Answer(ended, done);
                    if (ended.Executor.Next() is { } next) ended.Executor.Runner.Post(static s => RunFrom((PushedTask)s!), next);
                }, task, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
                return;
            }
            Answer(task, running);
            task = executor.Next();
        }
    }

    // ExecuteAsync answers a task's own failure itself; a fault here is the executor's, and must not stall the queue.
    private static void Answer(PushedTask task, Task<PushTaskReply> done)
    {
        if (done.IsCompletedSuccessfully) task.Reply.Reply(MessageBytes.ToBytes(done.Result));
        else task.Reply.Fail(done.Exception?.GetBaseException() ?? new OperationCanceledException("the task was cancelled"));
    }

    /// <summary>The next task waiting, now running; null when none waits (the worker is free).</summary>
    private PushedTask? Next()
    {
        lock (_gate)
        {
            if (_waiting.TryDequeue(out var next)) return next;
            _busy = false;
            return null;
        }
    }

    public async ValueTask<ReadOnlyMemory<byte>> HandleAsync(int method, byte[] payload, CancellationToken cancellationToken)
    {
        if (method == FramedMethods.GetObject) return await objects.ServeAsync(payload).ConfigureAwait(false);
        if (method == FramedMethods.ActorCreate)
        {
            var creation = FramedRequests.Message<PushTaskRequest>(method, payload);
            var creator = FramedConnection.Current;
            // Off the connection's read loop: a constructor may block.
            return (await Task.Run(() => Actors.CreateAsync(creation, creator), CancellationToken.None).ConfigureAwait(false)).ToByteArray();
        }
        if (method == FramedMethods.ActorKill)
        {
            Actors.Kill(FramedRequests.Message<ActorKillRequest>(method, payload).ActorId);
            return ReadOnlyMemory<byte>.Empty;
        }
        throw new NotSupportedException($"method {method} is not served by a worker");
    }

    private async Task<PushTaskReply> ExecuteAsync(PushTaskRequest request, FramedConnection? submitter)
    {
        // References inside the arguments are borrowed from the process that pushed the task.
        var running = new RunningTask(request.JobId, request.TaskId, null)
        {
            ArgumentSource = submitter,
            PlacementGroupId = request.PlacementGroupId.Length > 0 ? request.PlacementGroupId : null,
            CaptureChildTasks = request.CaptureChildTasks,
        };
        RunningTask.Enter(running);
        try
        {
            var code = await _code.GetAsync(request.JobId).ConfigureAwait(false);
            var (method, invoker, target, parameters) = FunctionDescriptors.Resolve(request, JobCodeCache.Loader(code));
            if (parameters.Length != request.Args.Count)
                throw new ArgumentException($"{method.Name} takes {parameters.Length} arguments, the task carried {request.Args.Count}");
            var args = new object?[parameters.Length];
            await store.ReadArgumentsAsync(parameters, request.Args, args).ConfigureAwait(false);
            running.ArgumentSource = null;

            Common.FaultInjection.AtTaskStart(request.Name, request.Attempt);
            // Tasks run one at a time per worker, so the process environment can carry the lease's GPUs, as in Ray.
            Environment.SetEnvironmentVariable("CUDA_VISIBLE_DEVICES", request.GpuIds.Count > 0 ? string.Join(",", request.GpuIds) : null);
            TaskOutputCapture.BeginStreamingTo(running, submitter, request.Name, request.TaskId, options.NodeIpAddress);
            var result = invoker.Invoke(target, args.AsSpan());
            return new PushTaskReply { Result = await TaskResults.SerializeAsync(store, result, method.ReturnType, request.JobId).ConfigureAwait(false) };
        }
        catch (Exception e)
        {
            var failure = TaskResults.Failure(e, options);
            LogTaskFailed(logger, request.TaskId, failure.Error.ExceptionType, failure.Error.Message);
            return failure;
        }
        finally
        {
            TaskOutputCapture.End(running);
        }
    }

    [LoggerMessage(EventId = 610, Level = LogLevel.Information, Message = "Task {TaskId} failed: {Type}: {Message}")]
    private static partial void LogTaskFailed(ILogger logger, string taskId, string type, string message);
}
