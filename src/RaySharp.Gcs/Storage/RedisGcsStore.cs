using StackExchange.Redis;

namespace RaySharp.Gcs.Storage;

/// <summary>
/// The fault-tolerant store: every table is one Redis hash, <c>raysharp:&lt;namespace&gt;:&lt;table&gt;</c>, so a GCS
/// started again with the same namespace (the head's session name) finds the cluster as it was left. Several clusters
/// can share one Redis: each keeps to its namespace, and a cluster stopped on purpose deletes its keys.
/// </summary>
internal sealed class RedisGcsStore : IGcsStore, IAsyncDisposable
{
    private readonly ConnectionMultiplexer _redis;
    private readonly IDatabase _db;
    private readonly string _prefix;

    private RedisGcsStore(ConnectionMultiplexer redis, string ns)
    {
        _redis = redis;
        _db = redis.GetDatabase();
        _prefix = $"raysharp:{ns}:";
    }

    /// <summary>Connects, failing within a few seconds with what to check when Redis does not answer.</summary>
    public static async Task<RedisGcsStore> ConnectAsync(string address, string? password, string ns)
    {
        var config = new ConfigurationOptions
        {
            EndPoints = { address },
            Password = string.IsNullOrEmpty(password) ? null : password,
            AbortOnConnectFail = true,
            ConnectTimeout = 5000,
            ConnectRetry = 2,
            ClientName = "raysharp-gcs",
        };
        try
        {
            var redis = await ConnectionMultiplexer.ConnectAsync(config).ConfigureAwait(false);
            // Once connected, a Redis that restarts or blips is reconnected to in the background.
            return new RedisGcsStore(redis, ns);
        }
        catch (RedisConnectionException e)
        {
            var auth = e.FailureType == ConnectionFailureType.AuthenticationFailure || e.Message.Contains("AUTH", StringComparison.OrdinalIgnoreCase)
                ? " Redis refused the password: check --redis-password."
                : " Check that redis-server runs there and accepts connections from this machine (its bind and protected-mode settings), and the --redis-password if it has one.";
            throw new InvalidOperationException($"cannot use Redis at {address} as the control store: {FirstLine(e.Message)}.{auth}", e);
        }
    }

    private static string FirstLine(string text) => text.Split('\n')[0].TrimEnd('.', ' ', '\r');

    private RedisKey Key(string table) => _prefix + table;

    public Task PutAsync(string table, string key, byte[] value) => _db.HashSetAsync(Key(table), key, value);

    public Task<bool> PutIfAbsentAsync(string table, string key, byte[] value) =>
        _db.HashSetAsync(Key(table), key, value, When.NotExists);

    public async Task<byte[]?> GetAsync(string table, string key)
    {
        var value = await _db.HashGetAsync(Key(table), key).ConfigureAwait(false);
        return value.IsNull ? null : (byte[]?)value;
    }

    public Task<bool> DeleteAsync(string table, string key) => _db.HashDeleteAsync(Key(table), key);

    public async Task<IReadOnlyList<KeyValuePair<string, byte[]>>> GetAllAsync(string table)
    {
        var entries = await _db.HashGetAllAsync(Key(table)).ConfigureAwait(false);
        return entries.Select(e => new KeyValuePair<string, byte[]>(e.Name.ToString(), (byte[])e.Value!))
            .OrderBy(e => e.Key, StringComparer.Ordinal).ToList();
    }

    public async Task<IReadOnlyList<string>> KeysAsync(string table, string prefix)
    {
        var keys = await _db.HashKeysAsync(Key(table)).ConfigureAwait(false);
        return keys.Select(k => k.ToString()).Where(k => k.StartsWith(prefix, StringComparison.Ordinal))
            .Order(StringComparer.Ordinal).ToList();
    }

    public Task<long> IncrementAsync(string table, string key) => _db.HashIncrementAsync(Key(table), key);

    /// <summary>Removes every table of this namespace (the cluster was stopped on purpose and will not come back).</summary>
    public async Task DeleteNamespaceAsync()
    {
        foreach (var endpoint in _redis.GetEndPoints())
        {
            var server = _redis.GetServer(endpoint);
            if (server.IsReplica) continue;
            var keys = new List<RedisKey>();
            await foreach (var key in server.KeysAsync(pattern: _prefix + "*").ConfigureAwait(false)) keys.Add(key);
            if (keys.Count > 0) await _db.KeyDeleteAsync(keys.ToArray()).ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync() => await _redis.DisposeAsync().ConfigureAwait(false);
}
