using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

namespace RaySharp.CoreWorker;

/// <summary>
/// A worker process's runtime: serves its tasks and actor calls on a port of the worker range (the framed transport,
/// a thread per connection: <see cref="FramedListener"/>), registers with its raylet and stays ready until stopped.
/// One per worker process; it submits nested tasks and actor calls through the same <see cref="CallerWiring"/> as a
/// driver's <see cref="DriverRuntime"/>.
/// </summary>
internal sealed partial class WorkerRuntime : IAsyncDisposable
{
    private readonly CoreWorkerOptions _options;
    private readonly ILogger _logger;
    private readonly RpcChannelPool _channels = new();
    private FramedListener? _rpc;
    private CallerWiring? _callers;

    public WorkerRuntime(CoreWorkerOptions options, ILogger<WorkerRuntime> logger)
    {
        _options = options;
        _logger = logger;
    }

    public int Port => _rpc?.Port ?? 0;

    public async Task StartAsync(ILoggerFactory loggerFactory, CancellationToken cancellationToken)
    {
        Execution.TaskOutputCapture.Install();
        var gcs = new Rpc.Clients.GcsClient(_channels, _options.GcsAddress, Rpc.Clients.GcsClient.ReconnectTimeoutFromEnvironment());
        var rayletClient = new NodeManagerService.NodeManagerServiceClient(_channels.Get(_options.RayletAddress));
        // The same object store, task and actor-call wiring as a driver's, through this worker's raylet.
        var localRaylet = Task.FromResult(_options.RayletAddress);
        _callers = CallerWiring.Create(_channels, gcs, () => localRaylet, loggerFactory);
        Execution.WorkerContext.Current = new Execution.WorkerContext(_options.NodeId, _options.NodeIpAddress, _options.WorkerId, _options.GcsAddress)
        {
            Submitter = _callers.Tasks,
            ActorSubmitter = _callers.Actors,
            RayletAddress = _options.RayletAddress,
            NotifyBlocked = async blocked =>
            {
                try
                {
                    await rayletClient.NotifyWorkerBlockedAsync(new NotifyWorkerBlockedRequest { WorkerId = _options.WorkerId, Blocked = blocked },
                        deadline: DateTime.UtcNow.AddSeconds(5)).ConfigureAwait(false);
                }
                catch (RpcException) { /* not leased (a driver-side test) or the raylet is going away */ }
            },
        };
        var executor = new Execution.TaskExecutor(_options, gcs, loggerFactory.CreateLogger<Execution.TaskExecutor>());
        _rpc = FramedListener.Start("core worker", RpcListenOptions.Range(_options.MinWorkerPort, _options.MaxWorkerPort), new WorkerHandler(_options, executor), loggerFactory);

        var raylet = new NodeManagerService.NodeManagerServiceClient(_channels.Get(_options.RayletAddress));
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_options.RegisterTimeout);
        while (true)
        {
            try
            {
                await raylet.RegisterWorkerAsync(new RegisterWorkerRequest
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

    public async ValueTask DisposeAsync()
    {
        if (_callers is not null) await _callers.DisposeAsync().ConfigureAwait(false);
        if (_rpc is not null) await _rpc.DisposeAsync().ConfigureAwait(false);
        _channels.Dispose();
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
