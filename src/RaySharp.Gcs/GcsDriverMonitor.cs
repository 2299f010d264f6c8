using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

namespace RaySharp.Gcs;

/// <summary>
/// Notices drivers that go away: each driver registers over a framed connection it keeps for its whole life, so its
/// exit, even by SIGKILL, closes the connection and ends its job here (and with it the actors the job owns). After a
/// GCS restart the drivers of running jobs register again over a new connection; a job whose driver does not within
/// the reconnect timeout is ended, as its driver is taken to be gone.
/// </summary>
internal sealed partial class GcsDriverMonitor(GcsJobManager jobs, TimeProvider time, ILogger<GcsDriverMonitor> logger) : IFramedHandler, IDisposable
{
    private readonly ConcurrentDictionary<string, byte> _awaited = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _disposed = new();

    public ValueTask<ReadOnlyMemory<byte>> HandleAsync(int method, byte[] payload, CancellationToken cancellationToken)
    {
        if (method != FramedMethods.RegisterDriver) throw new NotSupportedException($"the GCS serves no framed method {method}");
        var request = RegisterDriverRequest.Parser.ParseFrom(payload);
        var connection = FramedConnection.Current ?? throw new InvalidOperationException("no connection");
        if (_awaited.TryRemove(request.JobId, out _)) LogDriverBack(logger, request.JobId);
        _ = connection.Completion.ContinueWith(_ => jobs.MarkFinishedAsync(request.JobId), TaskScheduler.Default);
        return ValueTask.FromResult(ReadOnlyMemory<byte>.Empty);
    }

    /// <summary>Gives the drivers of <paramref name="jobIds"/> <paramref name="timeout"/> to register again.</summary>
    public void AwaitReconnects(IReadOnlyList<string> jobIds, TimeSpan timeout)
    {
        if (jobIds.Count == 0) return;
        foreach (var id in jobIds) _awaited[id] = 0;
        _ = EndUnclaimedAsync(timeout);
    }

    private async Task EndUnclaimedAsync(TimeSpan timeout)
    {
        try { await Task.Delay(timeout, time, _disposed.Token).ConfigureAwait(false); }
        catch (OperationCanceledException) { return; }
        foreach (var id in _awaited.Keys)
        {
            if (!_awaited.TryRemove(id, out _)) continue;
            LogDriverLost(logger, id, timeout.TotalSeconds);
            await jobs.MarkFinishedAsync(id).ConfigureAwait(false);
        }
    }

    public void Dispose() => _disposed.Cancel();

    [LoggerMessage(EventId = 120, Level = LogLevel.Information, Message = "The driver of job {JobId} reconnected")]
    private static partial void LogDriverBack(ILogger logger, string jobId);

    [LoggerMessage(EventId = 121, Level = LogLevel.Warning, Message = "The driver of job {JobId} did not reconnect within {Seconds} s of the GCS restart; ending the job")]
    private static partial void LogDriverLost(ILogger logger, string jobId, double seconds);
}
