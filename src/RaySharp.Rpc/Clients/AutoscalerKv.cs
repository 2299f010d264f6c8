using Google.Protobuf;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Rpc.Clients;

/// <summary>
/// The autoscaler's two rows in the GCS's key-value store (namespace <c>autoscaler</c>), the contract between the
/// processes that touch them: <c>Ray.RequestResources</c> writes the resource request and the monitor reads it each
/// tick (it persists until replaced, as Ray's <c>request_resources</c>); the monitor writes its status text and
/// <c>raysharp status</c> prints it.
/// </summary>
internal static class AutoscalerKv
{
    public const string Namespace = "autoscaler";
    private static readonly ByteString s_requestKey = ByteString.CopyFromUtf8("resource_request");
    private static readonly ByteString s_statusKey = ByteString.CopyFromUtf8("status");
    private static readonly ByteString s_typesKey = ByteString.CopyFromUtf8("node_types");

    public static async Task PutResourceRequestAsync(GcsClient gcs, IEnumerable<IReadOnlyDictionary<string, double>> bundles, CancellationToken cancellationToken)
    {
        var request = new ResourceRequest();
        foreach (var bundle in bundles)
        {
            var b = new ResourceBundle();
            foreach (var (name, amount) in bundle) b.Resources[name] = amount;
            request.Bundles.Add(b);
        }
        await gcs.Kv.KvPutAsync(new KvPutRequest { Namespace = Namespace, Key = s_requestKey, Value = request.ToByteString(), Overwrite = true },
            cancellationToken: cancellationToken).ConfigureAwait(false);
    }

    public static async Task<IReadOnlyList<IReadOnlyDictionary<string, double>>> GetResourceRequestAsync(GcsClient gcs, CancellationToken cancellationToken)
    {
        var reply = await gcs.Kv.KvGetAsync(new KvGetRequest { Namespace = Namespace, Key = s_requestKey }, cancellationToken: cancellationToken).ConfigureAwait(false);
        if (!reply.Found) return [];
        return ResourceRequest.Parser.ParseFrom(reply.Value).Bundles
            .Select(b => (IReadOnlyDictionary<string, double>)new Dictionary<string, double>(b.Resources, StringComparer.Ordinal)).ToList();
    }

    /// <summary>The worker types the autoscaler could launch now, by name; what a driver's infeasible warning checks a shape against.</summary>
    public static Task PutLaunchableTypesAsync(GcsClient gcs, IReadOnlyDictionary<string, IReadOnlyDictionary<string, double>> types, CancellationToken cancellationToken)
    {
        var message = new LaunchableNodeTypes();
        foreach (var (name, resources) in types)
        {
            var bundle = new ResourceBundle();
            foreach (var (k, v) in resources) bundle.Resources[k] = v;
            message.NodeTypes[name] = bundle;
        }
        return gcs.Kv.KvPutAsync(new KvPutRequest { Namespace = Namespace, Key = s_typesKey, Value = message.ToByteString(), Overwrite = true },
            cancellationToken: cancellationToken).ResponseAsync;
    }

    /// <summary>Null when no autoscaler runs in this cluster.</summary>
    public static async Task<IReadOnlyDictionary<string, IReadOnlyDictionary<string, double>>?> GetLaunchableTypesAsync(GcsClient gcs, CancellationToken cancellationToken = default)
    {
        var reply = await gcs.Kv.KvGetAsync(new KvGetRequest { Namespace = Namespace, Key = s_typesKey }, deadline: DateTime.UtcNow.AddSeconds(5), cancellationToken: cancellationToken).ConfigureAwait(false);
        if (!reply.Found) return null;
        return LaunchableNodeTypes.Parser.ParseFrom(reply.Value).NodeTypes
            .ToDictionary(t => t.Key, t => (IReadOnlyDictionary<string, double>)new Dictionary<string, double>(t.Value.Resources, StringComparer.Ordinal), StringComparer.Ordinal);
    }

    public static Task PutStatusAsync(GcsClient gcs, string text, CancellationToken cancellationToken) =>
        gcs.Kv.KvPutAsync(new KvPutRequest { Namespace = Namespace, Key = s_statusKey, Value = ByteString.CopyFromUtf8(text), Overwrite = true },
            cancellationToken: cancellationToken).ResponseAsync;

    /// <summary>The monitor's last status text; null when no autoscaler runs in this cluster.</summary>
    public static async Task<string?> GetStatusAsync(GcsClient gcs, CancellationToken cancellationToken)
    {
        var reply = await gcs.Kv.KvGetAsync(new KvGetRequest { Namespace = Namespace, Key = s_statusKey }, cancellationToken: cancellationToken).ConfigureAwait(false);
        return reply.Found ? reply.Value.ToStringUtf8() : null;
    }
}
