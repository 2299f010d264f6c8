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
internal sealed partial class TaskExecutor(CoreWorkerOptions options, GcsClient gcs, ILogger<TaskExecutor> logger) : IFramedHandler
{
    private readonly JobCodeCache _code = new(options, gcs);
    private ActorExecutor? _actors;

    /// <summary>The actors of this worker, made on the first actor it is given.</summary>
    private ActorExecutor Actors => LazyInitializer.EnsureInitialized(ref _actors, () => new ActorExecutor(options, _code, logger));

    // Tasks pushed ahead (pipelined by the lessee) wait here and run one at a time, in arrival order: a worker is
    // leased for one task's resources. A task that finds the worker free runs at once, with no queue hop.
    private readonly Lock _gate = new();
    private readonly Queue<(PushTaskRequest Request, FramedConnection? Submitter, TaskCompletionSource<PushTaskReply> Reply)> _waiting = new();
    private bool _busy;
    // Tasks start here, off the connection's read loop (user code may block); made on the first task.
    private ExecutionThread? _thread;

    private ExecutionThread Runner => LazyInitializer.EnsureInitialized(ref _thread, () => new ExecutionThread("task executor"));

    /// <summary>Actor calls, the hottest requests, are answered by whoever runs them: no async frame per call.</summary>
    public bool TryHandle(int method, byte[] payload, FramedRequest request)
    {
        if (method != FramedMethods.ActorCall) return false;
        Actors.Call(MessageBytes.Parse(PushTaskRequest.Parser, payload), request);
        return true;
    }

    public async ValueTask<ReadOnlyMemory<byte>> HandleAsync(int method, byte[] payload, CancellationToken cancellationToken)
    {
        if (method == FramedMethods.GetObject) return await Objects.ObjectDirectory.ServeAsync(payload).ConfigureAwait(false);
        if (method == FramedMethods.ActorCreate)
        {
            var creation = PushTaskRequest.Parser.ParseFrom(payload);
            var creator = FramedConnection.Current;
            // Off the connection's read loop: a constructor may block.
            return (await Task.Run(() => Actors.CreateAsync(creation, creator), CancellationToken.None).ConfigureAwait(false)).ToByteArray();
        }
        if (method == FramedMethods.ActorKill)
        {
            Actors.Kill(ActorKillRequest.Parser.ParseFrom(payload).ActorId);
            return ReadOnlyMemory<byte>.Empty;
        }
        if (method != FramedMethods.PushTask) throw new NotSupportedException($"method {method} is not served by a worker");
        var request = MessageBytes.Parse(PushTaskRequest.Parser, payload);
        // The task's output streams back over the connection that pushed it.
        var submitter = FramedConnection.Current;
        TaskCompletionSource<PushTaskReply>? queued = null;
        lock (_gate)
        {
            if (_busy)
            {
                queued = new TaskCompletionSource<PushTaskReply>(TaskCreationOptions.RunContinuationsAsynchronously);
                _waiting.Enqueue((request, submitter, queued));
            }
            else
            {
                _busy = true;
            }
        }
        PushTaskReply reply;
        if (queued is null)
        {
            reply = await Runner.Run(() => ExecuteAsync(request, submitter)).ConfigureAwait(false);
            RunNext();
        }
        else
        {
            reply = await queued.Task.ConfigureAwait(false);
        }
        return MessageBytes.ToBytes(reply);
    }

    private void RunNext()
    {
        (PushTaskRequest Request, FramedConnection? Submitter, TaskCompletionSource<PushTaskReply> Reply) next;
        lock (_gate)
        {
            if (!_waiting.TryDequeue(out next))
            {
                _busy = false;
                return;
            }
        }
        Runner.Run(() => ExecuteAsync(next.Request, next.Submitter)).ContinueWith(static (done, state) =>
        {
            var (executor, reply) = ((TaskExecutor, TaskCompletionSource<PushTaskReply>))state!;
            reply.TrySetResult(done.Result);
            executor.RunNext();
        }, (this, next.Reply), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    private async Task<PushTaskReply> ExecuteAsync(PushTaskRequest request, FramedConnection? submitter)
    {
        // References inside the arguments are borrowed from the process that pushed the task.
        var running = new RunningTask(request.JobId, request.TaskId, null) { ArgumentSource = submitter };
        WorkerContext.Enter(running);
        try
        {
            var code = await _code.GetAsync(request.JobId).ConfigureAwait(false);
            var (method, invoker, target, parameters) = FunctionDescriptors.Resolve(request, JobCodeCache.Loader(code));
            if (parameters.Length != request.Args.Count)
                throw new ArgumentException($"{method.Name} takes {parameters.Length} arguments, the task carried {request.Args.Count}");
            var args = new object?[parameters.Length];
            await Objects.LocalObjectStore.ReadArgumentsAsync(parameters, request.Args, args).ConfigureAwait(false);
            running.ArgumentSource = null;

            Common.FaultInjection.AtTaskStart(request.Name, request.Attempt);
            // Tasks run one at a time per worker, so the process environment can carry the lease's GPUs, as in Ray.
            Environment.SetEnvironmentVariable("CUDA_VISIBLE_DEVICES", request.GpuIds.Count > 0 ? string.Join(",", request.GpuIds) : null);
            TaskOutputCapture.BeginStreamingTo(running, submitter, request.Name, request.TaskId, options.NodeIpAddress);
            var result = invoker.Invoke(target, args.AsSpan());
            return new PushTaskReply { Result = await TaskResults.SerializeAsync(result, method.ReturnType, request.JobId).ConfigureAwait(false) };
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
