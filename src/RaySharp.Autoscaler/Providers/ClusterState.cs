using System.Text.Json;
using System.Text.Json.Serialization;
using RaySharp.Common;

namespace RaySharp.Autoscaler.Providers;

/// <summary>
/// What the machine running <c>raysharp up</c> keeps of one cluster, in <c>&lt;RAYSHARP_TEMP_DIR&gt;/launcher/&lt;cluster&gt;/</c>:
/// the nodes in use with their tags (state.json), the cluster token (readable by its owner alone), the hosts' keys as
/// first seen, and one log per node. The head gets a copy of state.json, so the autoscaler there knows the nodes too.
/// </summary>
internal sealed class ClusterState
{
    private static readonly JsonSerializerOptions s_json = new() { WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };

    /// <param name="stateFile">The node records' file, when not the folder's state.json: the autoscaler on a head that is
    /// a machine of its own keeps them in the copy <c>up</c> sends there, so the next <c>up</c> or <c>down</c> reads back
    /// what it launched and terminated.</param>
    public ClusterState(string clusterName, string? tempDir = null, string? stateFile = null)
    {
        ClusterName = clusterName;
        Dir = Path.Combine(SessionDirectory.ResolveRoot(tempDir), "launcher", clusterName);
        StateFile = stateFile ?? Path.Combine(Dir, "state.json");
    }

    public string ClusterName { get; }
    public string Dir { get; }
    public string StateFile { get; }
    public string KnownHostsFile => Path.Combine(Dir, "known_hosts");
    public string TokenFile => Path.Combine(Dir, ClusterToken.FileName);
    public string LogsDir => Path.Combine(Dir, "logs");
    public string LogFile(string nodeName) => Path.Combine(LogsDir, nodeName + ".log");

    public bool Exists => File.Exists(StateFile);

    /// <summary>
    /// Makes the cluster's folder, readable by its owner alone: it holds the token, and the nodes' logs hold what their
    /// start commands printed (the head prints how to join it, token included).
    /// </summary>
    public void EnsureDir()
    {
        if (OperatingSystem.IsWindows()) Directory.CreateDirectory(Dir);
        else Directory.CreateDirectory(Dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
    }

    /// <summary>The cluster's token: made on the first <c>up</c>, the same on every later one (the nodes already run with it).</summary>
    public string Token()
    {
        EnsureDir();
        using var _ = Lock();
        if (File.Exists(TokenFile)) return ClusterToken.ReadFile(TokenFile);
        var token = ClusterToken.Generate();
        Posix.WritePrivateFile(TokenFile, token + "\n");
        return token;
    }

    /// <summary>Reads, changes and writes the node records under an exclusive lock (an <c>up</c> and a <c>down</c> may run at once).</summary>
    public T Update<T>(Func<List<NodeRecord>, T> change)
    {
        EnsureDir();
        using var _ = Lock();
        var nodes = ReadUnlocked();
        var result = change(nodes);
        var temp = StateFile + ".tmp";
        File.WriteAllText(temp, JsonSerializer.Serialize(new StateDocument { Nodes = nodes }, s_json));
        File.Move(temp, StateFile, overwrite: true);
        return result;
    }

    /// <summary>
    /// Takes the worker records of <paramref name="workers"/> (the head's autoscaler's copy) in place of this state's,
    /// keeping this state's head: while the head runs, its autoscaler is the one that launches and terminates workers.
    /// </summary>
    public void AdoptWorkers(IReadOnlyList<NodeRecord> workers) => Update(nodes =>
    {
        nodes.RemoveAll(n => !n.IsHead);
        nodes.AddRange(workers.Where(w => !w.IsHead));
        return 0;
    });

    /// <summary>Node records from a state file written elsewhere (the head's copy, fetched); empty if it holds none.</summary>
    public static List<NodeRecord> Parse(string json)
    {
        try
        {
            return Deserialize(json);
        }
        catch (JsonException)
        {
            return [];
        }
    }

    public List<NodeRecord> Read()
    {
        if (!Exists) return [];
        using var _ = Lock();
        return ReadUnlocked();
    }

    private List<NodeRecord> ReadUnlocked()
    {
        if (!File.Exists(StateFile)) return [];
        try
        {
            return Deserialize(File.ReadAllText(StateFile));
        }
        catch (JsonException e)
        {
            throw new InvalidOperationException($"the launcher's state file {StateFile} is damaged ({e.Message}); delete it once every node of the cluster is stopped");
        }
    }

    private static List<NodeRecord> Deserialize(string json) => JsonSerializer.Deserialize<StateDocument>(json, s_json)?.Nodes ?? [];

    private FileStream Lock()
    {
        // The folder may be new while the node records are not (the head's copy, kept in its home folder).
        EnsureDir();
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (true)
        {
            try
            {
                return new FileStream(Path.Combine(Dir, "state.lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (DateTime.UtcNow < deadline)
            {
                Thread.Sleep(50);
            }
        }
    }

    private sealed class StateDocument
    {
        public List<NodeRecord> Nodes { get; set; } = [];
    }
}

/// <summary>One node the cluster holds or held.</summary>
internal sealed class NodeRecord
{
    public required string Id { get; set; }
    public required string Ip { get; set; }
    public bool Terminated { get; set; }
    public Dictionary<string, string> Tags { get; set; } = new(StringComparer.Ordinal);
    /// <summary><c>process</c> nodes: the node's network namespace, when it has one.</summary>
    public string? Namespace { get; set; }
    /// <summary><c>process</c> nodes: the node's RAYSHARP_TEMP_DIR.</summary>
    public string? TempDir { get; set; }

    [JsonIgnore]
    public bool IsHead => Tags.TryGetValue(NodeTags.Kind, out var kind) && kind == NodeTags.KindHead;

    public ProviderNode ToNode() => new(Id, Ip, new Dictionary<string, string>(Tags, StringComparer.Ordinal));
}
