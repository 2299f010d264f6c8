namespace RaySharp.Gcs.Storage;

/// <summary>
/// Where the GCS keeps its tables: string keys to byte values, grouped in named tables. Everything the GCS must not
/// lose goes through here, so that swapping the in-memory store for Redis makes the GCS restartable.
/// </summary>
internal interface IGcsStore
{
    Task PutAsync(string table, string key, byte[] value);

    /// <summary>Stores the value only when the key is absent; true when it was stored.</summary>
    Task<bool> PutIfAbsentAsync(string table, string key, byte[] value);

    Task<byte[]?> GetAsync(string table, string key);

    Task<bool> DeleteAsync(string table, string key);

    Task<IReadOnlyList<KeyValuePair<string, byte[]>>> GetAllAsync(string table);

    Task<IReadOnlyList<string>> KeysAsync(string table, string prefix);

    /// <summary>Atomically increments a counter and returns its new value (job ids).</summary>
    Task<long> IncrementAsync(string table, string key);
}

/// <summary>Table names, in one place so a persistent store can be inspected by hand.</summary>
internal static class GcsTables
{
    public const string Nodes = "NODE";
    public const string Jobs = "JOB";
    public const string Counters = "COUNTER";
    public const string Actors = "ACTOR";
    /// <summary>Registration of each live actor (its factory and options), to place it again after a GCS restart.</summary>
    public const string ActorSpecs = "ACTOR_SPEC";
    public const string ActorHosts = "ACTOR_HOST";
    public const string Cluster = "CLUSTER";
    public const string PlacementGroups = "PLACEMENT_GROUP";
    public static string Kv(string ns) => "KV:" + ns;
}
