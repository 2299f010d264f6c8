using Google.Protobuf;
using RaySharp.Gcs.Storage;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs;

/// <summary>The job table: one row per driver that connected to the cluster.</summary>
internal sealed class GcsJobManager(IGcsStore store, GcsPublisher publisher, TimeProvider time)
{
    /// <summary>Raised once per job when it ends (its driver disconnected, or exited without saying so).</summary>
    public event Action<string>? JobFinished;

    /// <summary>Job ids are a cluster-wide counter, printed as 8 hex digits as Ray prints its 4-byte job ids.</summary>
    public async Task<string> NextJobIdAsync()
    {
        var n = await store.IncrementAsync(GcsTables.Counters, "job").ConfigureAwait(false);
        return n.ToString("x8", System.Globalization.CultureInfo.InvariantCulture);
    }

    public async Task AddAsync(JobInfo job)
    {
        var row = job.Clone();
        row.IsDead = false;
        row.StartTimeMs = time.GetUtcNow().ToUnixTimeMilliseconds();
        await store.PutAsync(GcsTables.Jobs, row.JobId, row.ToByteArray()).ConfigureAwait(false);
        publisher.Publish(Channel.Job, m => m.JobInfo = row);
    }

    public async Task<bool> MarkFinishedAsync(string jobId)
    {
        var bytes = await store.GetAsync(GcsTables.Jobs, jobId).ConfigureAwait(false);
        if (bytes is null) return false;
        var row = JobInfo.Parser.ParseFrom(bytes);
        if (row.IsDead) return true;
        row.IsDead = true;
        row.EndTimeMs = time.GetUtcNow().ToUnixTimeMilliseconds();
        await store.PutAsync(GcsTables.Jobs, row.JobId, row.ToByteArray()).ConfigureAwait(false);
        publisher.Publish(Channel.Job, m => m.JobInfo = row);
        JobFinished?.Invoke(jobId);
        return true;
    }

    /// <summary>The job's row; null when there is no such job.</summary>
    public async Task<JobInfo?> GetAsync(string jobId) =>
        await store.GetAsync(GcsTables.Jobs, jobId).ConfigureAwait(false) is { } bytes ? JobInfo.Parser.ParseFrom(bytes) : null;

    /// <summary>Jobs the store says are running (a GCS restart): their drivers are expected to reconnect.</summary>
    public async Task<IReadOnlyList<string>> LoadAliveAsync() =>
        (await GetAllAsync().ConfigureAwait(false)).Where(j => !j.IsDead).Select(j => j.JobId).ToList();

    public async Task<IReadOnlyList<JobInfo>> GetAllAsync() =>
        (await store.GetAllAsync(GcsTables.Jobs).ConfigureAwait(false)).Select(kv => JobInfo.Parser.ParseFrom(kv.Value)).ToList();
}
