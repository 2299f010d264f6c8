using System.Diagnostics;
using Microsoft.Extensions.Logging;
using RaySharp.Common;

namespace RaySharp.Raylet.WorkerPool;

internal enum WorkerState { Starting, Idle, Leased }

/// <summary>A worker process this raylet started.</summary>
internal sealed class WorkerHandle
{
    public required string WorkerId { get; init; }
    private readonly Process _process = null!;

    /// <summary>Disposed once the worker has exited (its pipes and wait handle go with it): read <see cref="Exited"/> first.</summary>
    public required Process Process
    {
        get => _process;
        init
        {
            _process = value;
            Pid = value.Id;
        }
    }

    /// <summary>Kept apart from <see cref="Process"/>, which is disposed when the worker exits.</summary>
    public int Pid { get; private init; }

    /// <summary>Set (under the pool's lock) when the exit was handled and <see cref="Process"/> disposed.</summary>
    public bool Exited { get; set; }

    private readonly HashSet<string> _jobs = new(StringComparer.Ordinal);

    /// <summary>Notes that the worker was leased for a task or actor of <paramref name="jobId"/>.</summary>
    public void ServeJob(string jobId)
    {
        if (jobId.Length == 0) return;
        lock (_jobs) _jobs.Add(jobId);
    }

    /// <summary>False when serving <paramref name="jobId"/> would make the worker hold the code of more than <paramref name="maxJobs"/> jobs.</summary>
    public bool MayServe(string jobId, int maxJobs)
    {
        lock (_jobs) return jobId.Length == 0 || _jobs.Contains(jobId) || _jobs.Count < maxJobs;
    }

    public int JobCount
    {
        get { lock (_jobs) return _jobs.Count; }
    }
    public int Port { get; set; }
    public WorkerState State { get; set; } = WorkerState.Starting;
    public string? LeaseId { get; set; }
    public required DateTimeOffset StartedAt { get; init; }
    public required ProcessRecord Record { get; init; }
}

/// <summary>
/// Starts, tracks and stops this node's worker processes. Workers are supervised children: each one's stdin is a pipe
/// from the raylet, so if the raylet dies, however it dies, its workers see end of file and exit.
/// </summary>
internal sealed partial class WorkerPool : IAsyncDisposable
{
    private readonly RayletOptions _options;
    private readonly SessionDirectory _session;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, WorkerHandle> _workers = new(StringComparer.Ordinal);
    private readonly Queue<WorkerHandle> _idle = new();
    private readonly string _rayletAddress;
    private bool _stopping;

    public WorkerPool(RayletOptions options, SessionDirectory session, string rayletAddress, TimeProvider time, ILogger<WorkerPool> logger)
    {
        _options = options;
        _session = session;
        _rayletAddress = rayletAddress;
        _time = time;
        _logger = logger;
    }

    /// <summary>Raised (outside any lock) when a worker registered and became idle.</summary>
    public event Action? WorkerAvailable;

    /// <summary>Raised (outside any lock) when a worker process exited; carries the handle as it was.</summary>
    public event Action<WorkerHandle, int>? WorkerExited;

    private int MaxStarting => _options.MaxStartingWorkers ?? Math.Max(1, _options.CpuCount);

    public int StartingCount
    {
        get { lock (_gate) return _workers.Values.Count(w => w.State == WorkerState.Starting); }
    }

    public IReadOnlyList<WorkerHandle> Snapshot()
    {
        lock (_gate) return _workers.Values.ToList();
    }

    public void Prestart()
    {
        var n = _options.PrestartWorkers ?? _options.CpuCount;
        for (var i = 0; i < n; i++) StartWorker();
    }

    /// <summary>Starts workers until <paramref name="wanted"/> are idle or starting, within the startup concurrency limit.</summary>
    public void EnsureAvailable(int wanted)
    {
        int toStart;
        lock (_gate)
        {
            var starting = _workers.Values.Count(w => w.State == WorkerState.Starting);
            toStart = Math.Min(wanted - _idle.Count - starting, MaxStarting - starting);
        }
        for (var i = 0; i < toStart; i++) StartWorker();
    }

    public WorkerHandle? StartWorker()
    {
        lock (_gate)
        {
            if (_stopping) return null;
        }
        var workerId = UniqueId.New();
        var logFile = _session.LogFile($"worker-{UniqueId.Short(workerId)}");
        Process process;
        try
        {
            process = NodeProcessLauncher.Start(Components.Worker,
            [
                "--worker-id", workerId,
                "--node-id", _options.NodeId,
                "--raylet-address", _rayletAddress,
                "--gcs-address", _options.GcsAddress,
                "--node-ip-address", _options.NodeIpAddress,
                "--session-dir", _session.Path,
                "--min-worker-port", _options.MinWorkerPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
                "--max-worker-port", _options.MaxWorkerPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ], logFile, supervised: true);
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException or FileNotFoundException)
        {
            LogStartFailed(_logger, e.Message);
            return null;
        }
        var handle = new WorkerHandle
        {
            WorkerId = workerId,
            Process = process,
            StartedAt = _time.GetUtcNow(),
            Record = new ProcessRecord(Components.Worker, process.Id, workerId),
        };
        _session.RecordProcess(handle.Record);
        lock (_gate) _workers[workerId] = handle;
        process.EnableRaisingEvents = true;
        process.Exited += (_, _) => OnExited(handle);
        if (process.HasExited) OnExited(handle);
        LogStarted(_logger, workerId, process.Id);
        _ = KillIfNeverRegisteredAsync(handle);
        return handle;
    }

    /// <summary>A worker announced its port: it is ready for leases. False when the raylet did not start that worker.</summary>
    public bool OnRegistered(string workerId, int pid, int port)
    {
        lock (_gate)
        {
            if (!_workers.TryGetValue(workerId, out var w) || w.Pid != pid || w.State != WorkerState.Starting) return false;
            w.Port = port;
            w.State = WorkerState.Idle;
            _idle.Enqueue(w);
        }
        LogRegistered(_logger, workerId, pid, port);
        WorkerAvailable?.Invoke();
        return true;
    }

    /// <summary>An idle worker for a lease of <paramref name="jobId"/>; idle workers that have served their most jobs are stopped on the way.</summary>
    public WorkerHandle? TryPopIdle(string leaseId, string jobId = "")
    {
        List<WorkerHandle>? retired = null;
        try
        {
            lock (_gate)
            {
                while (_idle.TryDequeue(out var w))
                {
                    if (w.State != WorkerState.Idle || w.Exited || w.Process.HasExited) continue;
                    if (!w.MayServe(jobId, _options.MaxJobsPerWorker))
                    {
                        // Stopped, not kept: it is idle, and another job's code would be one more it holds for good.
                        w.State = WorkerState.Leased;
                        (retired ??= []).Add(w);
                        continue;
                    }
                    w.State = WorkerState.Leased;
                    w.LeaseId = leaseId;
                    return w;
                }
                return null;
            }
        }
        finally
        {
            foreach (var w in retired ?? [])
            {
                LogRetired(_logger, w.WorkerId, w.Pid, w.JobCount);
                Kill(w, Posix.SIGKILL);
            }
        }
    }

    /// <summary>A leased worker came back: reuse it, or stop it when the lessee says it misbehaved.</summary>
    public void Return(WorkerHandle worker, bool disconnect)
    {
        lock (_gate)
        {
            if (!_workers.ContainsKey(worker.WorkerId)) return;
            worker.LeaseId = null;
            if (!disconnect && !_stopping)
            {
                worker.State = WorkerState.Idle;
                _idle.Enqueue(worker);
            }
        }
        if (disconnect) Kill(worker, Posix.SIGKILL);
        else WorkerAvailable?.Invoke();
    }

    private void OnExited(WorkerHandle worker)
    {
        bool known;
        lock (_gate) known = _workers.Remove(worker.WorkerId);
        if (!known) return;
        _session.ForgetProcess(worker.Record);
        int code;
        try { code = worker.Process.ExitCode; } catch (InvalidOperationException) { code = -1; }
        LogExited(_logger, worker.WorkerId, worker.Pid, code, worker.State.ToString());
        WorkerExited?.Invoke(worker, code);
        lock (_gate)
        {
            // Each Process holds the worker's stdin pipe and a wait handle: left to the finalizer, a node whose workers
            // come and go (crashes, jobs reclaimed) piles up descriptors. Stopping disposes the rest itself.
            if (_stopping) return;
            worker.Exited = true;
            worker.Process.Dispose();
        }
    }

    private async Task KillIfNeverRegisteredAsync(WorkerHandle worker)
    {
        try
        {
            await Task.Delay(_options.WorkerRegisterTimeout, _time).ConfigureAwait(false);
        }
        catch (OperationCanceledException) { return; }
        bool stale;
        lock (_gate) stale = worker.State == WorkerState.Starting && _workers.ContainsKey(worker.WorkerId);
        if (stale)
        {
            LogNeverRegistered(_logger, worker.WorkerId, worker.Pid, _options.WorkerRegisterTimeout.TotalSeconds);
            Kill(worker, Posix.SIGKILL);
        }
    }

    private static void Kill(WorkerHandle worker, int signal)
    {
        // Each worker leads its own process group; signal the group so anything it started goes too.
        if (!Posix.KillGroup(worker.Pid, signal)) Posix.Kill(worker.Pid, signal);
    }

    /// <summary>Stops every worker: SIGTERM, then SIGKILL after the grace period.</summary>
    public async ValueTask DisposeAsync()
    {
        List<WorkerHandle> all;
        lock (_gate)
        {
            _stopping = true;
            all = _workers.Values.ToList();
        }
        foreach (var w in all) Kill(w, Posix.SIGTERM);
        var deadline = _time.GetUtcNow() + _options.WorkerKillGracePeriod;
        foreach (var w in all)
        {
            var left = deadline - _time.GetUtcNow();
            if (left > TimeSpan.Zero)
            {
                using var cts = new CancellationTokenSource(left);
                try { await w.Process.WaitForExitAsync(cts.Token).ConfigureAwait(false); }
                catch (OperationCanceledException) { }
            }
            if (!w.Process.HasExited) Kill(w, Posix.SIGKILL);
        }
        foreach (var w in all)
        {
            try { await w.Process.WaitForExitAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(2)).ConfigureAwait(false); }
            catch (TimeoutException) { }
            _session.ForgetProcess(w.Record);
            w.Process.Dispose();
        }
    }

    [LoggerMessage(EventId = 300, Level = LogLevel.Information, Message = "Started worker {WorkerId} (pid {Pid})")]
    private static partial void LogStarted(ILogger logger, string workerId, int pid);

    [LoggerMessage(EventId = 301, Level = LogLevel.Information, Message = "Worker {WorkerId} (pid {Pid}) registered on port {Port}")]
    private static partial void LogRegistered(ILogger logger, string workerId, int pid, int port);

    [LoggerMessage(EventId = 302, Level = LogLevel.Warning, Message = "Worker {WorkerId} (pid {Pid}) exited with code {Code} while {State}")]
    private static partial void LogExited(ILogger logger, string workerId, int pid, int code, string state);

    [LoggerMessage(EventId = 303, Level = LogLevel.Warning, Message = "Worker {WorkerId} (pid {Pid}) did not register within {Seconds} s; killing it")]
    private static partial void LogNeverRegistered(ILogger logger, string workerId, int pid, double seconds);

    [LoggerMessage(EventId = 305, Level = LogLevel.Information, Message = "Worker {WorkerId} (pid {Pid}) has served {Jobs} jobs, the most a worker keeps the code of; stopping it")]
    private static partial void LogRetired(ILogger logger, string workerId, int pid, int jobs);

    [LoggerMessage(EventId = 304, Level = LogLevel.Error, Message = "Could not start a worker process: {Error}")]
    private static partial void LogStartFailed(ILogger logger, string error);
}
