using System.Collections.Concurrent;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using RaySharp.CoreWorker.Serialization;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

namespace RaySharp.CoreWorker.Execution;

/// <summary>
/// The actors this worker holds: one for a worker dedicated to an actor, many for a host of lightweight actors. The GCS
/// creates (and, for lightweight ones, kills) them; callers then send method calls straight here.
/// </summary>
internal sealed partial class ActorExecutor(CoreWorkerOptions options, JobCodeCache code, Objects.LocalObjectStore store, ILogger logger)
{
    private readonly ConcurrentDictionary<string, ActorInstance> _actors = new(StringComparer.Ordinal);

    public int Count => _actors.Count;

    public async Task<PushTaskReply> CreateAsync(PushTaskRequest request, FramedConnection? creator)
    {
        try
        {
            var job = await code.GetAsync(request.JobId).ConfigureAwait(false);
            var (method, invoker, target, parameters) = FunctionDescriptors.Resolve(request.JobId, FunctionDescriptors.Unpack(request), JobCodeCache.Loader(job));
            var args = new object?[parameters.Length];
            var group = request.PlacementGroupId.Length > 0 ? request.PlacementGroupId : null;
            var running = new RunningTask(request.JobId, null, request.ActorId)
            {
                ArgumentSource = creator, PlacementGroupId = group, CaptureChildTasks = request.CaptureChildTasks,
            };
            RunningTask.Enter(running);
            await store.ReadArgumentsAsync(parameters, request.Args, args).ConfigureAwait(false);
            running.ArgumentSource = null;
            // A dedicated actor keeps its lease's GPUs for life, and one that asked for none sees none (not a value its
            // worker inherited from the raylet's environment); lightweight actors hold none and share their process.
            if (request.DedicatedWorker)
                Environment.SetEnvironmentVariable("CUDA_VISIBLE_DEVICES", request.GpuIds.Count > 0 ? string.Join(",", request.GpuIds) : null);
            var instance = invoker.Invoke(target, args.AsSpan());
            if (instance is Task task)
            {
                await task.ConfigureAwait(false);
                instance = task.GetType().GetProperty("Result")?.GetValue(task);
            }
            if (instance is null) throw new InvalidOperationException($"the factory of actor {request.ClassName} returned null");
            var actor = new ActorInstance(request.ActorId, request.JobId, request.ClassName, instance, request.MaxConcurrency, options, store, job, request.DedicatedWorker)
            {
                PlacementGroupId = group, CaptureChildTasks = request.CaptureChildTasks,
            };
            _actors[request.ActorId] = actor;
            LogCreated(logger, request.ActorId, instance.GetType().FullName ?? request.ClassName, actor.MaxConcurrency);
            return new PushTaskReply { Result = Google.Protobuf.ByteString.Empty };
        }
        catch (Exception e)
        {
            var failure = TaskResults.Failure(e, options);
            LogCreateFailed(logger, request.ActorId, failure.Error.ExceptionType, failure.Error.Message);
            return failure;
        }
    }

    /// <summary>Starts a call on its actor; whoever runs it answers <paramref name="reply"/>.</summary>
    public void Call(PushTaskRequest request, FramedRequest reply)
    {
        if (_actors.TryGetValue(request.ActorId, out var actor)) actor.Enqueue(request, reply);
        else reply.Reply(new PushTaskReply { ActorMissing = $"worker {options.WorkerId} holds no actor {request.ActorId}" }.ToByteArray());
    }

    public void Kill(string actorId)
    {
        if (!_actors.TryRemove(actorId, out var actor)) return;
        actor.Stop();
        LogKilled(logger, actorId);
    }

    [LoggerMessage(EventId = 620, Level = LogLevel.Information, Message = "Actor {ActorId} ({Class}) created; up to {Concurrency} call(s) at once")]
    private static partial void LogCreated(ILogger logger, string actorId, string @class, int concurrency);

    [LoggerMessage(EventId = 621, Level = LogLevel.Information, Message = "Actor {ActorId} constructor failed: {Type}: {Message}")]
    private static partial void LogCreateFailed(ILogger logger, string actorId, string type, string message);

    [LoggerMessage(EventId = 622, Level = LogLevel.Information, Message = "Actor {ActorId} dropped (killed)")]
    private static partial void LogKilled(ILogger logger, string actorId);
}
