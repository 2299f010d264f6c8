using System.Collections.Concurrent;
using System.Reflection;
using RaySharp.CoreWorker.CodeShipping;
using RaySharp.Rpc.Clients;

namespace RaySharp.CoreWorker.Execution;

/// <summary>Each job's code, fetched from the GCS and loaded once per worker, by the first task or actor that needs it.</summary>
internal sealed class JobCodeCache(CoreWorkerOptions options, GcsClient gcs)
{
    private readonly ConcurrentDictionary<string, Lazy<Task<JobAssemblyLoadContext>>> _jobs = new(StringComparer.Ordinal);

    public Task<JobAssemblyLoadContext> GetAsync(string jobId)
    {
        var entry = _jobs.GetOrAdd(jobId, id => new Lazy<Task<JobAssemblyLoadContext>>(() => LoadAsync(id)));
        return entry.Value;
    }

    /// <summary>
    /// A load that failed (the GCS away for a moment, a download cut short) is forgotten, so the job's next task tries
    /// again instead of failing forever on this worker.
    /// </summary>
    private async Task<JobAssemblyLoadContext> LoadAsync(string jobId)
    {
        try
        {
            return await CodePackage.LoadAsync(gcs, jobId, Path.Combine(options.SessionDir, "code")).ConfigureAwait(false);
        }
        catch
        {
            _jobs.TryRemove(jobId, out _);
            throw;
        }
    }

    public static Func<string, Assembly> Loader(JobAssemblyLoadContext code) => name => code.LoadFromAssemblyName(new AssemblyName(name));
}
