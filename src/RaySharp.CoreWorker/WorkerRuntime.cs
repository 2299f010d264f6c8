using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;

namespace RaySharp.CoreWorker;

/// <summary>
/// A worker process's runtime: serves the core worker RPCs on a port of the worker range, registers with its raylet and
/// stays ready until told to exit. Task execution joins this runtime with the tasks work.
/// </summary>
internal sealed partial class WorkerRuntime : IAsyncDisposable
{
    private readonly CoreWorkerOptions _options;
    private readonly ILogger _logger;
    private readonly RpcChannelPool _channels = new();
    private readonly TaskCompletionSource<string> _exitRequested = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private RpcServer? _rpc;
    private Submission.TaskSubmitter? _submitter;
    private Submission.ActorTaskSubmitter? _actorSubmitter;

    public WorkerRuntime(CoreWorkerOptions options, ILogger<WorkerRuntime> logger)
    {
        _options = options;
        _logger = logger;
    }

    /// <summary>Completes when the raylet (or anyone allowed to) asked this worker to exit.</summary>
    public Task<string> ExitRequested => _exitRequested.Task;

    public int Port => _rpc?.Port ?? 0;

    public async Task StartAsync(ILoggerFactory loggerFactory, CancellationToken cancellationToken)
    {
        Execution.TaskOutputCapture.Install();
        Objects.LocalObjectStore.Configure(() => Task.FromResult(_options.RayletAddress));
        var gcs = new Rpc.Clients.GcsClient(_channels, _options.GcsAddress, Rpc.Clients.GcsClient.ReconnectTimeoutFromEnvironment());
        var rayletClient = new NodeManagerService.NodeManagerServiceClient(_channels.Get(_options.RayletAddress));
        _submitter = new Submission.TaskSubmitter(_channels, () => Task.FromResult(_options.RayletAddress), loggerFactory.CreateLogger<Submission.TaskSubmitter>(),
            () => gcs.GetAllNodesAsync(aliveOnly: true), message => Console.Error.WriteLine(message),
            (text, isError) => (isError ? Console.Error : Console.Out).WriteLine(text));
        _actorSubmitter = new Submission.ActorTaskSubmitter(gcs, _submitter.CallerHandler, loggerFactory.CreateLogger<Submission.ActorTaskSubmitter>());
        Execution.WorkerContext.Current = new Execution.WorkerContext(_options.NodeId, _options.NodeIpAddress, _options.WorkerId, _options.GcsAddress)
        {
            Submitter = _submitter,
            ActorSubmitter = _actorSubmitter,
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
        _rpc = await RpcServer.StartAsync("core worker", RpcListenOptions.Range(_options.MinWorkerPort, _options.MaxWorkerPort), loggerFactory,
            services =>
            {
                services.AddSingleton(_options);
                services.AddSingleton(this);
            },
            endpoints => endpoints.MapGrpcService<CoreWorkerServiceImpl>(), cancellationToken: cancellationToken, framedHandler: executor).ConfigureAwait(false);

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

    internal void RequestExit(string reason) => _exitRequested.TrySetResult(reason);

    public async ValueTask DisposeAsync()
    {
        if (_actorSubmitter is not null) await _actorSubmitter.DisposeAsync().ConfigureAwait(false);
        if (_submitter is not null) await _submitter.DisposeAsync().ConfigureAwait(false);
        if (_rpc is not null) await _rpc.DisposeAsync().ConfigureAwait(false);
        _channels.Dispose();
    }

    [LoggerMessage(EventId = 600, Level = LogLevel.Information, Message = "Worker {WorkerId} registered with raylet {Raylet}; serving on port {Port}")]
    private static partial void LogRegistered(ILogger logger, string workerId, string raylet, int port);
}

internal sealed class CoreWorkerServiceImpl(CoreWorkerOptions options, WorkerRuntime runtime) : CoreWorkerService.CoreWorkerServiceBase
{
    public override Task<PingReply> Ping(PingRequest request, ServerCallContext context) =>
        Task.FromResult(new PingReply { WorkerId = options.WorkerId, Pid = Environment.ProcessId });

    public override Task<ExitReply> Exit(ExitRequest request, ServerCallContext context)
    {
        runtime.RequestExit(request.Force ? "forced exit requested" : "exit requested");
        return Task.FromResult(new ExitReply { Accepted = true });
    }
}
