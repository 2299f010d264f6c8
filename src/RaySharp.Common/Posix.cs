using System.Runtime.InteropServices;

namespace RaySharp.Common;

/// <summary>The few libc calls process supervision needs and .NET does not expose.</summary>
internal static partial class Posix
{
    public const int SIGKILL = 9;
    public const int SIGTERM = 15;

    /// <summary>
    /// Writes a file that only its owner may read (a token, a private key): mode 0600 from the moment it exists, never
    /// wider even briefly, and replaced whole (written aside, then renamed).
    /// </summary>
    public static void WritePrivateFile(string file, string contents)
    {
        if (OperatingSystem.IsWindows()) throw new PlatformNotSupportedException("RaySharp nodes run on Linux");
        var tmp = file + ".tmp" + Environment.ProcessId;
        File.Delete(tmp);
        using (var stream = new FileStream(tmp, new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.Write,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        }))
        {
            stream.Write(System.Text.Encoding.UTF8.GetBytes(contents));
        }
        File.Move(tmp, file, overwrite: true);
    }

    private const int ESRCH = 3;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int KillNative(int pid, int sig);

    [LibraryImport("libc", EntryPoint = "setsid", SetLastError = true)]
    private static partial int SetSidNative();

    [LibraryImport("libc", EntryPoint = "dup2", SetLastError = true)]
    private static partial int Dup2Native(int oldFd, int newFd);

    [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    private static partial int FcntlNative(int fd, int cmd, int arg);

    private const int F_GETFD = 1;
    private const int F_SETFD = 2;
    private const int FD_CLOEXEC = 1;

    [LibraryImport("libc", EntryPoint = "getpgid", SetLastError = true)]
    private static partial int GetPgidNative(int pid);

    /// <summary>Sends a signal; false when the process no longer exists.</summary>
    public static bool Kill(int pid, int signal)
    {
        if (pid <= 0) throw new ArgumentOutOfRangeException(nameof(pid), "refusing to signal a process group or every process");
        return KillNative(pid, signal) == 0;
    }

    /// <summary>Signals a whole process group (the group whose leader is <paramref name="pgid"/>).</summary>
    public static bool KillGroup(int pgid, int signal)
    {
        if (pgid <= 1) throw new ArgumentOutOfRangeException(nameof(pgid));
        return KillNative(-pgid, signal) == 0;
    }

    public static bool IsAlive(int pid)
    {
        if (pid <= 0) return false;
        if (KillNative(pid, 0) == 0)
        {
            // A zombie still answers kill(0); treat it as gone.
            try
            {
                var stat = File.ReadAllText($"/proc/{pid}/stat");
                var close = stat.LastIndexOf(')');
                return !(close > 0 && close + 2 < stat.Length && stat[close + 2] == 'Z');
            }
            catch (IOException) { return false; }
        }
        return Marshal.GetLastPInvokeError() != ESRCH;
    }

    /// <summary>Makes the calling process the leader of a new session and process group, detached from any terminal.</summary>
    public static void DetachIntoNewSession() => SetSidNative();

    public static int GetProcessGroup(int pid) => GetPgidNative(pid);

    /// <summary>
    /// Points the process's own stdout and stderr at <paramref name="path"/>, so native crash output lands in the log
    /// too. The runtime keeps private duplicates of the original stdio made before Main; those are pointed at the log as
    /// well, so a detached process holds nothing of its launcher's terminal or pipes.
    /// </summary>
    public static void RedirectStdoutAndStderr(string path)
    {
        var stream = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete);
        var fd = (int)stream.SafeFileHandle.DangerousGetHandle();
        var originals = new[] { FdTarget(1), FdTarget(2) };
        Dup2Native(fd, 1);
        Dup2Native(fd, 2);
        ReplaceDuplicatesOf(originals, fd);
        // Deliberately never disposed: fds 1 and 2 now share its file description for the life of the process.
        s_logStream = stream;
    }

    /// <summary>Replaces stdin with /dev/null so a detached process holds no terminal or pipe of its launcher.</summary>
    public static void DetachStdin()
    {
        var devNull = new FileStream("/dev/null", FileMode.Open, FileAccess.Read);
        var fd = (int)devNull.SafeFileHandle.DangerousGetHandle();
        var original = FdTarget(0);
        Dup2Native(fd, 0);
        ReplaceDuplicatesOf([original], fd);
        s_devNull = devNull;
    }

    private static string? FdTarget(int fd)
    {
        try { return new FileInfo($"/proc/self/fd/{fd}").LinkTarget; }
        catch (IOException) { return null; }
    }

    private static void ReplaceDuplicatesOf(string?[] targets, int replacement)
    {
        var wanted = targets.Where(t => t is not null && (t.StartsWith("pipe:", StringComparison.Ordinal) || t.StartsWith("/dev/pts", StringComparison.Ordinal) || t.StartsWith("/dev/tty", StringComparison.Ordinal))).ToHashSet();
        if (wanted.Count == 0) return;
        foreach (var entry in Directory.GetFileSystemEntries("/proc/self/fd"))
        {
            if (!int.TryParse(Path.GetFileName(entry), out var fd) || fd <= 2 || fd == replacement) continue;
            if (FdTarget(fd) is { } t && wanted.Contains(t)) Dup2Native(replacement, fd);
        }
    }

    /// <summary>
    /// Marks every open descriptor above stderr close-on-exec. .NET only passes 0-2 on purpose, but descriptors this
    /// process inherited or that a library opened without O_CLOEXEC would leak into children: a long-lived daemon
    /// holding its launcher's stdout pipe keeps whoever reads that pipe waiting forever.
    /// </summary>
    public static void CloseOnExecAboveStderr()
    {
        string[] entries;
        try { entries = Directory.GetFileSystemEntries("/proc/self/fd"); }
        catch (IOException) { return; }
        foreach (var entry in entries)
        {
            if (!int.TryParse(Path.GetFileName(entry), out var fd) || fd <= 2) continue;
            var flags = FcntlNative(fd, F_GETFD, 0);
            if (flags >= 0 && (flags & FD_CLOEXEC) == 0) FcntlNative(fd, F_SETFD, flags | FD_CLOEXEC);
        }
    }

    /// <summary>The command line of a process, or null when it is gone; used to check a recorded pid still is ours.</summary>
    public static string? ReadCommandLine(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ').Trim();
        }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }

    private static FileStream? s_logStream;
    private static FileStream? s_devNull;
}
