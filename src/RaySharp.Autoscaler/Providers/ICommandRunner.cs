using System.Diagnostics;
using System.Text;

namespace RaySharp.Autoscaler.Providers;

/// <summary>The outcome of a command on a node: its exit code and what it printed (stdout and stderr together, in order).</summary>
internal sealed record CommandResult(int ExitCode, string Output)
{
    public bool Succeeded => ExitCode == 0;

    /// <summary>The last lines of the output, for an error message.</summary>
    public string Tail(int lines = 20)
    {
        var all = Output.TrimEnd().Split('\n');
        return string.Join('\n', all.Skip(Math.Max(0, all.Length - lines)));
    }
}

/// <summary>Runs commands on one node and copies files to and from it (over SSH, or on this machine for process nodes).</summary>
internal interface ICommandRunner
{
    /// <summary>Names the node for messages: user@host, or the process node's name.</summary>
    string Describe { get; }

    /// <summary>
    /// Runs a shell command. <paramref name="environment"/> reaches the command through the script on its standard
    /// input, never a command line (it carries the cluster token); the command itself reads no stdin.
    /// </summary>
    Task<CommandResult> RunAsync(string command, IReadOnlyDictionary<string, string> environment, TextWriter? log, CancellationToken cancellationToken);

    /// <summary>Copies a local file or folder to the node (rsync semantics: a trailing '/' copies a folder's contents).</summary>
    Task<CommandResult> SyncUpAsync(string localPath, string remotePath, IReadOnlyList<string> exclude, bool delete, TextWriter? log, CancellationToken cancellationToken);

    /// <summary>Copies a file or folder of the node here.</summary>
    Task<CommandResult> SyncDownAsync(string remotePath, string localPath, TextWriter? log, CancellationToken cancellationToken);

    /// <summary>
    /// A process attached to this terminal that runs <paramref name="command"/> on the node (a login shell when null),
    /// with <c>raysharp</c> on the PATH and <paramref name="forwardPorts"/> of the node forwarded to this machine's localhost.
    /// </summary>
    ProcessStartInfo Interactive(string? command, IReadOnlyList<int> forwardPorts);
}

/// <summary>What every runner shares: the script that carries the environment, and running a process to its end.</summary>
internal static class CommandScripts
{
    /// <summary>Where a node keeps the RaySharp build the launcher copied to it, and the <c>raysharp</c> wrapper that runs it.</summary>
    public const string RemoteInstallDir = ".raysharp/install";
    public const string RemoteBinDir = ".raysharp/bin";

    /// <summary>
    /// The script a node's shell reads on stdin: the environment exported (single-quoted, so nothing in a value is
    /// expanded), <c>raysharp</c> put on the PATH, then the command in a subshell that reads nothing from stdin (the rest
    /// of the script is there).
    /// </summary>
    public static string Script(string command, IReadOnlyDictionary<string, string> environment, string binDir)
    {
        var script = new StringBuilder();
        foreach (var (name, value) in environment) script.Append("export ").Append(name).Append('=').Append(Quote(value)).Append('\n');
        script.Append("export PATH=").Append(binDir).Append(":\"$PATH\"\n");
        script.Append("(\n").Append(command).Append("\n) </dev/null\n");
        return script.ToString();
    }

    public static string Quote(string value) => "'" + value.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    /// <summary>The <c>raysharp</c> wrapper a node runs: the CLI assembly under <paramref name="installDir"/> with this machine's dotnet.</summary>
    public static string Wrapper(string installDir) =>
        "#!/bin/sh\n# Written by `raysharp up`: runs the RaySharp build it copied to this node.\n" +
        $"exec dotnet \"{installDir}/RaySharp.Cli.dll\" \"$@\"\n";

    /// <summary>Runs a process to its end, its output (both streams) captured and copied to <paramref name="log"/> as it comes.</summary>
    public static async Task<CommandResult> RunProcessAsync(ProcessStartInfo psi, string? stdin, TextWriter? log, CancellationToken cancellationToken)
    {
        psi.UseShellExecute = false;
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.RedirectStandardInput = true;
        var output = new StringBuilder();
        var gate = new Lock();
        using var process = new Process { StartInfo = psi };
        void OnLine(string? line)
        {
            if (line is null) return;
            lock (gate)
            {
                output.Append(line).Append('\n');
                log?.WriteLine(line);
            }
        }
        process.OutputDataReceived += (_, e) => OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => OnLine(e.Data);
        try
        {
            process.Start();
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return new CommandResult(127, $"cannot run {psi.FileName}: {e.Message} (is it installed?)");
        }
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            if (stdin is not null) await process.StandardInput.WriteAsync(stdin.AsMemory(), cancellationToken).ConfigureAwait(false);
            process.StandardInput.Close();
        }
        catch (IOException)
        {
            // The process ended without reading its script (ssh could not connect): its exit code says why.
        }
        try
        {
            await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            throw;
        }
        lock (gate) return new CommandResult(process.ExitCode, output.ToString());
    }
}
