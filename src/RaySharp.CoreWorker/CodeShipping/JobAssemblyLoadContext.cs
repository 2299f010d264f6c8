using System.Reflection;
using System.Runtime.Loader;

namespace RaySharp.CoreWorker.CodeShipping;

/// <summary>
/// A job's application assemblies, isolated from other jobs' in the same worker. Not collectible: serializers
/// generate code for the job's types in non-collectible dynamic assemblies, which may not reference collectible ones. Anything not in the package (the
/// framework, RaySharp itself) resolves from the default context, so RaySharp's types are shared with the runtime.
/// </summary>
internal sealed class JobAssemblyLoadContext(string jobId, IReadOnlyDictionary<string, string> paths, string? entryAssembly)
    : AssemblyLoadContext("job-" + jobId, isCollectible: false)
{
    public string JobId { get; } = jobId;

    public Assembly? EntryAssembly => entryAssembly is null ? null : LoadFromAssemblyName(new AssemblyName(entryAssembly));

    protected override Assembly? Load(AssemblyName assemblyName) =>
        assemblyName.Name is { } name && paths.TryGetValue(name, out var path) ? LoadFromAssemblyPath(path) : null;
}
