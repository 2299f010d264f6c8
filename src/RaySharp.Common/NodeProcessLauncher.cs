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
            foreach (var (k, v) in environment) psi.Environment[k] = v;
        }
        // Children must not inherit the test host's or an IDE's diagnostics hooks.
        psi.Environment.Remove("DOTNET_STARTUP_HOOKS");
        Posix.CloseOnExecAboveStderr();
        return Process.Start(psi) ?? throw new InvalidOperationException($"could not start {component}");
    }
}
