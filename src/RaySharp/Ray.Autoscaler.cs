using RaySharp.Rpc.Clients;

namespace RaySharp;

/// <summary>Talking to the cluster's autoscaler.</summary>
public static partial class Ray
{
    /// <summary>
    /// Asks the autoscaler to keep the cluster able to hold, at once, <paramref name="numCpus"/> one-CPU bundles and
    /// every bundle of <paramref name="bundles"/> (Ray's <c>request_resources</c>): it launches nodes until the cluster's
    /// total capacity fits them, and removes none that would be needed, whether or not work runs. The request holds
    /// until the next call replaces it; call with nothing to withdraw it. Without an autoscaler it changes nothing.
    /// </summary>
    /// <exception cref="ArgumentException">A negative count, or a bundle with a negative or non-finite amount.</exception>
    public static void RequestResources(int? numCpus = null, IEnumerable<IReadOnlyDictionary<string, double>>? bundles = null) =>
        RequestResourcesAsync(numCpus, bundles).GetAwaiter().GetResult();

    /// <summary>As <see cref="RequestResources"/>, awaited.</summary>
    public static async Task RequestResourcesAsync(int? numCpus = null, IEnumerable<IReadOnlyDictionary<string, double>>? bundles = null,
        CancellationToken cancellationToken = default)
    {
        if (numCpus is < 0) throw new ArgumentException($"numCpus must be zero or more, got {numCpus}", nameof(numCpus));
        var all = new List<IReadOnlyDictionary<string, double>>();
        for (var i = 0; i < (numCpus ?? 0); i++) all.Add(new Dictionary<string, double> { ["CPU"] = 1 });
        foreach (var bundle in bundles ?? [])
        {
            foreach (var (name, amount) in bundle)
            {
                if (string.IsNullOrWhiteSpace(name) || !double.IsFinite(amount) || amount < 0)
                    throw new ArgumentException($"a bundle asks for {amount} of '{name}': give resource names with amounts of zero or more, for example {{\"CPU\": 2, \"GPU\": 1}}", nameof(bundles));
            }
            all.Add(new Dictionary<string, double>(bundle, StringComparer.Ordinal));
        }
        await AutoscalerKv.PutResourceRequestAsync(Runtime.Gcs, all, cancellationToken).ConfigureAwait(false);
    }
}
