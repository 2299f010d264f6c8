using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using Google.Protobuf;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;

namespace RaySharp.CoreWorker.CodeShipping;

/// <summary>One assembly of a job's code package.</summary>
internal sealed record PackagedAssembly(string Name, string File, string Sha256, long Size);

/// <summary>What a job's workers must load: the driver's application assemblies, by content hash.</summary>
internal sealed record CodeManifest(string JobId, string? EntryAssembly, IReadOnlyList<PackagedAssembly> Assemblies);

/// <summary>
/// Code shipping through the GCS key-value store. Assemblies are stored once per content (SHA-256), so a driver run
/// again, or many drivers of the same application, upload nothing new; each job has a manifest naming its assemblies.
/// Only the application's assemblies travel: the framework is on every node, and RaySharp's own runtime with its
/// dependencies ships with the node host (listed by <c>raysharp-node.deps.json</c>).
/// </summary>
internal static class CodePackage
{
    public const string BlobNamespace = "code_blobs";
    public const string ManifestNamespace = "job_code";

    private static readonly JsonSerializerOptions s_json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>The application assemblies of the program in <paramref name="baseDirectory"/>.</summary>
    public static IReadOnlyList<string> ApplicationAssemblies(string baseDirectory)
    {
        var runtime = RuntimeAssemblyNames(baseDirectory);
        return Directory.EnumerateFiles(baseDirectory, "*.dll")
            .Where(f => !runtime.Contains(Path.GetFileNameWithoutExtension(f)))
            .Order(StringComparer.Ordinal)
            .ToList();
    }

    /// <summary>Assemblies every node already has: the node host and everything its deps.json lists.</summary>
    private static HashSet<string> RuntimeAssemblyNames(string baseDirectory)
    {
        var names = new HashSet<string>(StringComparer.OrdinalIgnoreCase) { "raysharp-node" };
        // The node host runs on the ASP.NET Core shared framework: what it provides (logging and DI abstractions,
        // say, which an application may carry as packages) is on every node already.
        var netCore = Path.GetDirectoryName(typeof(object).Assembly.Location);
        var shared = netCore is null ? null : Directory.GetParent(netCore)?.Parent;
        if (shared is not null && Directory.Exists(Path.Combine(shared.FullName, "Microsoft.AspNetCore.App")))
        {
            foreach (var dll in Directory.EnumerateFiles(Path.Combine(shared.FullName, "Microsoft.AspNetCore.App"), "*.dll", SearchOption.AllDirectories))
                names.Add(Path.GetFileNameWithoutExtension(dll));
        }
        var deps = Path.Combine(baseDirectory, "raysharp-node.deps.json");
        if (!File.Exists(deps)) return names;
        using var doc = JsonDocument.Parse(File.ReadAllText(deps));
        if (!doc.RootElement.TryGetProperty("targets", out var targets)) return names;
        foreach (var target in targets.EnumerateObject())
        {
            foreach (var library in target.Value.EnumerateObject())
            {
                if (!library.Value.TryGetProperty("runtime", out var runtimeFiles)) continue;
                foreach (var file in runtimeFiles.EnumerateObject()) names.Add(Path.GetFileNameWithoutExtension(file.Name));
            }
        }
        return names;
    }

    /// <summary>Uploads what the GCS lacks and writes the job's manifest; returns how many assemblies were new.</summary>
    public static async Task<(CodeManifest Manifest, int Uploaded)> UploadAsync(GcsClient gcs, string jobId, string baseDirectory, string? entryAssembly, CancellationToken cancellationToken = default)
    {
        var assemblies = new List<PackagedAssembly>();
        var uploaded = 0;
        foreach (var path in ApplicationAssemblies(baseDirectory))
        {
            var bytes = await File.ReadAllBytesAsync(path, cancellationToken).ConfigureAwait(false);
            var hash = Convert.ToHexStringLower(SHA256.HashData(bytes));
            var key = ByteString.CopyFromUtf8(hash);
            var exists = await gcs.Kv.KvExistsAsync(new KvExistsRequest { Namespace = BlobNamespace, Key = key }, cancellationToken: cancellationToken).ConfigureAwait(false);
            if (!exists.Exists)
            {
                await gcs.Kv.KvPutAsync(new KvPutRequest { Namespace = BlobNamespace, Key = key, Value = ByteString.CopyFrom(bytes) }, cancellationToken: cancellationToken).ConfigureAwait(false);
                uploaded++;
            }
            assemblies.Add(new PackagedAssembly(Path.GetFileNameWithoutExtension(path), Path.GetFileName(path), hash, bytes.Length));
        }
        var manifest = new CodeManifest(jobId, entryAssembly, assemblies);
        await gcs.Kv.KvPutAsync(new KvPutRequest
        {
            Namespace = ManifestNamespace,
            Key = ByteString.CopyFromUtf8(jobId),
            Value = ByteString.CopyFrom(JsonSerializer.SerializeToUtf8Bytes(manifest, s_json)),
            Overwrite = true,
        }, cancellationToken: cancellationToken).ConfigureAwait(false);
        return (manifest, uploaded);
    }

    public static async Task<CodeManifest?> ReadManifestAsync(GcsClient gcs, string jobId, CancellationToken cancellationToken = default)
    {
        var reply = await gcs.Kv.KvGetAsync(new KvGetRequest { Namespace = ManifestNamespace, Key = ByteString.CopyFromUtf8(jobId) }, cancellationToken: cancellationToken).ConfigureAwait(false);
        return reply.Found ? JsonSerializer.Deserialize<CodeManifest>(reply.Value.Span, s_json) : null;
    }

    /// <summary>Fetches a job's assemblies into <paramref name="cacheDirectory"/> (verified by hash) and loads them into their own context.</summary>
    public static async Task<JobAssemblyLoadContext> LoadAsync(GcsClient gcs, string jobId, string cacheDirectory, CancellationToken cancellationToken = default)
    {
        var manifest = await ReadManifestAsync(gcs, jobId, cancellationToken).ConfigureAwait(false)
            ?? throw new InvalidOperationException($"job {jobId} has no code package in the GCS; its driver did not upload one");
        Directory.CreateDirectory(cacheDirectory);
        var paths = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var assembly in manifest.Assemblies)
        {
            var path = Path.Combine(cacheDirectory, assembly.Sha256 + ".dll");
            if (!File.Exists(path))
            {
                var blob = await gcs.Kv.KvGetAsync(new KvGetRequest { Namespace = BlobNamespace, Key = ByteString.CopyFromUtf8(assembly.Sha256) }, cancellationToken: cancellationToken).ConfigureAwait(false);
                if (!blob.Found) throw new InvalidOperationException($"assembly {assembly.File} ({assembly.Sha256}) of job {jobId} is missing from the GCS");
                var bytes = blob.Value.ToByteArray();
                if (Convert.ToHexStringLower(SHA256.HashData(bytes)) != assembly.Sha256)
                    throw new InvalidDataException($"assembly {assembly.File} of job {jobId} does not match its hash");
                var tmp = path + ".tmp" + Environment.ProcessId;
                await File.WriteAllBytesAsync(tmp, bytes, cancellationToken).ConfigureAwait(false);
                File.Move(tmp, path, overwrite: true);
            }
            paths[assembly.Name] = path;
        }
        return new JobAssemblyLoadContext(jobId, paths, manifest.EntryAssembly);
    }
}
