using System.Collections.Concurrent;
using System.Reflection;
using RaySharp.CoreWorker.CodeShipping;
using RaySharp.Rpc.Clients;

namespace RaySharp.CoreWorker.Execution;

/// <summary>Each job's code, fetched from the GCS and loaded once per worker, by the first task or actor that needs it.</summary>
internal sealed class JobCodeCache(CoreWorkerOptions options, GcsClient gcs)
{
    private readonly ConcurrentDictionary<string, Lazy<Task<JobAssemblyLoadContext>>> _jobs = new(StringComparer.Ordinal);

    public Task<JobAssemblyLoadContext> GetAsync(string jobId) =>
        _jobs.GetOrAdd(jobId, id => new Lazy<Task<JobAssemblyLoadContext>>(
            () => CodePackage.LoadAsync(gcs, id, Path.Combine(options.SessionDir, "code")))).Value;

    public static Func<string, Assembly> Loader(JobAssemblyLoadContext code) => name => code.LoadFromAssemblyName(new AssemblyName(name));
}
