using Microsoft.Extensions.Logging;
using RaySharp.Gcs.Storage;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;

namespace RaySharp.Gcs.Actors;

/// <summary>
/// What the actor manager's parts share: the GCS's services, the handler every actor connection gets, and the
/// shutdown token, so that background work stops, and stops reporting failures, once the GCS is going away.
/// </summary>
internal sealed partial class GcsActorRuntime(GcsServerOptions options, IGcsStore store, GcsNodeManager nodes, RpcChannelPool channels,
    TimeProvider time, ILogger logger, Action<Rpc.Protocol.TaskOutput> output)
{
    // Never disposed: placements and monitors still read its token after the GCS stopped.
    private readonly CancellationTokenSource _stopping = new();

    public GcsServerOptions Options { get; } = options;
    public IGcsStore Store { get; } = store;
    public GcsNodeManager Nodes { get; } = nodes;
    public RpcChannelPool Channels { get; } = channels;
    public TimeProvider Time { get; } = time;
    public ILogger Logger { get; } = logger;
    /// <summary>The handler of every connection to an actor's worker or host: it logs their console output.</summary>
    public Action<Rpc.Protocol.TaskOutput> Output { get; } = output;
    public CancellationToken Stopping => _stopping.Token;
    public bool IsStopping => _stopping.IsCancellationRequested;

    public Task StopAsync() => _stopping.CancelAsync();

    /// <summary>Logs the failure of work that nobody awaits, so that no fault goes unseen.</summary>
    public void Observe(Task task, string what)
    {
        if (task.IsCompletedSuccessfully) return;
        task.ContinueWith(static (t, state) =>
        {
            var (self, what) = ((GcsActorRuntime, string))state!;
            if (!self.IsStopping) LogBackgroundFailed(self.Logger, what, t.Exception!.GetBaseException().Message);
        }, (this, what), CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    [LoggerMessage(EventId = 311, Level = LogLevel.Warning, Message = "Background work failed ({What}): {Error}")]
    private static partial void LogBackgroundFailed(ILogger logger, string what, string error);
}
