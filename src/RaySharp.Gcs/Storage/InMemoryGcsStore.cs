using System.Collections.Concurrent;

namespace RaySharp.Gcs.Storage;

/// <summary>The default store: the GCS's tables live and die with the GCS process.</summary>
internal sealed class InMemoryGcsStore : IGcsStore
{
    private readonly ConcurrentDictionary<string, SortedDictionary<string, byte[]>> _tables = new(StringComparer.Ordinal);

    private SortedDictionary<string, byte[]> Table(string name) =>
        _tables.GetOrAdd(name, _ => new SortedDictionary<string, byte[]>(StringComparer.Ordinal));

    public Task PutAsync(string table, string key, byte[] value)
    {
        var t = Table(table);
        lock (t) t[key] = value;
        return Task.CompletedTask;
    }

    public Task<bool> PutIfAbsentAsync(string table, string key, byte[] value)
    {
        var t = Table(table);
        lock (t) return Task.FromResult(t.TryAdd(key, value));
    }

    public Task<byte[]?> GetAsync(string table, string key)
    {
        var t = Table(table);
        lock (t) return Task.FromResult(t.TryGetValue(key, out var v) ? v : null);
    }

    public Task<bool> DeleteAsync(string table, string key)
    {
        var t = Table(table);
        lock (t) return Task.FromResult(t.Remove(key));
    }

    public Task<IReadOnlyList<KeyValuePair<string, byte[]>>> GetAllAsync(string table)
    {
        var t = Table(table);
        lock (t) return Task.FromResult<IReadOnlyList<KeyValuePair<string, byte[]>>>(t.ToList());
    }

    public Task<IReadOnlyList<string>> KeysAsync(string table, string prefix)
    {
        var t = Table(table);
        lock (t) return Task.FromResult<IReadOnlyList<string>>(t.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal)).ToList());
    }

    public Task<long> IncrementAsync(string table, string key)
    {
        var t = Table(table);
        lock (t)
        {
            var next = (t.TryGetValue(key, out var v) ? BitConverter.ToInt64(v) : 0) + 1;
            t[key] = BitConverter.GetBytes(next);
            return Task.FromResult(next);
        }
    }
}
