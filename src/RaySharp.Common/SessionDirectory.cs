using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace RaySharp.Common;

/// <summary>
/// One node's session directory: <c>&lt;root&gt;/session_&lt;time&gt;_&lt;pid&gt;/</c> with <c>logs/</c> (one file per process),
/// <c>pids/</c> (every process started, so <c>raysharp stop</c> can find them) and <c>ports/</c> (what each server bound,
/// written once it listens, which doubles as its readiness signal).
/// </summary>
internal sealed class SessionDirectory
{
    public const string RootEnvironmentVariable = "RAYSHARP_TEMP_DIR";
    public const string DefaultRoot = "/tmp/raysharp";
    public const string CurrentClusterFileName = "current_cluster";
    private const string SessionPrefix = "session_";

    public SessionDirectory(string path)
    {
        Path = System.IO.Path.GetFullPath(path);
    }

    public string Path { get; }
    public string Name => System.IO.Path.GetFileName(Path);
    public string LogsDir => System.IO.Path.Combine(Path, "logs");
    public string PidsDir => System.IO.Path.Combine(Path, "pids");
    public string PortsDir => System.IO.Path.Combine(Path, "ports");

    /// <summary>The root for every session of this host: --temp-dir, else RAYSHARP_TEMP_DIR, else /tmp/raysharp.</summary>
    public static string ResolveRoot(string? tempDirOption)
    {
        var root = !string.IsNullOrWhiteSpace(tempDirOption) ? tempDirOption
            : Environment.GetEnvironmentVariable(RootEnvironmentVariable) is { Length: > 0 } env ? env
            : DefaultRoot;
        return System.IO.Path.GetFullPath(root);
    }

    public static SessionDirectory Create(string root, TimeProvider time)
    {
        var now = time.GetLocalNow();
        var name = SessionPrefix + now.ToString("yyyy-MM-dd_HH-mm-ss_ffffff", CultureInfo.InvariantCulture) + "_" + Environment.ProcessId;
        var session = new SessionDirectory(System.IO.Path.Combine(root, name));
        Directory.CreateDirectory(session.LogsDir);
        Directory.CreateDirectory(session.PidsDir);
        Directory.CreateDirectory(session.PortsDir);
        var latest = System.IO.Path.Combine(root, "session_latest");
        try
        {
            if (File.Exists(latest) || Directory.Exists(latest)) File.Delete(latest);
            File.CreateSymbolicLink(latest, session.Path);
        }
        catch (IOException) { /* another start raced us to the link; it is a convenience only */ }
        return session;
    }

    public static IEnumerable<SessionDirectory> EnumerateAll(string root) =>
        Directory.Exists(root)
            ? Directory.EnumerateDirectories(root, SessionPrefix + "*")
                .Where(d => !System.IO.Path.GetFileName(d).Equals("session_latest", StringComparison.Ordinal)
                            && (File.GetAttributes(d) & FileAttributes.ReparsePoint) == 0)
                .Order(StringComparer.Ordinal)
                .Select(d => new SessionDirectory(d))
            : [];

    public string LogFile(string component) => System.IO.Path.Combine(LogsDir, component + ".out");

    public void RecordProcess(ProcessRecord record) =>
        WriteJsonAtomically(System.IO.Path.Combine(PidsDir, record.FileName), record);

    public void ForgetProcess(ProcessRecord record)
    {
        try { File.Delete(System.IO.Path.Combine(PidsDir, record.FileName)); }
        catch (IOException) { }
    }

    public IReadOnlyList<ProcessRecord> RecordedProcesses()
    {
        if (!Directory.Exists(PidsDir)) return [];
        var list = new List<ProcessRecord>();
        foreach (var file in Directory.EnumerateFiles(PidsDir, "*.json"))
        {
            var record = TryReadJson<ProcessRecord>(file);
            if (record is not null) list.Add(record);
        }
        return list;
    }

    public void WritePorts(string component, ComponentPorts ports) =>
        WriteJsonAtomically(System.IO.Path.Combine(PortsDir, component + ".json"), ports);

    public ComponentPorts? ReadPorts(string component) =>
        TryReadJson<ComponentPorts>(System.IO.Path.Combine(PortsDir, component + ".json"));

    /// <summary>Forgets a component's ports (it is being started again and will write them anew).</summary>
    public void ForgetPorts(string component)
    {
        try { File.Delete(System.IO.Path.Combine(PortsDir, component + ".json")); }
        catch (IOException) { }
    }

    /// <summary>
    /// Written by <c>raysharp stop</c> (and a <c>--block</c> start's own stop) before it signals the session's
    /// processes: the cluster is being stopped on purpose, so its GCS deletes the stored state. A GCS stopped by
    /// anything else (a supervisor's SIGTERM, a restart) keeps it for the next one.
    /// </summary>
    public string StopRequestedFile => System.IO.Path.Combine(Path, "stop_requested");

    /// <summary>File naming the Redis that holds the GCS state of this session, when there is one.</summary>
    public string RedisAddressFile => System.IO.Path.Combine(Path, "gcs_redis_address");

    /// <summary>Where <c>status</c>, <c>stop</c> and <c>Ray.Init("auto")</c> look for the local cluster's GCS address.</summary>
    public static string CurrentClusterFile(string root) => System.IO.Path.Combine(root, CurrentClusterFileName);

    public static string? ReadCurrentClusterAddress(string root) => ReadCurrentCluster(root)?.Address;

    /// <summary>
    /// The local cluster's GCS address and the session directory of this machine's node of it (where its token is),
    /// from <c>current_cluster</c>: the address on the first line, the session on the second.
    /// </summary>
    public static (string Address, SessionDirectory? Session)? ReadCurrentCluster(string root)
    {
        string[] lines;
        try
        {
            lines = File.ReadAllLines(CurrentClusterFile(root)).Select(l => l.Trim()).Where(l => l.Length > 0).ToArray();
        }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
        if (lines.Length == 0) return null;
        return (lines[0], lines.Length > 1 && Directory.Exists(lines[1]) ? new SessionDirectory(lines[1]) : null);
    }

    public static void WriteCurrentCluster(string root, string address, SessionDirectory session)
    {
        Directory.CreateDirectory(root);
        var file = CurrentClusterFile(root);
        var tmp = file + ".tmp" + Environment.ProcessId;
        File.WriteAllText(tmp, address + "\n" + session.Path + "\n");
        File.Move(tmp, file, overwrite: true);
    }

    private static readonly JsonSerializerOptions s_json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    private static void WriteJsonAtomically<T>(string file, T value)
    {
        var tmp = file + ".tmp" + Environment.ProcessId;
        File.WriteAllText(tmp, JsonSerializer.Serialize(value, s_json));
        File.Move(tmp, file, overwrite: true);
    }

    private static T? TryReadJson<T>(string file) where T : class
    {
        try
        {
            return JsonSerializer.Deserialize<T>(File.ReadAllText(file), s_json);
        }
        catch (IOException) { return null; }
        catch (JsonException) { return null; }
    }
}

/// <summary>A process this session started, as recorded in <c>pids/</c>.</summary>
internal sealed record ProcessRecord(string Component, int Pid, string? Detail = null)
{
    /// <summary>The order <c>raysharp stop</c> takes: raylets (which stop their workers) first, the GCS last.</summary>
    public int StopOrder => Component switch
    {
        Components.Raylet => 0,
        Components.Worker => 1,
        Components.GcsServer => 3,
        _ => 2,
    };

    public string FileName => Component == Components.Worker ? $"{Component}_{Pid}.json" : $"{Component}.json";
}

/// <summary>What a server bound; written by the server itself once it listens.</summary>
internal sealed record ComponentPorts(int Pid, int Port, string? NodeId = null, string? NodeIpAddress = null, int ObjectManagerPort = 0);

/// <summary>Process names, used for log files, pid records and the node host's sub-commands.</summary>
internal static class Components
{
    public const string GcsServer = "gcs_server";
    public const string Raylet = "raylet";
    public const string Worker = "worker";
    /// <summary>The autoscaler's loop, on a head started with an autoscaling config.</summary>
    public const string Monitor = "monitor";
}
