using Microsoft.Extensions.Logging;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

namespace RaySharp.Gcs;

/// <summary>
/// Notices drivers that go away: each driver registers over a framed connection it keeps for its whole life, so its
/// exit, even by SIGKILL, closes the connection. A connection can also drop while its driver lives on (a network
/// blip), and the driver then registers again at once: so a dropped connection ends the job (and with it the actors
/// the job owns) only when no new registration of the job came within the grace period. After a GCS restart the
/// drivers of running jobs register again over a new connection; a job whose driver does not within the reconnect
/// timeout is ended, as its driver is taken to be gone.
/// </summary>
internal sealed partial class GcsDriverMonitor : IFramedHandler, IDisposable
{
    /// <summary>Job ids as <see cref="GcsJobManager.NextJobIdAsync"/> makes them: 8 hex digits.</summary>
    private const int JobIdLength = 8;

    private readonly GcsJobManager _jobs;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly TimeSpan _grace;
    private readonly Lock _gate = new();
    /// <summary>Each running job's latest registration: only the loss of that one's connection counts.</summary>
    private readonly Dictionary<string, Registration> _registered = new(StringComparer.Ordinal);
    private readonly HashSet<string> _awaited = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _disposed = new();

    public GcsDriverMonitor(GcsJobManager jobs, TimeProvider time, ILogger<GcsDriverMonitor> logger, TimeSpan? disconnectGrace = null)
    {
        _jobs = jobs;
        _time = time;
        _logger = logger;
        _grace = disconnectGrace ?? new GcsServerOptions().DriverDisconnectGrace;
        jobs.JobFinished += OnJobFinished;
    }

    private sealed class Registration(FramedConnection connection)
    {
        public FramedConnection Connection { get; } = connection;
        /// <summary>Its connection closed; the job ends unless a newer registration replaces this one in time.</summary>
        public bool Dropped { get; set; }
    }

    public async ValueTask<ReadOnlyMemory<byte>> HandleAsync(int method, byte[] payload, CancellationToken cancellationToken)
    {
        if (method != FramedMethods.RegisterDriver) throw new NotSupportedException($"the GCS serves no framed method {method}");
        var connection = FramedConnection.Current ?? throw new InvalidOperationException("no connection");
        var jobId = RegisterDriverRequest.Parser.ParseFrom(payload).JobId;
        if (jobId.Length != JobIdLength || !jobId.All(char.IsAsciiHexDigit))
            throw new InvalidDataException($"RegisterDriver: the job id must be the {JobIdLength} hex digits GetNextJobId gave, not '{Printable(jobId)}'");
        var job = await _jobs.GetAsync(jobId).ConfigureAwait(false)
                  ?? throw new KeyNotFoundException($"RegisterDriver: there is no job {jobId}; add it with AddJob first");
        if (job.IsDead) throw new InvalidOperationException($"RegisterDriver: job {jobId} has ended; start the driver again for a new job");

        Registration registration;
        bool back, again;
        lock (_gate)
        {
            _registered.TryGetValue(jobId, out var previous);
            // The same connection registering again changes nothing: it is watched already.
            if (previous is not null && previous.Connection == connection) return ReadOnlyMemory<byte>.Empty;
            registration = new Registration(connection);
            _registered[jobId] = registration;
            back = _awaited.Remove(jobId);
            // A driver whose connection dropped may register again before this GCS has read the old connection's
            // end, so a newer registration is what keeps the job, whether or not the old one was seen closed yet.
            again = !back && previous is not null;
        }
        if (back) LogDriverBack(_logger, jobId);
        if (again) LogDriverKept(_logger, jobId);
        _ = WatchAsync(jobId, registration);
        return ReadOnlyMemory<byte>.Empty;
    }

    /// <summary>Once the registration's connection closes, gives the driver the grace period to register again, then ends its job.</summary>
    private async Task WatchAsync(string jobId, Registration registration)
    {
        try
        {
            await registration.Connection.Completion.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            lock (_gate)
            {
                if (!_registered.TryGetValue(jobId, out var current)) return; // the job ended
                if (current != registration)
                {
                    LogReplacedClosed(_logger, jobId);
                    return;
                }
                registration.Dropped = true;
            }
            LogDriverDropped(_logger, jobId, _grace.TotalSeconds);
            if (_grace > TimeSpan.Zero) await Task.Delay(_grace, _time, _disposed.Token).ConfigureAwait(false);
            lock (_gate)
            {
                if (!_registered.TryGetValue(jobId, out var current)) return; // the job ended meanwhile
                if (current != registration) return; // registered again meanwhile (logged then)
                _registered.Remove(jobId);
            }
            LogDriverGone(_logger, jobId, _grace.TotalSeconds);
            await _jobs.MarkFinishedAsync(jobId).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (_disposed.IsCancellationRequested)
        {
            // The GCS is stopping: the job stays as it is, for the next GCS to judge.
        }
        catch (Exception e)
        {
            LogWatchFailed(_logger, jobId, e.Message);
        }
    }

    private void OnJobFinished(string jobId)
    {
        lock (_gate)
        {
            _registered.Remove(jobId);
            _awaited.Remove(jobId);
        }
    }

    /// <summary>Gives the drivers of <paramref name="jobIds"/> <paramref name="timeout"/> to register again.</summary>
    public void AwaitReconnects(IReadOnlyList<string> jobIds, TimeSpan timeout)
    {
        if (jobIds.Count == 0) return;
        lock (_gate) _awaited.UnionWith(jobIds);
        _ = EndUnclaimedAsync(timeout);
    }

    private async Task EndUnclaimedAsync(TimeSpan timeout)
    {
        try
        {
            await Task.Delay(timeout, _time, _disposed.Token).ConfigureAwait(false);
            List<string> unclaimed;
            lock (_gate)
            {
                unclaimed = [.. _awaited];
                _awaited.Clear();
            }
            foreach (var id in unclaimed)
            {
                LogDriverLost(_logger, id, timeout.TotalSeconds);
                await _jobs.MarkFinishedAsync(id).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (_disposed.IsCancellationRequested) { }
        catch (Exception e)
        {
            LogWatchFailed(_logger, "(after the GCS restart)", e.Message);
        }
    }

    private static string Printable(string id) => id.Length <= 64 && id.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_') ? id : $"({id.Length} characters)";

    public void Dispose() => _disposed.Cancel();

    [LoggerMessage(EventId = 120, Level = LogLevel.Information, Message = "The driver of job {JobId} reconnected")]
    private static partial void LogDriverBack(ILogger logger, string jobId);

    [LoggerMessage(EventId = 121, Level = LogLevel.Warning, Message = "The driver of job {JobId} did not reconnect within {Seconds} s of the GCS restart; ending the job")]
    private static partial void LogDriverLost(ILogger logger, string jobId, double seconds);

    [LoggerMessage(EventId = 122, Level = LogLevel.Information, Message = "The connection of the driver of job {JobId} closed; the job ends unless it registers again within {Seconds} s")]
    private static partial void LogDriverDropped(ILogger logger, string jobId, double seconds);

    [LoggerMessage(EventId = 123, Level = LogLevel.Information, Message = "The driver of job {JobId} registered again over a new connection; the job goes on")]
    private static partial void LogDriverKept(ILogger logger, string jobId);

    [LoggerMessage(EventId = 124, Level = LogLevel.Warning, Message = "The driver of job {JobId} did not register again within {Seconds} s of its connection closing; ending the job")]
    private static partial void LogDriverGone(ILogger logger, string jobId, double seconds);

    [LoggerMessage(EventId = 126, Level = LogLevel.Debug, Message = "An earlier connection of the driver of job {JobId} closed; it registered again since, so that one no longer counts")]
    private static partial void LogReplacedClosed(ILogger logger, string jobId);

    [LoggerMessage(EventId = 125, Level = LogLevel.Error, Message = "Watching the driver of job {JobId} failed: {Error}")]
    private static partial void LogWatchFailed(ILogger logger, string jobId, string error);
}
