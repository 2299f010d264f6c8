using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

namespace RaySharp.CoreWorker;

/// <summary>
/// A worker process's runtime: serves its tasks and actor calls on a port of the worker range (the framed transport,
/// a thread per connection: <see cref="FramedListener"/>), registers with its raylet and stays ready until stopped.
/// One per worker process; beside what every core worker holds (<see cref="CoreWorkerRuntime"/>, wired as a driver's
/// <see cref="DriverRuntime"/>, through this worker's raylet) it owns the process's console capture.
/// </summary>
internal sealed partial class WorkerRuntime : CoreWorkerRuntime
{
    private readonly CoreWorkerOptions _options;
    private readonly ILoggerFactory _loggers;
    private readonly ILogger _logger;
    private readonly RpcChannelPool _channels;
    private readonly NodeManagerService.NodeManagerServiceClient _raylet;
    private FramedListener? _rpc;
    private IDisposable? _consoleCapture;
    private Submission.ActorCallerContext? _actorCaller;

    public WorkerRuntime(CoreWorkerOptions options, ILoggerFactory loggers) : this(options, loggers, new RpcChannelPool()) { }

    private WorkerRuntime(CoreWorkerOptions options, ILoggerFactory loggers, RpcChannelPool channels)
        : base(channels, new GcsClient(channels, options.GcsAddress, GcsClient.ReconnectTimeoutFromEnvironment()),
            RayletAddress(options.RayletAddress), options.WorkerId, loggers)
    {
        _options = options;
        _loggers = loggers;
        _logger = loggers.CreateLogger<WorkerRuntime>();
        _channels = channels;
        _raylet = new NodeManagerService.NodeManagerServiceClient(channels.Get(options.RayletAddress));
    }

    private static Func<Task<string>> RayletAddress(string address)
    {
        var known = Task.FromResult(address);
        return () => known;
    }

    public int Port => _rpc?.Port ?? 0;

    /// <summary>The job of the task or actor call running on this flow; null outside one.</summary>
    public override string? JobId => Execution.RunningTask.Current?.JobId;

    public override string NodeIpAddress => _options.NodeIpAddress;

    public override string NodeId => _options.NodeId;

    public override string WorkerId => _options.WorkerId;

    /// <summary>
    /// Who calls actors from the task or actor running on this flow: this worker's actor submitter, for the job of
    /// that task. Reused while the job stays the same.
    /// </summary>
    public override Submission.ActorCallerContext? ActorCaller()
    {
        if (JobId is not { } jobId) return null;
        var known = Volatile.Read(ref _actorCaller);
        if (known?.JobId == jobId) return known;
        var made = new Submission.ActorCallerContext(jobId, Submission.ActorCallerContext.AnonymousNamespace(jobId), Actors, RayletAddress(_options.RayletAddress));
        Volatile.Write(ref _actorCaller, made);
        return made;
    }

    public override Func<bool, Task> NotifyBlocked => NotifyBlockedAsync;

    private async Task NotifyBlockedAsync(bool blocked)
    {
        try
        {
            await _raylet.NotifyWorkerBlockedAsync(new NotifyWorkerBlockedRequest { WorkerId = _options.WorkerId, Blocked = blocked },
                deadline: DateTime.UtcNow.AddSeconds(5)).ConfigureAwait(false);
        }
        catch (RpcException) { /* not leased (a driver-side test) or the raylet is going away */ }
    }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        _consoleCapture = Execution.TaskOutputCapture.Install();
        if (!CoreWorkerProcess.TryInstall(this)) throw new InvalidOperationException("this process already has a core worker runtime");
        var executor = new Execution.TaskExecutor(_options, Gcs, Store, Objects, _loggers.CreateLogger<Execution.TaskExecutor>());
        _rpc = FramedListener.Start("core worker", RpcListenOptions.Range(_options.MinWorkerPort, _options.MaxWorkerPort), new WorkerHandler(_options, executor), _loggers);

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_options.RegisterTimeout);
        while (true)
        {
            try
            {
                await _raylet.RegisterWorkerAsync(new RegisterWorkerRequest
                {
                    WorkerId = _options.WorkerId,
                    Pid = Environment.ProcessId,
                    Port = _rpc.Port,
                }, cancellationToken: timeout.Token).ConfigureAwait(false);
                LogRegistered(_logger, _options.WorkerId, _options.RayletAddress, _rpc.Port);
                return;
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.Unavailable && !timeout.IsCancellationRequested)
            {
                await Task.Delay(200, timeout.Token).ConfigureAwait(false);
            }
        }
    }

    public override async ValueTask DisposeAsync()
    {
        CoreWorkerProcess.Uninstall(this);
        await DisposeCallersAsync().ConfigureAwait(false);
        if (_rpc is not null) await _rpc.DisposeAsync().ConfigureAwait(false);
        _channels.Dispose();
        _consoleCapture?.Dispose();
    }

    [LoggerMessage(EventId = 600, Level = LogLevel.Information, Message = "Worker {WorkerId} registered with raylet {Raylet}; serving on port {Port}")]
    private static partial void LogRegistered(ILogger logger, string workerId, string raylet, int port);
}

/// <summary>What a worker serves on its port (framed only, no gRPC): its tasks and actors, and a ping that names it.</summary>
internal sealed class WorkerHandler(CoreWorkerOptions options, IFramedHandler executor) : IFramedHandler
{
    public ValueTask<ReadOnlyMemory<byte>> HandleAsync(int method, byte[] payload, CancellationToken cancellationToken) =>
        method == FramedMethods.WorkerPing
            ? new(new PingReply { WorkerId = options.WorkerId, Pid = Environment.ProcessId }.ToByteArray())
            : executor.HandleAsync(method, payload, cancellationToken);

    public void OnNotify(int method, byte[] payload) => executor.OnNotify(method, payload);

    public bool TryHandle(int method, byte[] payload, FramedRequest request) => executor.TryHandle(method, payload, request);
}
