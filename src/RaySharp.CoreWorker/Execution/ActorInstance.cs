using System.Collections.Concurrent;
using System.Threading.Channels;
using System.Reflection;
using Google.Protobuf;
using RaySharp.CoreWorker.CodeShipping;
using RaySharp.CoreWorker.Serialization;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

namespace RaySharp.CoreWorker.Execution;

/// <summary>
/// One live actor in this worker: its object and its mailbox. Calls start in arrival order (so each caller's calls run
/// in the order it made them). How many run at once depends on the actor: one at a time by default; for a class with
/// async methods up to <c>MaxConcurrency</c> (default 1000) interleaved at their awaits on one serial context, as Ray's
/// async actors run on one event loop; for a class with only synchronous methods and <c>MaxConcurrency</c> &gt; 1, up to
/// that many on threads of its own (Ray's threaded actors).
/// </summary>
internal sealed class ActorInstance
{
    /// <summary>Default concurrency of a class with async methods, as Ray's async actors.</summary>
    public const int DefaultAsyncConcurrency = 1000;

    private readonly System.Threading.Channels.Channel<Call> _mailbox = System.Threading.Channels.Channel.CreateUnbounded<Call>(new UnboundedChannelOptions { SingleReader = true });
    private readonly ConcurrentDictionary<FunctionDescriptor, Method> _methods = new();
    private readonly CoreWorkerOptions _options;
    private readonly JobAssemblyLoadContext _code;
    private readonly SemaphoreSlim? _slots;
    private readonly SerialSynchronizationContext? _context;
    private readonly System.Collections.Concurrent.BlockingCollection<Call>? _threaded;

    private sealed record Call(PushTaskRequest Request, FramedConnection? Caller, TaskCompletionSource<PushTaskReply> Reply);

    private sealed record Method(MethodInvoker Invoker, object? Target, Type[] ParameterTypes, Type ReturnType, bool Lambda);

    public ActorInstance(string actorId, string jobId, string name, object instance, int maxConcurrency, CoreWorkerOptions options, JobAssemblyLoadContext code)
    {
        ActorId = actorId;
        JobId = jobId;
        Name = name;
        Instance = instance;
        _options = options;
        _code = code;
        IsAsync = instance.GetType().GetMethods(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance)
            .Any(m => m.DeclaringType != typeof(object) && TaskResults.IsAsync(m.ReturnType));
        MaxConcurrency = maxConcurrency > 0 ? maxConcurrency : IsAsync ? DefaultAsyncConcurrency : 1;
        if (IsAsync)
        {
            _slots = new SemaphoreSlim(MaxConcurrency);
            _context = new SerialSynchronizationContext();
        }
        else if (MaxConcurrency > 1)
        {
            // Threaded actor: its own threads, as Ray's thread pool per actor. Calls block, so borrowing the shared
            // pool would leave them waiting for the pool to grow.
            _threaded = new System.Collections.Concurrent.BlockingCollection<Call>();
            for (var i = 0; i < MaxConcurrency; i++)
            {
                new Thread(RunThreaded) { IsBackground = true, Name = $"actor {Name} #{i}" }.Start();
            }
        }
        _ = PumpAsync();
    }

    public string ActorId { get; }
    public string JobId { get; }
    public string Name { get; }
    public object Instance { get; }
    public bool IsAsync { get; }
    public int MaxConcurrency { get; }

    public Task<PushTaskReply> Enqueue(PushTaskRequest request, FramedConnection? caller)
    {
        // Completed inline by whoever ran the call: what waits on it only queues the reply frame, so no thread hop is needed.
        var reply = new TaskCompletionSource<PushTaskReply>();
        if (!_mailbox.Writer.TryWrite(new Call(request, caller, reply)))
            reply.TrySetResult(new PushTaskReply { ActorMissing = $"actor {ActorId} was killed" });
        return reply.Task;
    }

    /// <summary>The actor was killed: calls still queued are answered as if it never existed here.</summary>
    public void Stop()
    {
        _mailbox.Writer.TryComplete();
        _threaded?.CompleteAdding();
        while (_mailbox.Reader.TryRead(out var call)) call.Reply.TrySetResult(new PushTaskReply { ActorMissing = $"actor {ActorId} was killed" });
    }

    private async Task PumpAsync()
    {
        var reader = _mailbox.Reader;
        while (await reader.WaitToReadAsync().ConfigureAwait(false))
        {
            while (reader.TryRead(out var call))
            {
                if (_threaded is not null)
                {
                    _threaded.Add(call);
                    continue;
                }
                if (_slots is null)
                {
                    call.Reply.TrySetResult(await ExecuteAsync(call).ConfigureAwait(false));
                    continue;
                }
                await _slots.WaitAsync().ConfigureAwait(false);
                _context!.Post(static state => { var (actor, c) = ((ActorInstance, Call))state!; actor.RunConcurrently(c); }, (this, call));
            }
        }
    }

    private void RunThreaded()
    {
        foreach (var call in _threaded!.GetConsumingEnumerable())
            call.Reply.TrySetResult(ExecuteAsync(call).AsTask().GetAwaiter().GetResult());
    }

    private async void RunConcurrently(Call call)
    {
        try
        {
            call.Reply.TrySetResult(await ExecuteAsync(call));
        }
        finally
        {
            _slots!.Release();
        }
    }

    private readonly ConcurrentDictionary<ulong, Method> _methodsByKey = new();

    /// <summary>The method a call names: by its function key once seen (no descriptor parsed), else by its descriptor.</summary>
    private Method Resolve(PushTaskRequest request)
    {
        if (request.FunctionKey != 0 && _methodsByKey.TryGetValue(request.FunctionKey, out var known)) return known;
        var method = Resolve(FunctionDescriptors.Unpack(request), request.LambdaCall);
        if (request.FunctionKey != 0) _methodsByKey.TryAdd(request.FunctionKey, method);
        return method;
    }

    private Method Resolve(FunctionDescriptor descriptor, bool lambda) => _methods.GetOrAdd(descriptor, d =>
    {
        var (method, invoker, target, parameters) = FunctionDescriptors.Resolve(JobId, d, JobCodeCache.Loader(_code), ofActor: !lambda);
        if (lambda && (parameters.Length == 0 || !parameters[0].IsInstanceOfType(Instance)))
            throw new ArgumentException($"{method.Name} does not take a {Instance.GetType().Name} as its first parameter");
        return new Method(invoker, target, lambda ? parameters[1..] : parameters, method.ReturnType, lambda);
    });

    /// <summary>Runs one call. Its synchronous part runs on the caller's thread: the pump, the serial context, or a pool thread.</summary>
    private async ValueTask<PushTaskReply> ExecuteAsync(Call call)
    {
        var request = call.Request;
        var running = new RunningTask(JobId, request.TaskId, ActorId);
        WorkerContext.Enter(running);
        try
        {
            var method = Resolve(request);
            if (method.ParameterTypes.Length != request.Args.Count)
                throw new ArgumentException($"{request.Name} takes {method.ParameterTypes.Length} arguments, the call carried {request.Args.Count}");
            var offset = method.Lambda ? 1 : 0;
            var args = new object?[method.ParameterTypes.Length + offset];
            if (method.Lambda) args[0] = Instance;
            running.ArgumentSource = call.Caller;
            // No ConfigureAwait(false): an async actor's calls stay on its serial context.
            await Objects.LocalObjectStore.ReadArgumentsAsync(method.ParameterTypes, request.Args, args, offset);
            running.ArgumentSource = null;
            TaskOutputCapture.BeginStreamingTo(running, call.Caller, request.Name, request.TaskId, _options.NodeIpAddress);
            var result = method.Invoker.Invoke(method.Lambda ? method.Target : Instance, args.AsSpan());
            return new PushTaskReply { Result = await TaskResults.SerializeAsync(result, method.ReturnType, JobId) };
        }
        catch (Exception e)
        {
            return TaskResults.Failure(e, _options);
        }
        finally
        {
            TaskOutputCapture.End(running);
        }
    }
}
