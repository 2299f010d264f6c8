using System.Collections.Concurrent;
using System.Reflection;
using System.Threading.Channels;
using Google.Protobuf;
using RaySharp.CoreWorker.CodeShipping;
using RaySharp.CoreWorker.Serialization;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

namespace RaySharp.CoreWorker.Execution;

/// <summary>
/// One live actor in this worker: its object and how its calls run. Calls start in arrival order (so each caller's calls
/// run in the order it made them). How many run at once depends on the actor: one at a time by default; for a class
/// with async methods up to <c>MaxConcurrency</c> (default 1000) interleaved at their awaits on one serial context, as
/// Ray's async actors run on one event loop; for a class with only synchronous methods and <c>MaxConcurrency</c> &gt; 1,
/// up to that many on threads of its own (Ray's threaded actors). An actor with a worker process of its own runs on
/// threads of its own in every case; lightweight actors share the process's thread pool. Whoever runs a call answers
/// it: the reply goes straight to the caller's connection.
/// </summary>
internal sealed class ActorInstance
{
    /// <summary>Default concurrency of a class with async methods, as Ray's async actors.</summary>
    public const int DefaultAsyncConcurrency = 1000;

    private readonly ConcurrentDictionary<FunctionDescriptor, Method> _methods = new();
    private readonly CoreWorkerOptions _options;
    private readonly Objects.LocalObjectStore _store;
    private readonly JobAssemblyLoadContext _code;
    // Exactly one of these runs the calls: the serial context (async actors), the actor's thread (a dedicated
    // synchronous actor), the actor's threads (threaded actors), or the mailbox drained on the thread pool (lightweight
    // synchronous actors).
    private readonly SerialSynchronizationContext? _context;
    private readonly ExecutionThread? _thread;
    private readonly BlockingCollection<Call>? _threaded;
    private readonly System.Threading.Channels.Channel<Call>? _mailbox;
    // Async actors, touched on the serial context only: calls running, and calls waiting for one of them to end.
    private int _running;
    private readonly Queue<Call> _admitting = new();
    private volatile bool _stopped;

    private sealed class Call(ActorInstance actor, PushTaskRequest request, FramedRequest reply)
    {
        public ActorInstance Actor => actor;
        public PushTaskRequest Request => request;
        public FramedConnection Caller => reply.Connection;
        public void Answer(PushTaskReply outcome) => reply.Reply(MessageBytes.ToBytes(outcome));
    }

    private sealed record Method(MethodInvoker Invoker, object? Target, Type[] ParameterTypes, Type ReturnType, bool Lambda);

    /// <summary>The placement group the actor was created in, null when none; its calls run in it.</summary>
    public string? PlacementGroupId { get; init; }

    /// <summary>What its calls submit with the default strategy goes in <see cref="PlacementGroupId"/> too.</summary>
    public bool CaptureChildTasks { get; init; }

    /// <param name="dedicatedWorker">The worker process is this actor's alone (not a host of lightweight actors).</param>
    public ActorInstance(string actorId, string jobId, string name, object instance, int maxConcurrency, CoreWorkerOptions options, Objects.LocalObjectStore store, JobAssemblyLoadContext code,
        bool dedicatedWorker = false)
    {
        ActorId = actorId;
        JobId = jobId;
        Name = name;
        Instance = instance;
        _options = options;
        _store = store;
        _code = code;
        IsAsync = instance.GetType().GetMethods(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance)
            .Any(m => m.DeclaringType != typeof(object) && TaskResults.IsAsync(m.ReturnType));
        MaxConcurrency = maxConcurrency > 0 ? maxConcurrency : IsAsync ? DefaultAsyncConcurrency : 1;
        if (IsAsync)
        {
            _context = new SerialSynchronizationContext(dedicatedWorker ? new ExecutionThread($"actor {Name}") : null);
        }
        else if (MaxConcurrency == 1 && dedicatedWorker)
        {
            _thread = new ExecutionThread($"actor {Name}");
        }
        else if (MaxConcurrency > 1)
        {
            // Threaded actor: its own threads, as Ray's thread pool per actor. Calls block, so borrowing the shared
            // pool would leave them waiting for the pool to grow.
            _threaded = new BlockingCollection<Call>();
            for (var i = 0; i < MaxConcurrency; i++)
            {
                new Thread(RunThreaded) { IsBackground = true, Name = $"actor {Name} #{i}" }.UnsafeStart();
            }
        }
        else
        {
            _mailbox = System.Threading.Channels.Channel.CreateUnbounded<Call>(new UnboundedChannelOptions { SingleReader = true });
            _ = PumpAsync(_mailbox.Reader);
        }
    }

    public string ActorId { get; }
    public string JobId { get; }
    public string Name { get; }
    public object Instance { get; }
    public bool IsAsync { get; }
    public int MaxConcurrency { get; }

    /// <summary>Starts a call, in arrival order; whoever runs it answers <paramref name="reply"/>.</summary>
    public void Enqueue(PushTaskRequest request, FramedRequest reply)
    {
        var call = new Call(this, request, reply);
        if (_stopped) Missing(call);
        else if (_context is not null) _context.Post(static state => ((Call)state!).Actor.Admit((Call)state!), call);
        else if (_thread is not null) _thread.Post(static state => ((Call)state!).Actor.RunOne((Call)state!), call);
        else if (_threaded is not null) { if (!TryAdd(_threaded, call)) Missing(call); }
        else if (!_mailbox!.Writer.TryWrite(call)) Missing(call);
    }

    private static bool TryAdd(BlockingCollection<Call> calls, Call call)
    {
        try
        {
            return calls.TryAdd(call);
        }
        catch (InvalidOperationException)
        {
            // Stopped meanwhile.
            return false;
        }
    }

    private void Missing(Call call) => call.Answer(new PushTaskReply { ActorMissing = $"actor {ActorId} was killed" });

    /// <summary>The actor was killed: calls not yet started are answered as if it never existed here.</summary>
    public void Stop()
    {
        _stopped = true;
        if (_mailbox is not null)
        {
            _mailbox.Writer.TryComplete();
            while (_mailbox.Reader.TryRead(out var call)) Missing(call);
        }
        if (_threaded is not null)
        {
            _threaded.CompleteAdding();
            while (_threaded.TryTake(out var call)) Missing(call);
        }
        _context?.Post(static state =>
        {
            var actor = (ActorInstance)state!;
            while (actor._admitting.TryDequeue(out var call)) actor.Missing(call);
        }, this);
        // Calls already posted to _thread see _stopped when their turn comes.
    }

    private async Task PumpAsync(ChannelReader<Call> calls)
    {
        while (await calls.WaitToReadAsync().ConfigureAwait(false))
        {
            while (calls.TryRead(out var call)) call.Answer(await ExecuteAsync(call).ConfigureAwait(false));
        }
    }

    private void RunThreaded()
    {
        var calls = _threaded!;
        while (!calls.IsCompleted)
        {
            Common.YieldingSpin.Until(static c => c.Count > 0 || c.IsAddingCompleted, calls);
            Call call;
            try
            {
                call = calls.Take();
            }
            catch (InvalidOperationException)
            {
                return;
            }
            RunSynchronously(call);
        }
    }

    /// <summary>On the actor's own thread.</summary>
    private void RunOne(Call call)
    {
        if (_stopped) Missing(call);
        else RunSynchronously(call);
    }

    // A synchronous actor's call on one of its threads: only an argument still being fetched makes it wait.
    private void RunSynchronously(Call call)
    {
        var running = ExecuteAsync(call);
        call.Answer(running.IsCompletedSuccessfully ? running.Result : running.AsTask().GetAwaiter().GetResult());
    }

    /// <summary>On the serial context: starts the call, or keeps it until a running one ends.</summary>
    private void Admit(Call call)
    {
        if (_stopped)
        {
            Missing(call);
        }
        else if (_running >= MaxConcurrency)
        {
            _admitting.Enqueue(call);
        }
        else
        {
            _running++;
            RunConcurrently(call);
        }
    }

    // Starts and ends on the serial context (its awaits capture it).
    private async void RunConcurrently(Call call)
    {
        try
        {
            call.Answer(await ExecuteAsync(call));
        }
        finally
        {
            _running--;
            // Posted, not run here: calls that end without awaiting would otherwise nest one frame deeper each.
            if (_admitting.TryDequeue(out var next)) _context!.Post(static state => { var (actor, c) = ((ActorInstance, Call))state!; actor.Admit(c); }, (this, next));
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
        var running = new RunningTask(JobId, request.TaskId, ActorId) { PlacementGroupId = PlacementGroupId, CaptureChildTasks = CaptureChildTasks };
        RunningTask.Enter(running);
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
            await _store.ReadArgumentsAsync(method.ParameterTypes, request.Args, args, offset);
            running.ArgumentSource = null;
            TaskOutputCapture.BeginStreamingTo(running, call.Caller, request.Name, request.TaskId, _options.NodeIpAddress);
            var result = method.Invoker.Invoke(method.Lambda ? method.Target : Instance, args.AsSpan());
            return new PushTaskReply { Result = await TaskResults.SerializeAsync(_store, result, method.ReturnType, JobId) };
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
