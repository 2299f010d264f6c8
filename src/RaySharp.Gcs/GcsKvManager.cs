using RaySharp.Gcs.Storage;

namespace RaySharp.Gcs;

/// <summary>
/// The internal key-value store (code packages, named actors, configuration). Byte keys are stored hex-encoded, which
/// keeps byte-prefix queries as string-prefix queries in any backing store.
/// </summary>
internal sealed class GcsKvManager(IGcsStore store)
{
    public Task<byte[]?> GetAsync(string ns, byte[] key) => store.GetAsync(GcsTables.Kv(ns), Convert.ToHexString(key));

    /// <summary>True when the key was added (false when it existed, whether or not it was overwritten).</summary>
    public async Task<bool> PutAsync(string ns, byte[] key, byte[] value, bool overwrite)
    {
        var table = GcsTables.Kv(ns);
        var k = Convert.ToHexString(key);
        if (await store.PutIfAbsentAsync(table, k, value).ConfigureAwait(false)) return true;
        if (overwrite) await store.PutAsync(table, k, value).ConfigureAwait(false);
        return false;
    }

    public async Task<int> DeleteAsync(string ns, byte[] key, bool byPrefix)
    {
        var table = GcsTables.Kv(ns);
        var k = Convert.ToHexString(key);
        if (!byPrefix) return await store.DeleteAsync(table, k).ConfigureAwait(false) ? 1 : 0;
        var deleted = 0;
        foreach (var match in await store.KeysAsync(table, k).ConfigureAwait(false))
        {
            if (await store.DeleteAsync(table, match).ConfigureAwait(false)) deleted++;
        }
        return deleted;
    }

    public async Task<bool> ExistsAsync(string ns, byte[] key) => await GetAsync(ns, key).ConfigureAwait(false) is not null;

    public async Task<IReadOnlyList<byte[]>> KeysAsync(string ns, byte[] prefix) =>
        (await store.KeysAsync(GcsTables.Kv(ns), Convert.ToHexString(prefix)).ConfigureAwait(false)).Select(Convert.FromHexString).ToList();
}
