using System.Diagnostics;

namespace RaySharp.Autoscaler.Providers;

/// <summary>
/// Reaches a machine with the system's <c>ssh</c> and <c>rsync</c> (so the user's SSH setup, agents and keys work as
/// they do in their shell). Host keys are trusted on first use and kept in the cluster's own known_hosts, so a
/// machine answering later with another key is refused rather than silently trusted.
/// </summary>
internal sealed class SshCommandRunner(string host, string user, string? privateKey, string knownHostsFile) : ICommandRunner
{
    /// <summary>How long one connection attempt may take.</summary>
    private const int ConnectTimeoutSeconds = 5;

    public string Host { get; } = host;

    public string Describe => $"{user}@{Host}";

    private string Target => $"{user}@{Host}";

    /// <summary>ssh's options, as the arguments of one ssh command line (without the target).</summary>
    private List<string> Options(bool batch = true)
    {
        var options = new List<string>
        {
            "-o", $"BatchMode={(batch ? "yes" : "no")}",
            "-o", "StrictHostKeyChecking=accept-new",
            "-o", $"UserKnownHostsFile={knownHostsFile}",
            "-o", $"ConnectTimeout={ConnectTimeoutSeconds}",
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=3",
            "-o", "LogLevel=ERROR",
        };
        if (privateKey is not null)
        {
            options.Add("-i");
            options.Add(privateKey);
            options.Add("-o");
            options.Add("IdentitiesOnly=yes");
        }
        return options;
    }

    private ProcessStartInfo Ssh(params string[] remote)
    {
        var psi = new ProcessStartInfo("ssh");
        foreach (var o in Options()) psi.ArgumentList.Add(o);
        psi.ArgumentList.Add(Target);
        foreach (var r in remote) psi.ArgumentList.Add(r);
        return psi;
    }

    public Task<CommandResult> RunAsync(string command, IReadOnlyDictionary<string, string> environment, TextWriter? log, CancellationToken cancellationToken) =>
        CommandScripts.RunProcessAsync(Ssh("bash --noprofile --norc -s"),
            CommandScripts.Script(command, environment, "\"$HOME/" + CommandScripts.RemoteBinDir + "\""), log, cancellationToken);

    /// <summary>The <c>-e</c> of rsync: this runner's ssh, options quoted for rsync's own word splitting.</summary>
    private string RsyncShell() => "ssh " + string.Join(' ', Options().Select(o => o.Contains(' ', StringComparison.Ordinal) ? "'" + o + "'" : o));

    public Task<CommandResult> SyncUpAsync(string localPath, string remotePath, IReadOnlyList<string> exclude, bool delete, TextWriter? log, CancellationToken cancellationToken)
    {
        var psi = Rsync(exclude, delete);
        // rsync creates the last folder of the destination only: make the parents first (`~` is the remote home).
        psi.ArgumentList.Add("--rsync-path");
        psi.ArgumentList.Add($"mkdir -p {CommandScripts.Quote(RemoteParent(remotePath))} && rsync");
        psi.ArgumentList.Add(localPath);
        psi.ArgumentList.Add($"{Target}:{RemotePath(remotePath)}");
        return CommandScripts.RunProcessAsync(psi, null, log, cancellationToken);
    }

    public Task<CommandResult> SyncDownAsync(string remotePath, string localPath, TextWriter? log, CancellationToken cancellationToken)
    {
        var parent = Path.GetDirectoryName(Path.GetFullPath(localPath.TrimEnd('/')));
        if (parent is not null) Directory.CreateDirectory(parent);
        var psi = Rsync([], delete: false);
        psi.ArgumentList.Add($"{Target}:{RemotePath(remotePath)}");
        psi.ArgumentList.Add(localPath);
        return CommandScripts.RunProcessAsync(psi, null, log, cancellationToken);
    }

    private ProcessStartInfo Rsync(IReadOnlyList<string> exclude, bool delete)
    {
        var psi = new ProcessStartInfo("rsync");
        psi.ArgumentList.Add("-az");
        if (delete) psi.ArgumentList.Add("--delete");
        foreach (var e in exclude) psi.ArgumentList.Add("--exclude=" + e);
        psi.ArgumentList.Add("-e");
        psi.ArgumentList.Add(RsyncShell());
        return psi;
    }

    /// <summary>A remote path as rsync's remote side reads it: relative to the home folder instead of with a leading <c>~/</c>.</summary>
    private static string RemotePath(string path) => path == "~" ? "." : path.StartsWith("~/", StringComparison.Ordinal) ? path[2..] : path;

    private static string RemoteParent(string path)
    {
        var p = RemotePath(path).TrimEnd('/');
        var slash = p.LastIndexOf('/');
        return slash switch { < 0 => ".", 0 => "/", _ => p[..slash] };
    }

    public ProcessStartInfo Interactive(string? command, IReadOnlyList<int> forwardPorts)
    {
        // Not in batch mode: a person is at this terminal and may answer a passphrase prompt.
        var psi = new ProcessStartInfo("ssh") { UseShellExecute = false };
        foreach (var o in Options(batch: false)) psi.ArgumentList.Add(o);
        foreach (var port in forwardPorts)
        {
            psi.ArgumentList.Add("-L");
            psi.ArgumentList.Add($"{port}:localhost:{port}");
        }
        psi.ArgumentList.Add("-t");
        psi.ArgumentList.Add(Target);
        if (command is not null) psi.ArgumentList.Add($"export PATH=\"$HOME/{CommandScripts.RemoteBinDir}:$PATH\"; {command}");
        return psi;
    }
}
