using RaySharp.Common;

namespace RaySharp.Cli;

/// <summary>Checks that a recorded pid still is the RaySharp process that was recorded, so a reused pid is never signalled.</summary>
internal static class ProcessTable
{
    public static bool IsOurs(int pid, SessionDirectory session)
    {
        if (!Posix.IsAlive(pid)) return false;
        var cmdline = Posix.ReadCommandLine(pid);
        return cmdline is not null
               && cmdline.Contains(NodeProcessLauncher.NodeHostAssembly, StringComparison.Ordinal)
               && cmdline.Contains(session.Path, StringComparison.Ordinal);
    }
}
