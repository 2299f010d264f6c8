using RaySharp.Common;
using Spectre.Console;

namespace RaySharp.Cli.Commands;

/// <summary>
/// <c>raysharp stop</c>: stops every RaySharp process started on this machine under the session root, by the pids
/// recorded in the session directories: raylets first (they stop their workers), then any worker left, the GCS last.
/// SIGTERM, then SIGKILL after the grace period (at once with --force). Shared-memory files of those sessions go too.
/// </summary>
internal static class StopCommand
{
    /// <summary>Prefix of every shared-memory file a node creates: <c>/dev/shm/raysharp_&lt;session name&gt;_…</c>.</summary>
    public const string SharedMemoryPrefix = "raysharp_";
    private const string SharedMemoryDir = "/dev/shm";

    public static async Task<int> RunAsync(string? tempDir, bool force, TimeSpan grace)
    {
        var root = SessionDirectory.ResolveRoot(tempDir);
        var sessions = SessionDirectory.EnumerateAll(root).ToList();
        var stopped = await StopSessionsAsync(sessions, force, grace).ConfigureAwait(false);
        try { File.Delete(SessionDirectory.CurrentClusterFile(root)); } catch (IOException) { }
        if (stopped == 0)
        {
            AnsiConsole.MarkupLineInterpolated($"Did not find any active RaySharp processes under {root}.");
            return 0;
        }
        AnsiConsole.MarkupLineInterpolated($"Stopped all {stopped} RaySharp processes.");
        return 0;
    }

    /// <summary>Stops the sessions' processes; returns how many were running (workers a raylet stopped included).</summary>
    public static async Task<int> StopSessionsAsync(IReadOnlyList<SessionDirectory> sessions, bool force, TimeSpan grace)
    {
        var running = sessions.Sum(s => s.RecordedProcesses().Count(r => ProcessTable.IsOurs(r.Pid, s)));
        foreach (var s in sessions)
        {
            try { File.WriteAllText(s.StopRequestedFile, ""); }
            catch (IOException) { /* a session directory being removed: nothing left there to stop */ }
        }
        // Re-read the records between stages: a raylet removes its workers' records as they exit.
        foreach (var order in new[] { 0, 1, 2, 3 })
        {
            var stage = sessions
                .SelectMany(s => s.RecordedProcesses().Select(r => (Session: s, Record: r)))
                .Where(x => x.Record.StopOrder == order)
                .ToList();
            var live = new List<(SessionDirectory Session, ProcessRecord Record)>();
            foreach (var x in stage)
            {
                if (ProcessTable.IsOurs(x.Record.Pid, x.Session)) live.Add(x);
                else x.Session.ForgetProcess(x.Record);
            }
            foreach (var x in live) Posix.Kill(x.Record.Pid, force ? Posix.SIGKILL : Posix.SIGTERM);
            await WaitForExitAsync(live, grace).ConfigureAwait(false);
            foreach (var x in live.Where(x => ProcessTable.IsOurs(x.Record.Pid, x.Session)))
                Posix.Kill(x.Record.Pid, Posix.SIGKILL);
            await WaitForExitAsync(live, TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            foreach (var x in live) x.Session.ForgetProcess(x.Record);
        }
        foreach (var s in sessions) RemoveSharedMemory(s);
        return running;
    }

    private static async Task WaitForExitAsync(List<(SessionDirectory Session, ProcessRecord Record)> processes, TimeSpan limit)
    {
        var deadline = DateTime.UtcNow + limit;
        while (processes.Any(x => Posix.IsAlive(x.Record.Pid)) && DateTime.UtcNow < deadline)
            await Task.Delay(50).ConfigureAwait(false);
    }

    private static void RemoveSharedMemory(SessionDirectory session)
    {
        // A raylet's object store may live in a --plasma-directory of its own: it recorded where.
        var arenaRecord = Path.Combine(session.Path, "object_store_arena");
        if (File.Exists(arenaRecord))
        {
            try
            {
                var arena = File.ReadAllText(arenaRecord).Trim();
                if (Path.GetFileName(arena).StartsWith(SharedMemoryPrefix, StringComparison.Ordinal)) File.Delete(arena);
                File.Delete(arenaRecord);
            }
            catch (IOException) { }
        }
        if (!Directory.Exists(SharedMemoryDir)) return;
        foreach (var path in Directory.EnumerateFileSystemEntries(SharedMemoryDir, SharedMemoryPrefix + session.Name + "*"))
        {
            try
            {
                if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
                else File.Delete(path);
            }
            catch (IOException) { }
        }
    }
}
