using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using RaySharp.Common;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

namespace RaySharp.CoreWorker.Submission;

/// <summary>A task died with its worker (the connection broke before the reply).</summary>
internal sealed class WorkerCrashedException(string message, Exception inner) : Exception(message, inner);

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

    /// <summary>How long an idle leased worker is kept for the next task before it is returned. Default 500 ms.</summary>
    public static readonly TimeSpan IdleLeaseTimeout = TimeSpan.FromMilliseconds(500);

    private readonly RpcChannelPool _channels;
    private readonly Func<Task<string>> _localRaylet;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, ShapeQueue> _shapes = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _disposed = new();

    public TaskSubmitter(RpcChannelPool channels, Func<Task<string>> localRaylet, ILogger<TaskSubmitter> logger)
    {
        _channels = channels;
        _localRaylet = localRaylet;
        _logger = logger;
    }

    private sealed class ShapeQueue(Dictionary<string, double> resources, SchedulingStrategy strategy)
    {
        public Dictionary<string, double> Resources { get; } = resources;
        public SchedulingStrategy Strategy { get; } = strategy;
        public Queue<(PushTaskRequest Request, TaskCompletionSource<PushTaskReply> Reply)> Pending { get; } = new();
        /// <summary>Every worker leased for this shape, busy or idle.</summary>
        public List<LeasedWorker> Workers { get; } = [];
        public int Leasing { get; set; }
    }

    private sealed class LeasedWorker(string leaseId, string rayletAddress, WorkerAddress address, FramedConnection connection)
    {
        public string LeaseId { get; } = leaseId;
        public string RayletAddress { get; } = rayletAddress;
        public WorkerAddress Address { get; } = address;
        public FramedConnection Connection { get; } = connection;
        public int InFlight { get; set; }
        public long IdleSince { get; set; }
    }

    public Task<PushTaskReply> SubmitAsync(PushTaskRequest request, Dictionary<string, double> resources, SchedulingStrategy? strategy = null)
    {
        strategy ??= new SchedulingStrategy();
        var key = ResourceSet.Describe(resources) + "|" + strategy;
        var reply = new TaskCompletionSource<PushTaskReply>(TaskCreationOptions.RunContinuationsAsynchronously);
        ShapeQueue shape;
        lock (_gate)
        {
            if (!_shapes.TryGetValue(key, out shape!)) _shapes[key] = shape = new ShapeQueue(resources, strategy);
            shape.Pending.Enqueue((request, reply));
        }
        Pump(shape);
        return reply.Task;
    }

    /// <summary>
    /// Pairs queued tasks with idle workers and asks for more leases while tasks wait. Only when as many lease requests
    /// are out as allowed do tasks queue behind busy workers (pipelining): a short task never waits behind a long one
    /// while another worker could still be had.
    /// </summary>
    private void Pump(ShapeQueue shape)
    {
        var runs = new List<(LeasedWorker, PushTaskRequest, TaskCompletionSource<PushTaskReply>)>();
        int leases;
        lock (_gate)
        {
            foreach (var worker in shape.Workers)
            {
                if (shape.Pending.Count == 0) break;
                if (worker.InFlight > 0) continue;
                worker.InFlight++;
                var (request, reply) = shape.Pending.Dequeue();
                runs.Add((worker, request, reply));
            }
            leases = Math.Max(0, Math.Min(shape.Pending.Count - shape.Leasing, MaxLeaseRequestsInFlight - shape.Leasing));
            shape.Leasing += leases;
            while (shape.Pending.Count > shape.Leasing && shape.Leasing >= MaxLeaseRequestsInFlight && shape.Workers.Count > 0)
            {
                var worker = shape.Workers[0];
                foreach (var w in shape.Workers) if (w.InFlight < worker.InFlight) worker = w;
                if (worker.InFlight >= MaxTasksInFlightPerWorker) break;
                worker.InFlight++;
                var (request, reply) = shape.Pending.Dequeue();
                runs.Add((worker, request, reply));
            }
        }
        foreach (var (worker, request, reply) in runs) _ = RunAsync(shape, worker, request, reply);
        for (var i = 0; i < leases; i++) _ = AcquireLeaseAsync(shape);
    }

    private async Task RunAsync(ShapeQueue shape, LeasedWorker worker, PushTaskRequest request, TaskCompletionSource<PushTaskReply> reply)
    {
        try
        {
            var bytes = await worker.Connection.CallAsync(FramedMethods.PushTask, request.ToByteArray()).ConfigureAwait(false);
            reply.TrySetResult(PushTaskReply.Parser.ParseFrom(bytes));
        }
        catch (Exception e) when (e is IOException or RemoteCallException)
        {
            reply.TrySetException(new WorkerCrashedException(
                $"the worker running task {request.TaskId} (pid {worker.Address.Pid} on {worker.Address.IpAddress}) died or was disconnected: {e.Message}", e));
            bool first;
            lock (_gate) first = shape.Workers.Remove(worker);
            if (first) await ReturnAsync(worker, disconnect: true).ConfigureAwait(false);
            Pump(shape);
            return;
        }
        bool idle;
        lock (_gate)
        {
            idle = --worker.InFlight == 0;
            if (idle) worker.IdleSince = Environment.TickCount64;
        }
        Pump(shape);
        if (idle) _ = ReturnIfStillIdleAsync(shape, worker);
    }

    private async Task ReturnIfStillIdleAsync(ShapeQueue shape, LeasedWorker worker)
    {
        var since = worker.IdleSince;
        try { await Task.Delay(IdleLeaseTimeout, _disposed.Token).ConfigureAwait(false); }
        catch (OperationCanceledException) { return; }
        lock (_gate)
        {
            if (worker.InFlight > 0 || worker.IdleSince != since || !shape.Workers.Remove(worker)) return;
        }
        await ReturnAsync(worker, disconnect: false).ConfigureAwait(false);
    }

    private async Task AcquireLeaseAsync(ShapeQueue shape)
    {
        try
        {
            var raylet = await _localRaylet().ConfigureAwait(false);
            var grantOrReject = false;
            while (true)
            {
                var request = new RequestWorkerLeaseRequest { LeaseRequestId = UniqueId.New(), Strategy = shape.Strategy, GrantOrReject = grantOrReject };
                request.Resources.Add(shape.Resources);
                var client = new NodeManagerService.NodeManagerServiceClient(_channels.Get(raylet));
                var reply = await client.RequestWorkerLeaseAsync(request, cancellationToken: _disposed.Token).ConfigureAwait(false);
                if (reply.WorkerAddress is { } address)
                {
                    FramedConnection connection;
                    try
                    {
                        connection = await FramedClient.ConnectAsync(address.IpAddress, address.Port, cancellationToken: _disposed.Token).ConfigureAwait(false);
                    }
                    catch (Exception e) when (e is System.Net.Sockets.SocketException or IOException or RemoteCallException)
                    {
                        // The worker died between grant and connect: hand the lease back and ask again.
                        await ReturnAsync(new LeasedWorker(reply.LeaseId, raylet, address, null!), disconnect: true, closeConnection: false).ConfigureAwait(false);
                        continue;
                    }
                    var leased = new LeasedWorker(reply.LeaseId, raylet, address, connection);
                    lock (_gate)
                    {
                        shape.Leasing--;
                        shape.Workers.Add(leased);
                    }
                    Pump(shape);
                    bool unused;
                    lock (_gate)
                    {
                        unused = leased.InFlight == 0;
                        if (unused) leased.IdleSince = Environment.TickCount64;
                    }
                    // Granted after the work ran out: hand it back unless a task comes soon.
                    if (unused) _ = ReturnIfStillIdleAsync(shape, leased);
                    return;
                }
                if (reply.Rejected) throw new InvalidOperationException(reply.FailureMessage);
                // Spillback: that raylet should run this shape; it must grant or queue, never spill again.
                raylet = NodeAddress.Format(reply.RetryAtIpAddress, reply.RetryAtPort);
                grantOrReject = true;
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
            }
            var reason = e is RpcException r ? $"{r.StatusCode}: {r.Status.Detail}" : e.Message;
            foreach (var f in failed) f.TrySetException(new InvalidOperationException($"could not lease a worker for {ResourceSet.Describe(shape.Resources)}: {reason}", e));
        }
        catch (Exception) { /* disposing */ }
    }

    private async Task ReturnAsync(LeasedWorker worker, bool disconnect, bool closeConnection = true)
    {
        if (closeConnection) await worker.Connection.DisposeAsync().ConfigureAwait(false);
        try
        {
            var client = new NodeManagerService.NodeManagerServiceClient(_channels.Get(worker.RayletAddress));
            await client.ReturnWorkerAsync(new ReturnWorkerRequest { LeaseId = worker.LeaseId, DisconnectWorker = disconnect },
                deadline: DateTime.UtcNow.AddSeconds(5)).ConfigureAwait(false);
        }
        catch (RpcException) { /* the raylet reclaims leases of a worker that dies; nothing more to do */ }
    }

    public async ValueTask DisposeAsync()
    {
        List<LeasedWorker> idle;
        lock (_gate)
        {
            idle = _shapes.Values.SelectMany(s => s.Workers).ToList();
            foreach (var s in _shapes.Values) s.Workers.Clear();
        }
        await _disposed.CancelAsync().ConfigureAwait(false);
        await Task.WhenAll(idle.Select(w => ReturnAsync(w, disconnect: false))).ConfigureAwait(false);
    }

    [LoggerMessage(EventId = 700, Level = LogLevel.Warning, Message = "Could not lease a worker for {Shape}: {Error}")]
    private static partial void LogLeaseFailed(ILogger logger, string shape, string error);
}
