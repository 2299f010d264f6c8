// Over 400 lines on purpose: every path that takes the submitter's one lock (queueing, leasing, pushing, losing and
// returning workers, shutdown) is in this file, so the lock's invariants can be checked in one read.
using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using RaySharp.Common;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

namespace RaySharp.CoreWorker.Submission;

/// <summary>
/// The owner's side of the hot path: per resource shape, a queue of tasks and a set of leased workers. Leases come
/// from the local raylet (following spillback to the raylet it names); tasks are pushed straight to leased workers
/// over framed connections, one at a time per worker; a worker left idle is returned to its raylet shortly after.
/// </summary>
internal sealed partial class TaskSubmitter : IAsyncDisposable
{
    /// <summary>Most lease requests outstanding per shape, so a burst of tasks does not flood the raylet.</summary>
    public const int MaxLeaseRequestsInFlight = 10;

    /// <summary>
    /// Most tasks pushed ahead to one leased worker (it runs them one at a time): keeps workers busy between round trips
    /// without letting one worker hoard a queue that other leases could share.
    /// </summary>
    public const int MaxTasksInFlightPerWorker = 16;

    /// <summary>
    /// How long an idle leased worker is kept for the next task before it is returned: 20 ms. Long enough that a caller
    /// submitting one task after another keeps its worker; short, because the CPUs it holds are what other callers'
    /// lease requests wait for (at 500 ms, four actors each submitting tasks on 2 CPUs sat idle a quarter of the time;
    /// Ray returns an idle worker at once).
    /// </summary>
    public static readonly TimeSpan IdleLeaseTimeout = TimeSpan.FromMilliseconds(20);

    private readonly RpcChannelPool _channels;
    private readonly Func<Task<string>> _localRaylet;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, ShapeQueue> _shapes = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _disposed = new();

    private readonly Func<Task<IReadOnlyList<NodeInfo>>>? _nodes;
    private readonly Action<string>? _warn;
    private readonly OutputPrinter _printer;
    private readonly NestedOutputRouter _nestedOutput;
    // The node types the cluster's autoscaler could launch (null: it has none), for the infeasible warning.
    private readonly Func<Task<IReadOnlyDictionary<string, IReadOnlyDictionary<string, double>>?>>? _launchableTypes;

    /// <summary>How long a lease request may wait before the submitter checks whether any node could ever grant it. Default 3 s.</summary>
    public static readonly TimeSpan InfeasibleCheckDelay = TimeSpan.FromSeconds(3);

    /// <param name="objects">Serves workers the objects this process passed them by reference inside values.</param>
    /// <param name="nestedOutput">Where output of tasks submitted from inside a task goes: on to that task's own submitter.</param>
    public TaskSubmitter(RpcChannelPool channels, Func<Task<string>> localRaylet, ILogger<TaskSubmitter> logger,
        Objects.ObjectDirectory objects, NestedOutputRouter nestedOutput,
        Func<Task<IReadOnlyList<NodeInfo>>>? nodes = null, Action<string>? warn = null, Action<string, bool>? output = null,
        Func<Task<IReadOnlyDictionary<string, IReadOnlyDictionary<string, double>>?>>? launchableTypes = null)
    {
        _launchableTypes = launchableTypes;
        _nestedOutput = nestedOutput;
        _printer = new OutputPrinter(objects, nestedOutput, output ?? ((_, _) => { }));
        _channels = channels;
        _localRaylet = localRaylet;
        _logger = logger;
        _nodes = nodes;
        _warn = warn;
    }

    /// <summary>What this process serves to workers it calls: their console output, and objects it passed by reference.</summary>
    public IFramedHandler CallerHandler => _printer;

    /// <summary>Tells the user, once per shape, that tasks wait for resources no node of the cluster has (Ray's infeasible warning).</summary>
    private async Task WarnIfInfeasibleAsync(ShapeQueue shape, Task pendingLease)
    {
        if (_nodes is null || _warn is null) return;
        try
        {
            if (await Task.WhenAny(pendingLease, Task.Delay(InfeasibleCheckDelay, _disposed.Token)).ConfigureAwait(false) == pendingLease) return;
            var nodes = await _nodes().ConfigureAwait(false);
            if (nodes.Any(n => ResourceSet.Fits(shape.Resources, n.ResourcesTotal))) return;
            lock (_gate)
            {
                if (shape.WarnedInfeasible) return;
                shape.WarnedInfeasible = true;
            }
            var types = _launchableTypes is null ? null : await _launchableTypes().ConfigureAwait(false);
            if (types is null)
            {
                _warn($"Warning: tasks need {ResourceSet.Describe(shape.Resources)}, which no node of the cluster has " +
                      $"({nodes.Count} alive node(s)). They wait until a node with these resources joins (`raysharp status` lists them as infeasible); " +
                      "start one with `raysharp start --address=<head> --resources=...`, or ask for less.");
            }
            else if (types.FirstOrDefault(t => ResourceSet.Fits(shape.Resources, t.Value)) is { Key: { } type })
            {
                _warn($"Warning: tasks need {ResourceSet.Describe(shape.Resources)}, which no node of the cluster has now ({nodes.Count} alive node(s)); " +
                      $"the autoscaler can launch a node of type '{type}' for them, and they run once it joins (`raysharp status` shows it pending).");
            }
            else
            {
                _warn($"Warning: tasks need {ResourceSet.Describe(shape.Resources)}, which no node of the cluster has, and no node type the autoscaler can launch has either " +
                      $"({(types.Count == 0 ? "none has room left under max_workers" : "types: " + string.Join(", ", types.Select(t => $"{t.Key} {ResourceSet.Describe(t.Value)}")))}). " +
                      "They wait until such a node joins; ask for less, or add a node type with these resources to the cluster YAML.");
            }
        }
        catch (Exception e) when (e is OperationCanceledException or RpcException) { }
    }

    private sealed class ShapeQueue(string key, Dictionary<string, double> resources, SchedulingStrategy strategy)
    {
        public string Key { get; } = key;
        public Dictionary<string, double> Resources { get; } = resources;
        public SchedulingStrategy Strategy { get; } = strategy;
        public Queue<PendingTask> Pending { get; } = new();
        public bool WarnedInfeasible { get; set; }
        /// <summary>Every worker leased for this shape, busy or idle.</summary>
        public List<LeasedWorker> Workers { get; } = [];
        public int Leasing { get; set; }
        /// <summary>The job of the tasks queued here, named in lease requests.</summary>
        public string JobId { get; set; } = "";
    }

    /// <summary>
    /// A task waiting for (or running on) a worker; <see cref="RetriesLeft"/> counts re-runs after worker deaths. While
    /// it runs, it is the connection's sink for its reply.
    /// </summary>
    private sealed class PendingTask(TaskSubmitter submitter, PushTaskRequest request, TaskCompletionSource<PushTaskReply> reply, int retriesLeft,
        Func<TaskError, bool>? retryOn) : IReplySink
    {
        public PushTaskRequest Request { get; } = request;
        public TaskCompletionSource<PushTaskReply> Reply { get; } = reply;
        public int RetriesLeft { get; set; } = retriesLeft;
        public Func<TaskError, bool>? RetryOn { get; } = retryOn;
        public int Attempts { get; set; }
        /// <summary>Where each lost attempt ran ("pid N on ip"), for the error that ends the task; made on the first loss.</summary>
        public List<string>? LostOn { get; set; }
        /// <summary>The attempt in flight: its queue and worker (set before each push).</summary>
        public ShapeQueue? Shape { get; set; }
        public LeasedWorker? Worker { get; set; }

        // Read at once: a task lost and queued again may be given to another worker while the loss is handled.
        public void OnReply(byte[] payload) => submitter.OnReply(Shape!, Worker!, this, payload);

        public void OnFailure(Exception error) => _ = submitter.OnLostAsync(Shape!, Worker!, this, error);
    }

    private sealed class LeasedWorker(string leaseId, string rayletAddress, WorkerAddress address, FramedConnection connection, IReadOnlyList<int>? gpuIds = null)
    {
        public IReadOnlyList<int> GpuIds { get; } = gpuIds ?? [];
        public string LeaseId { get; } = leaseId;
        public string RayletAddress { get; } = rayletAddress;
        public WorkerAddress Address { get; } = address;
        public FramedConnection Connection { get; } = connection;
        public int InFlight { get; set; }
        public long IdleSince { get; set; }
        /// <summary>A timer will look at this worker's idleness (one per worker, not one per task that leaves it idle).</summary>
        public bool ReturnArmed { get; set; }
    }

    /// <summary>The queue a (resources, strategy) pair submits into.</summary>
    public static string QueueKey(IReadOnlyDictionary<string, double> resources, SchedulingStrategy strategy) =>
        $"{ResourceSet.Describe(resources)}|{(int)strategy.Kind}|{strategy.NodeId}|{strategy.Soft}";

    /// <param name="maxRetries">Re-runs allowed when the task's worker dies (and when it throws, if <paramref name="retryOn"/> says so); -1: unlimited.</param>
    /// <param name="retryOn">Which exceptions thrown by the task are retried (RetryExceptions); null: none.</param>
    /// <param name="queueKey">Identifies the (resources, strategy) queue; callers that submit the same shape repeatedly
    /// pass it precomputed (<see cref="QueueKey"/>) to keep it off the per-task path.</param>
    public Task<PushTaskReply> SubmitAsync(PushTaskRequest request, Dictionary<string, double> resources, SchedulingStrategy? strategy = null, int maxRetries = 3, string? queueKey = null,
        Func<TaskError, bool>? retryOn = null)
    {
        strategy ??= new SchedulingStrategy();
        var key = queueKey ?? QueueKey(resources, strategy);
        // Completed on a connection's read loop; its awaiters are internal (ObjectRef hands user code to the thread pool).
        var reply = new TaskCompletionSource<PushTaskReply>();
        ShapeQueue shape;
        lock (_gate)
        {
            if (_disposed.IsCancellationRequested) return Task.FromException<PushTaskReply>(new ShutdownCoreException(request.Name));
            if (!_shapes.TryGetValue(key, out shape!)) _shapes[key] = shape = new ShapeQueue(key, resources, strategy);
            // A worker may run tasks of several jobs in turn: leases are asked for the job of the latest task.
            shape.JobId = request.JobId;
            shape.Pending.Enqueue(new PendingTask(this, request, reply, maxRetries, retryOn));
        }
        Pump(shape);
        _nestedOutput.Track(request.TaskId, reply.Task);
        return reply.Task;
    }

    /// <summary>
    /// Pairs queued tasks with idle workers and asks for more leases while tasks wait. Only when as many lease requests
    /// are out as allowed do tasks queue behind busy workers (pipelining): a short task never waits behind a long one
    /// while another worker could still be had.
    /// </summary>
    private void Pump(ShapeQueue shape)
    {
        var runs = new List<(LeasedWorker, PendingTask)>();
        int leases;
        lock (_gate)
        {
            foreach (var worker in shape.Workers)
            {
                if (shape.Pending.Count == 0) break;
                if (worker.InFlight > 0) continue;
                worker.InFlight++;
                runs.Add((worker, shape.Pending.Dequeue()));
            }
            leases = Math.Max(0, Math.Min(shape.Pending.Count - shape.Leasing, MaxLeaseRequestsInFlight - shape.Leasing));
            shape.Leasing += leases;
            // Pipelining (tasks pushed ahead to busy workers while the lease requests are at their limit) packs the
            // queue onto the first few leased workers: SPREAD tasks wait for leases of their own instead, so 50 of
            // them run on 50 nodes rather than on the 11 whose leases came first.
            while (shape.Strategy.Kind != SchedulingStrategyKind.SchedulingSpread &&
                   shape.Pending.Count > shape.Leasing && shape.Leasing >= MaxLeaseRequestsInFlight && shape.Workers.Count > 0)
            {
                var worker = shape.Workers[0];
                foreach (var w in shape.Workers) if (w.InFlight < worker.InFlight) worker = w;
                if (worker.InFlight >= MaxTasksInFlightPerWorker) break;
                worker.InFlight++;
                runs.Add((worker, shape.Pending.Dequeue()));
            }
        }
        foreach (var (worker, task) in runs) Run(shape, worker, task);
        for (var i = 0; i < leases; i++) _ = AcquireLeaseAsync(shape);
    }

    private static void Run(ShapeQueue shape, LeasedWorker worker, PendingTask task)
    {
        task.Attempts++;
        task.Request.GpuIds.Clear();
        task.Request.GpuIds.Add(worker.GpuIds);
        task.Request.Attempt = task.Attempts;
        task.Shape = shape;
        task.Worker = worker;
        if (!worker.Connection.Call(FramedMethods.PushTask, MessageBytes.ToBytes(task.Request), task))
            ThreadPool.UnsafeQueueUserWorkItem(static t => t.OnFailure(new IOException("the connection is closed")), task, preferLocal: false);
    }

    /// <summary>
    /// On the connection's read loop: what happens here only parses, requeues or completes the task's reply, whose own
    /// awaiters are internal too (user code behind an ObjectRef always continues on the thread pool).
    /// </summary>
    private void OnReply(ShapeQueue shape, LeasedWorker worker, PendingTask task, byte[] payload)
    {
        PushTaskReply reply;
        try
        {
            reply = MessageBytes.Parse(PushTaskReply.Parser, payload);
        }
        catch (InvalidProtocolBufferException e)
        {
            _ = OnLostAsync(shape, worker, task, e);
            return;
        }
        if (reply.Error is { } error && task.RetriesLeft != 0 && task.RetryOn?.Invoke(error) == true)
        {
            // An exception the caller asked to retry (RetryExceptions): run it again, within the same budget.
            if (task.RetriesLeft > 0) task.RetriesLeft--;
            LogExceptionRetry(_logger, task.Request.TaskId, error.ExceptionType, task.Attempts);
            lock (_gate) shape.Pending.Enqueue(task);
        }
        else
        {
            task.Reply.TrySetResult(reply);
        }
        bool arm;
        lock (_gate)
        {
            arm = --worker.InFlight == 0 && BecameIdle(worker);
        }
        Pump(shape);
        if (arm) _ = ReturnWhenIdleAsync(shape, worker);
    }

    /// <summary>The worker's connection broke under the task (or the reply was unreadable): run it again elsewhere, or fail it.</summary>
    private async Task OnLostAsync(ShapeQueue shape, LeasedWorker worker, PendingTask task, Exception e)
    {
        (task.LostOn ??= []).Add($"pid {worker.Address.Pid} on {worker.Address.IpAddress}");
        if (_disposed.IsCancellationRequested)
        {
            // Shutting down closed the connection: nothing will run the task again.
            task.Reply.TrySetException(new ShutdownCoreException(task.Request.Name));
        }
        else if (task.RetriesLeft != 0)
        {
            // The worker died under the task (not the task's own exception): run it again elsewhere.
            if (task.RetriesLeft > 0) task.RetriesLeft--;
            LogRetry(_logger, task.Request.TaskId, worker.Address.Pid, worker.Address.IpAddress, task.Attempts);
            lock (_gate) shape.Pending.Enqueue(task);
        }
        else
        {
            var nodeDied = !await RayletAnswersAsync(worker.RayletAddress).ConfigureAwait(false);
            task.Reply.TrySetException(new WorkerLostCoreException(
                $"task {task.Request.Name} ({task.Request.TaskId}) lost its {(nodeDied ? "node" : "worker process")} on each of its " +
                $"{task.Attempts} attempt(s) ({string.Join(", ", task.LostOn)}; last: {e.Message}) and no retries are left; " +
                "raise TaskOptions.MaxRetries (-1 for no limit) to keep retrying", e, nodeDied, task.Attempts));
        }
        bool first;
        lock (_gate)
        {
            first = shape.Workers.Remove(worker);
            ForgetIfUnused(shape);
        }
        if (first && !_disposed.IsCancellationRequested) await ReturnAsync(worker, disconnect: true).ConfigureAwait(false);
        Pump(shape);
    }

    /// <summary>
    /// Under the lock: a queue with no task, worker or lease request left is dropped, so a program that submits many
    /// shapes in turn (a resource amount per task, a node per task) does not keep one per shape forever. A task still
    /// holding the dropped queue is served by it as before; the next submission of the shape makes a new one.
    /// </summary>
    private void ForgetIfUnused(ShapeQueue shape)
    {
        if (shape.Pending.Count == 0 && shape.Workers.Count == 0 && shape.Leasing == 0
            && _shapes.TryGetValue(shape.Key, out var current) && ReferenceEquals(current, shape))
            _shapes.Remove(shape.Key);
    }



    /// <summary>
    /// Prints the console output workers stream back, each line prefixed as Ray does: <c>(name pid=…, ip=…)</c>. Also
    /// serves the objects this process passed by reference inside task arguments.
    /// </summary>
    private sealed class OutputPrinter(Objects.ObjectDirectory objects, NestedOutputRouter nestedOutput, Action<string, bool> print) : IFramedHandler
    {
        public ValueTask<ReadOnlyMemory<byte>> HandleAsync(int method, byte[] payload, CancellationToken cancellationToken) =>
            method == FramedMethods.GetObject
                ? objects.ServeAsync(payload)
                : throw new NotSupportedException($"a submitter serves no method {method}");

        public void OnNotify(int method, byte[] payload)
        {
            if (method != FramedMethods.TaskOutput) return;
            var output = TaskOutput.Parser.ParseFrom(payload);
            if (nestedOutput.TryForward(output.TaskId, payload)) return;
            var prefix = $"({output.TaskName} pid={output.Pid}, ip={output.NodeIpAddress}) ";
            print(string.Join('\n', output.Text.Split('\n').Select(l => prefix + l)), output.IsStderr);
        }
    }

    /// <summary>Under the lock: notes when the worker went idle; true when the caller must arm its return timer.</summary>
    private static bool BecameIdle(LeasedWorker worker)
    {
        worker.IdleSince = Environment.TickCount64;
        if (worker.ReturnArmed) return false;
        worker.ReturnArmed = true;
        return true;
    }

    /// <summary>Returns the worker once it has stayed idle for <see cref="IdleLeaseTimeout"/>; stops watching while it is busy.</summary>
    private async Task ReturnWhenIdleAsync(ShapeQueue shape, LeasedWorker worker)
    {
        var wait = IdleLeaseTimeout;
        while (true)
        {
            try { await Task.Delay(wait, _disposed.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
            lock (_gate)
            {
                var idleFor = TimeSpan.FromMilliseconds(Environment.TickCount64 - worker.IdleSince);
                if (worker.InFlight == 0 && idleFor < IdleLeaseTimeout)
                {
                    wait = IdleLeaseTimeout - idleFor;
                    continue;
                }
                // Busy again: the next time it goes idle arms a new timer.
                worker.ReturnArmed = false;
                if (worker.InFlight > 0 || !shape.Workers.Remove(worker)) return;
                ForgetIfUnused(shape);
            }
            await ReturnAsync(worker, disconnect: false).ConfigureAwait(false);
            return;
        }
    }

    private async Task AcquireLeaseAsync(ShapeQueue shape)
    {
        try
        {
            var raylet = await _localRaylet().ConfigureAwait(false);
            var grantOrReject = false;
            while (true)
            {
                var (reply, grantedBy) = await RayletLeaseClient.RequestAsync(_channels, raylet, () =>
                {
                    var request = new RequestWorkerLeaseRequest { LeaseRequestId = UniqueId.New(), Strategy = shape.Strategy, JobId = shape.JobId };
                    request.Resources.Add(shape.Resources);
                    return request;
                }, grantOrReject, call => _ = WarnIfInfeasibleAsync(shape, call), _disposed.Token).ConfigureAwait(false);
                raylet = grantedBy;
                grantOrReject = true;
                var address = reply.WorkerAddress;
                FramedConnection connection;
                try
                {
                    connection = await FramedClient.ConnectAsync(address.IpAddress, address.Port, handler: _printer, cancellationToken: _disposed.Token).ConfigureAwait(false);
                }
                catch (Exception e) when (e is System.Net.Sockets.SocketException or IOException or RemoteCallException)
                {
                    // The worker died between grant and connect: hand the lease back and ask again.
                    await RayletLeaseClient.ReturnAsync(_channels, raylet, reply.LeaseId, disconnect: true).ConfigureAwait(false);
                    continue;
                }
                var leased = new LeasedWorker(reply.LeaseId, raylet, address, connection, reply.GpuIds.ToList());
                bool late;
                lock (_gate)
                {
                    shape.Leasing--;
                    // Granted as this process shut down: DisposeAsync has returned the others already.
                    late = _disposed.IsCancellationRequested;
                    if (!late) shape.Workers.Add(leased);
                }
                if (late)
                {
                    await ReturnAsync(leased, disconnect: false).ConfigureAwait(false);
                    return;
                }
                Pump(shape);
                bool arm;
                lock (_gate)
                {
                    arm = leased.InFlight == 0 && BecameIdle(leased);
                }
                // Granted after the work ran out: hand it back unless a task comes soon.
                if (arm) _ = ReturnWhenIdleAsync(shape, leased);
                return;
            }
        }
        catch (Exception e) when (!_disposed.IsCancellationRequested)
        {
            LogLeaseFailed(_logger, ResourceSet.Describe(shape.Resources), e.Message);
            var failed = new List<TaskCompletionSource<PushTaskReply>>();
            lock (_gate)
            {
                shape.Leasing--;
                if (shape.Leasing == 0 && shape.Workers.Count == 0)
                {
                    while (shape.Pending.TryDequeue(out var p)) failed.Add(p.Reply);
                }
                ForgetIfUnused(shape);
            }
            var reason = e is RpcException r ? $"{r.StatusCode}: {r.Status.Detail}" : e.Message;
            foreach (var f in failed) f.TrySetException(new InvalidOperationException($"could not lease a worker for {ResourceSet.Describe(shape.Resources)}: {reason}", e));
        }
        catch (Exception) { /* disposing */ }
    }

    private async Task ReturnAsync(LeasedWorker worker, bool disconnect)
    {
        await worker.Connection.DisposeAsync().ConfigureAwait(false);
        await RayletLeaseClient.ReturnAsync(_channels, worker.RayletAddress, worker.LeaseId, disconnect).ConfigureAwait(false);
    }

    /// <summary>
    /// The GCS declared a node dead: close the connections to the workers leased there, so the tasks running on them
    /// are retried elsewhere now rather than when TCP gives up on a node cut off by a partition.
    /// </summary>
    public void OnNodeDead(string nodeId)
    {
        List<LeasedWorker> doomed;
        lock (_gate) doomed = _shapes.Values.SelectMany(s => s.Workers).Where(w => w.Address.NodeId == nodeId).ToList();
        foreach (var worker in doomed) _ = worker.Connection.DisposeAsync().AsTask();
    }

    /// <summary>Returns every lease; every task not finished yet fails with <see cref="ShutdownCoreException"/> (none is left hanging).</summary>
    public async ValueTask DisposeAsync()
    {
        List<LeasedWorker> workers;
        List<PendingTask> queued;
        // Cancelled before the lock, so that no cancellation callback runs under it: a grant that takes the lock
        // afterwards sees the cancellation and returns its worker, one that took it before is in the list below.
        _disposed.Cancel();
        lock (_gate)
        {
            workers = _shapes.Values.SelectMany(s => s.Workers).ToList();
            queued = _shapes.Values.SelectMany(s => s.Pending).ToList();
            foreach (var s in _shapes.Values)
            {
                s.Workers.Clear();
                s.Pending.Clear();
            }
        }
        foreach (var task in queued) task.Reply.TrySetException(new ShutdownCoreException(task.Request.Name));
        // Tasks running on the workers fail as their connections close (OnLostAsync sees the cancellation).
        await Task.WhenAll(workers.Select(w => ReturnAsync(w, disconnect: w.InFlight > 0))).ConfigureAwait(false);
    }

    /// <summary>Whether the raylet that leased a lost worker still answers: if not, the node died, not just the worker.</summary>
    private async Task<bool> RayletAnswersAsync(string rayletAddress)
    {
        try
        {
            await new NodeManagerService.NodeManagerServiceClient(_channels.Get(rayletAddress))
                .HealthCheckAsync(new HealthCheckRequest(), deadline: DateTime.UtcNow.AddSeconds(2)).ConfigureAwait(false);
            return true;
        }
        catch (RpcException)
        {
            return false;
        }
    }

    [LoggerMessage(EventId = 702, Level = LogLevel.Warning, Message = "Task {TaskId} threw {ExceptionType} on attempt {Attempt}; retrying as RetryExceptions asks")]
    private static partial void LogExceptionRetry(ILogger logger, string taskId, string exceptionType, int attempt);

    [LoggerMessage(EventId = 701, Level = LogLevel.Warning, Message = "Task {TaskId} lost its worker (pid {Pid} on {Ip}) after attempt {Attempt}; retrying")]
    private static partial void LogRetry(ILogger logger, string taskId, int pid, string ip, int attempt);

    [LoggerMessage(EventId = 700, Level = LogLevel.Warning, Message = "Could not lease a worker for {Shape}: {Error}")]
    private static partial void LogLeaseFailed(ILogger logger, string shape, string error);
}
