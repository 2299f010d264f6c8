using System.Diagnostics;

namespace RaySharp.Common;

/// <summary>
/// Starts RaySharp's own processes (GCS server, raylet, worker), all hosted by the <c>raysharp-node</c> program that
/// ships next to every RaySharp entry point. Two modes:
/// detached (the process makes its own session and outlives its launcher, as after <c>raysharp start</c>), or
/// supervised (its stdin is a pipe from the launcher; when the launcher dies, for any reason, the child sees end of file and exits).
/// </summary>
internal static class NodeProcessLauncher
{
    public const string NodeHostAssembly = "raysharp-node.dll";

    /// <summary>Flag telling a node process to exit when its stdin reaches end of file (its launcher is gone).</summary>
    public const string ExitWithParentFlag = "--exit-with-parent";

    /// <summary>Flag telling a node process to detach into its own session with stdin from /dev/null.</summary>
    public const string DetachFlag = "--detach";

    public const string LogFileFlag = "--log-file";

    public static string NodeHostPath()
    {
        var path = Path.Combine(AppContext.BaseDirectory, NodeHostAssembly);
        if (!File.Exists(path))
            throw new FileNotFoundException($"{NodeHostAssembly} is missing from {AppContext.BaseDirectory}; rebuild RaySharp (dotnet build) so the node host is copied next to this program", path);
        return path;
    }

    /// <summary>The dotnet host that runs this process, so children use the same runtime.</summary>
    public static string DotnetHost()
    {
        var self = Environment.ProcessPath;
        if (self is not null && Path.GetFileNameWithoutExtension(self) == "dotnet") return self;
        if (Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } hostPath && File.Exists(hostPath)) return hostPath;
        var root = Environment.GetEnvironmentVariable("DOTNET_ROOT");
        if (root is not null && File.Exists(Path.Combine(root, "dotnet"))) return Path.Combine(root, "dotnet");
        return "dotnet";
    }

    /// <summary>
    /// Starts a node process, records its pid in the session directory and waits until it reports the port it bound.
    /// Throws <see cref="NodeStartupException"/> with the tail of its log when it dies or hangs during startup.
    /// </summary>
    public static async Task<(ProcessRecord Record, Process Process)> StartAndWaitReadyAsync(
        SessionDirectory session, string component, IReadOnlyList<string> arguments, bool supervised, TimeSpan timeout,
        IReadOnlyDictionary<string, string>? environment = null, CancellationToken cancellationToken = default)
    {
        var logFile = session.LogFile(component);
        var process = Start(component, arguments, logFile, supervised, environment);
        var record = new ProcessRecord(component, process.Id);
        session.RecordProcess(record);
        var deadline = DateTime.UtcNow + timeout;
        while (session.ReadPorts(component) is null)
        {
            if (process.HasExited)
            {
                session.ForgetProcess(record);
                throw new NodeStartupException($"The {component} process exited during startup (exit code {process.ExitCode}).\n" +
                                               $"Its log, {logFile}, ends with:\n{LogTail(logFile)}");
            }
            if (DateTime.UtcNow > deadline)
            {
                Posix.Kill(process.Id, Posix.SIGKILL);
                session.ForgetProcess(record);
                throw new NodeStartupException($"The {component} process did not become ready within {timeout.TotalSeconds:0} s; see {logFile}.");
            }
            await Task.Delay(50, cancellationToken).ConfigureAwait(false);
        }
        return (record, process);
    }

    private static string LogTail(string logFile)
    {
        try
        {
            return string.Join('\n', File.ReadAllLines(logFile).TakeLast(12).Select(l => "  " + l));
        }
        catch (IOException) { return "  (no log written)"; }
    }

    public static Process Start(string component, IEnumerable<string> arguments, string logFile, bool supervised,
        IReadOnlyDictionary<string, string>? environment = null)
    {
        var psi = new ProcessStartInfo(DotnetHost())
        {
            UseShellExecute = false,
            RedirectStandardInput = supervised,
            RedirectStandardOutput = false,
            RedirectStandardError = false,
            WorkingDirectory = Path.GetDirectoryName(logFile) ?? "/",
        };
        psi.ArgumentList.Add(NodeHostPath());
        psi.ArgumentList.Add(component);
        foreach (var a in arguments) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add(LogFileFlag);
        psi.ArgumentList.Add(logFile);
        psi.ArgumentList.Add(supervised ? ExitWithParentFlag : DetachFlag);
        if (environment is not null)
        {
            // An empty value unsets a variable the launcher has (a --auth none cluster's processes get no token).
            foreach (var (k, v) in environment)
            {
                if (v.Length == 0) psi.Environment.Remove(k);
                else psi.Environment[k] = v;
            }
        }
        // Children must not inherit the test host's or an IDE's diagnostics hooks.
        psi.Environment.Remove("DOTNET_STARTUP_HOOKS");
        Posix.CloseOnExecAboveStderr();
        return Process.Start(psi) ?? throw new InvalidOperationException($"could not start {component}");
    }
}

/// <summary>A RaySharp process failed to start; the message says why and where its log is.</summary>
internal sealed class NodeStartupException(string message) : Exception(message);
