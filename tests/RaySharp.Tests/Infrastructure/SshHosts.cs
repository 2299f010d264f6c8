using System.Diagnostics;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace RaySharp.Tests.Infrastructure;

// Why it is built this way (what was found necessary):
//
// * Each host's sshd runs as `ip netns exec <ns> unshare --mount --uts --propagation private sh -c '<mounts>; exec
//   /usr/sbin/sshd -D -e -f <config>'`. Every SSH session is a descendant of that sshd, so it inherits the host's network
//   namespace, its mount namespace (its own tmpfs on /tmp, /dev/shm and root's home) and its hostname: what the launcher
//   starts over SSH sees one machine's files only, as on separate machines. Propagation is private, so none of these
//   mounts reaches the machine's real mount table, and they vanish when the namespace's last process exits.
//   `ip netns exec`, unshare and `sh -c exec` all exec in place, so the pid started is sshd's (the PidFile says so too),
//   and Dispose stops exactly that pid, never anything found by name.
// * sshd must be -D (no daemon: its pid stays ours to stop) and is started by its absolute path (it re-executes itself
//   for every connection); -e sends its log to our stderr reader, which goes into every start error.
// * The sshd state (config, host keys, authorized_keys, pid file) lives under /run/raysharp-tests, not /tmp: sshd reads
//   authorized_keys at every login (and the sshd re-executed for each connection its host key), long after the private
//   /tmp has covered the real one. The state directory is 0700 and the keys 0600 (sshd refuses host keys that others can read; ssh refuses
//   such a client key). StrictModes is off because sshd would otherwise vouch for every directory above
//   authorized_keys, which are not ours to set; UsePAM is off (no PAM session in a test) and with it passwords and
//   keyboard-interactive, so the key is the only way in. /run/sshd, the privilege-separation directory Debian's sshd
//   insists on, is created when missing (Debian's own service does the same).
// * The private home hides what lives under the real one. dotnet here is /usr/bin/dotnet -> /usr/share/dotnet (visible),
//   but a dotnet-install.sh SDK in ~/.dotnet, or a checkout under ~ or /tmp, would vanish: such directories are bound
//   back into the host at their own path (stashed on the private /dev/shm while /tmp and the home are covered, then the
//   stash is removed). sshd gives sessions a fixed PATH, so the directory `dotnet` was found in is added with SetEnv, and
//   DOTNET_ROOT is passed on when the test process has it. The private home starts empty: a `dotnet` SDK command's first
//   run there prints the .NET welcome banner, as on a fresh machine (`dotnet app.dll` does not).
// * The test process sees none of a host's private files: `host.TempDir` in the real /tmp is not the host's /tmp. Look at
//   a host through SSH (RunAsync(host, "ls /dev/shm")), as one would look at a real machine.

/// <summary>
/// A real OpenSSH server in each test host, each host with a private /tmp, /dev/shm and root home and its own hostname,
/// reachable as root with a key made for this test only. Stops its sshds on dispose; what sessions left running in a
/// host is the <see cref="TestNetwork"/>'s to kill.
/// </summary>
internal sealed class SshHosts : IDisposable
{
    public const string User = "root";
    private const string Sshd = "/usr/sbin/sshd";
    /// <summary>sshd's PATH for root sessions on Debian, to which the directory `dotnet` was found in is added.</summary>
    private const string SessionPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    private readonly Dictionary<TestHost, Server> _servers = new();
    private bool _disposed;

    private sealed class Server(TestHost host, string configFile, string pidFile)
    {
        public TestHost Host { get; } = host;
        public string ConfigFile { get; } = configFile;
        public string PidFile { get; } = pidFile;
        public Process? Process { get; set; }
        public int Pid { get; set; }
        public StringBuilder Log { get; } = new();
    }

    private SshHosts(IReadOnlyList<TestHost> hosts, string stateDir)
    {
        Hosts = hosts;
        StateDir = stateDir;
        PrivateKeyPath = Path.Combine(stateDir, "id_ed25519");
        KnownHostsFile = Path.Combine(stateDir, "known_hosts");
    }

    public IReadOnlyList<TestHost> Hosts { get; }

    /// <summary>Where the keys and sshd configs live (under /run/raysharp-tests; deleted on dispose).</summary>
    public string StateDir { get; }

    /// <summary>The client's private key (ed25519, 0600), the only key the hosts accept.</summary>
    public string PrivateKeyPath { get; }

    public string PublicKeyPath => PrivateKeyPath + ".pub";

    /// <summary>Every host's key by its IP, for clients that check host keys (<see cref="SshOptions"/> does).</summary>
    public string KnownHostsFile { get; }

    /// <summary>
    /// The ssh options the helpers use: this test's key only (no agent, no ~/.ssh/config), no prompts, and the host keys
    /// checked against <see cref="KnownHostsFile"/>. `ssh` followed by these and `root@ip` reaches a host.
    /// </summary>
    public IReadOnlyList<string> SshOptions =>
    [
        "-F", "/dev/null", "-i", PrivateKeyPath, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + KnownHostsFile, "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
    ];

    /// <summary>The ssh command line with <see cref="SshOptions"/>, as rsync's -e (and other tools) take it.</summary>
    public string SshCommand => "ssh " + string.Join(' ', SshOptions.Select(ShellQuote));

    public string Destination(TestHost host) => $"{User}@{host.Ip}";

    /// <summary>The pid of the host's sshd (the listener; each connection is served by a child of it).</summary>
    public int SshdPid(TestHost host) => _servers[host].Pid;

    /// <summary>The sshd's config file (its path is in the sshd's command line, which tells our sshds from any other).</summary>
    public string SshdConfigFile(TestHost host) => _servers[host].ConfigFile;

    /// <summary>What the host's sshd logged so far (-e: connections, authentication failures).</summary>
    public string SshdLog(TestHost host)
    {
        var log = _servers[host].Log;
        lock (log) return log.ToString();
    }

    /// <summary>No RaySharp process (only sshd and what it runs for this check) and no shared-memory file of RaySharp's is left on the host.</summary>
    public async Task AssertNothingLeftAsync(TestHost host)
    {
        var shm = await RunAsync(host, "ls -A /dev/shm");
        Assert.True(shm.ExitCode == 0, shm.ToString());
        Assert.DoesNotContain("raysharp", shm.Stdout, StringComparison.Ordinal);
        var left = host.Pids().Where(p => p != SshdPid(host))
            .Select(p => (Pid: p, Command: RaySharp.Common.Posix.ReadCommandLine(p) ?? ""))
            .Where(p => p.Command.Contains("RaySharp", StringComparison.Ordinal) || p.Command.Contains("raysharp", StringComparison.Ordinal)).ToList();
        Assert.True(left.Count == 0, $"{host}: left running: {string.Join("; ", left.Select(p => $"{p.Pid} {p.Command}"))}");
    }

    public static Task<SshHosts> StartAsync(TestNetwork network, IReadOnlyList<string>? keepVisible = null) =>
        StartAsync(network.Hosts, keepVisible);

    /// <summary>
    /// Makes the keys, starts an sshd in each host and waits (at most 20 s) until each lets this test's key in.
    /// <paramref name="keepVisible"/>: more real directories under /tmp or the home to bind back into every host (the
    /// SDK's and the repository's already are when they lie there).
    /// </summary>
    public static async Task<SshHosts> StartAsync(IReadOnlyList<TestHost> hosts, IReadOnlyList<string>? keepVisible = null)
    {
        if (!File.Exists(Sshd)) throw new InvalidOperationException($"{Sshd} not found: the SSH tests need openssh-server (scripts/test.sh installs it)");
        var stateDir = Path.Combine("/run/raysharp-tests", "ssh-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4)));
        Directory.CreateDirectory("/run/raysharp-tests");
        Directory.CreateDirectory(stateDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var ssh = new SshHosts(hosts, stateDir);
        try
        {
            await ssh.StartServersAsync(keepVisible ?? []);
        }
        catch
        {
            ssh.Dispose();
            throw;
        }
        return ssh;
    }

    private async Task StartServersAsync(IReadOnlyList<string> keepVisible)
    {
        await KeygenAsync(PrivateKeyPath, "raysharp-test-client");
        File.Copy(PublicKeyPath, Path.Combine(StateDir, "authorized_keys"));
        if (!Directory.Exists("/run/sshd")) Directory.CreateDirectory("/run/sshd", UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute |
            UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);

        var home = RootHome();
        var dotnetOnPath = FindOnPath("dotnet") ?? throw new InvalidOperationException("dotnet is not on PATH");
        var dotnetRoot = Path.GetDirectoryName(Path.GetFullPath(new FileInfo(dotnetOnPath).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? dotnetOnPath))!;
        var sessionPath = string.Join(':', SessionPath.Split(':').Append(Path.GetDirectoryName(dotnetOnPath)!).Distinct(StringComparer.Ordinal));
        var dotnetRootEnv = System.Environment.GetEnvironmentVariable("DOTNET_ROOT");
        // Real directories a private /tmp or home would hide but the hosts need: bound back at the same path.
        var rebind = new[] { dotnetRoot, Path.GetDirectoryName(dotnetOnPath)!, Cli.RepoRoot, dotnetRootEnv }.Concat(keepVisible)
            .Where(d => !string.IsNullOrEmpty(d)).Select(d => Path.GetFullPath(d!).TrimEnd('/'))
            .Where(d => IsUnder(d, "/tmp") || IsUnder(d, home)).Distinct(StringComparer.Ordinal).ToList();

        var knownHosts = new StringBuilder();
        foreach (var host in Hosts)
        {
            var dir = Path.Combine(StateDir, host.Name);
            Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            var hostKey = Path.Combine(dir, "ssh_host_ed25519_key");
            await KeygenAsync(hostKey, "raysharp-test-" + host.Name);
            knownHosts.Append(host.Ip).Append(' ').AppendLine(string.Join(' ', File.ReadAllText(hostKey + ".pub").Split(' ').Take(2)));
            var config = Path.Combine(dir, "sshd_config");
            var server = new Server(host, config, Path.Combine(dir, "sshd.pid"));
            File.WriteAllText(config, $"""
                ListenAddress {host.Ip}:22
                HostKey {hostKey}
                PidFile {server.PidFile}
                AuthorizedKeysFile {Path.Combine(StateDir, "authorized_keys")}
                PermitRootLogin prohibit-password
                PubkeyAuthentication yes
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                PermitEmptyPasswords no
                UsePAM no
                StrictModes no
                UseDNS no
                PrintMotd no
                PrintLastLog no
                X11Forwarding no
                MaxStartups 100:30:200
                MaxSessions 100
                SetEnv PATH={sessionPath}{(string.IsNullOrEmpty(dotnetRootEnv) ? "" : " DOTNET_ROOT=" + dotnetRootEnv)}
                Subsystem sftp /usr/lib/openssh/sftp-server

                """);
            _servers[host] = server;
        }
        File.WriteAllText(KnownHostsFile, knownHosts.ToString());

        foreach (var server in _servers.Values) StartServer(server, home, rebind);
        await Task.WhenAll(_servers.Values.Select(WaitUntilReadyAsync));
    }

    private static void StartServer(Server server, string home, IReadOnlyList<string> rebind)
    {
        var script = new StringBuilder("set -e\n");
        // /dev/shm first: it is where the directories to keep are stashed while /tmp and the home are covered.
        script.Append("mount -t tmpfs -o mode=1777 tmpfs /dev/shm\n");
        for (var i = 0; i < rebind.Count; i++)
            script.Append($"mkdir /dev/shm/.keep{i}\nmount --rbind {ShellQuote(rebind[i])} /dev/shm/.keep{i}\n");
        script.Append("mount -t tmpfs -o mode=1777 tmpfs /tmp\n");
        script.Append($"mount -t tmpfs -o mode=0700 tmpfs {ShellQuote(home)}\n");
        for (var i = 0; i < rebind.Count; i++)
            script.Append($"mkdir -p {ShellQuote(rebind[i])}\nmount --rbind /dev/shm/.keep{i} {ShellQuote(rebind[i])}\numount -R /dev/shm/.keep{i}\nrmdir /dev/shm/.keep{i}\n");
        script.Append($"hostname {ShellQuote(server.Host.Name)}\n");
        script.Append($"exec {Sshd} -D -e -f {ShellQuote(server.ConfigFile)}\n");

        var psi = new ProcessStartInfo("ip") { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true, RedirectStandardInput = true };
        foreach (var a in new[] { "netns", "exec", server.Host.Namespace, "unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c", script.ToString() })
            psi.ArgumentList.Add(a);
        var process = Process.Start(psi) ?? throw new InvalidOperationException("could not start ip netns exec");
        process.StandardInput.Close();
        void Append(object? _, DataReceivedEventArgs e)
        {
            if (e.Data is null) return;
            lock (server.Log) server.Log.AppendLine(e.Data);
        }
        process.ErrorDataReceived += Append;
        process.OutputDataReceived += Append;
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        server.Process = process;
        server.Pid = process.Id;
    }

    private async Task WaitUntilReadyAsync(Server server)
    {
        var host = server.Host;
        var deadline = Stopwatch.StartNew();
        var limit = TimeSpan.FromSeconds(20);
        string last = "no connection accepted yet";
        while (deadline.Elapsed < limit)
        {
            if (server.Process!.HasExited)
            {
                server.Process.WaitForExit(); // the last of its stderr
                throw new InvalidOperationException($"sshd of {host} exited with {server.Process.ExitCode} while starting; its output:\n{SshdLog(host)}");
            }
            if (await AcceptsAsync(host.Ip, 22))
            {
                var probe = await RunAsync(host, "true", TimeSpan.FromSeconds(10));
                if (probe.ExitCode == 0)
                {
                    // The listener wrote its pid file before it accepted: it must be the pid we started (all exec, no fork).
                    var pid = int.Parse(File.ReadAllText(server.PidFile).Trim(), System.Globalization.CultureInfo.InvariantCulture);
                    if (pid != server.Pid)
                        throw new InvalidOperationException($"sshd of {host} has pid {pid} but the process started is {server.Pid}: something between forked");
                    return;
                }
                last = probe.ToString();
            }
            await Task.Delay(100);
        }
        throw new TimeoutException($"sshd of {host} did not let the test's key in within {limit.TotalSeconds} s; last attempt: {last}\nsshd's output:\n{SshdLog(host)}");
    }

    private static async Task<bool> AcceptsAsync(string ip, int port)
    {
        using var client = new TcpClient();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(1));
        try
        {
            await client.ConnectAsync(ip, port, cts.Token);
            return true;
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>Runs a shell command on the host over SSH, as root (the remote login shell parses it), with this test's key.</summary>
    public Task<CliResult> RunAsync(TestHost host, string command, TimeSpan? timeout = null) =>
        RunProcessAsync("ssh", [.. SshOptions, Destination(host), command], timeout ?? TimeSpan.FromSeconds(60));

    /// <summary>`rsync -a` of a local file or folder to a path on the host, over SSH with this test's key.</summary>
    public Task<CliResult> RsyncToAsync(TestHost host, string localPath, string remotePath, TimeSpan? timeout = null) =>
        RunProcessAsync("rsync", ["-a", "-e", SshCommand, localPath, $"{Destination(host)}:{remotePath}"], timeout ?? TimeSpan.FromSeconds(60));

    /// <summary>Makes an ed25519 key pair without a passphrase (the private half 0600).</summary>
    public static async Task KeygenAsync(string privateKeyPath, string comment)
    {
        var result = await RunProcessAsync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", privateKeyPath], TimeSpan.FromSeconds(30));
        if (result.ExitCode != 0) throw new InvalidOperationException($"ssh-keygen failed: {result}");
        File.SetUnixFileMode(privateKeyPath, UnixFileMode.UserRead | UnixFileMode.UserWrite);
    }

    /// <summary>Runs a program to its end (stdin closed), killed with its children and reported after the timeout.</summary>
    public static async Task<CliResult> RunProcessAsync(string file, IReadOnlyList<string> args, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(file) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        var sw = Stopwatch.StartNew();
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {file}");
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            // A remote command that leaves a process holding the session's stdout keeps ssh waiting: what came says so.
            var printed = await Task.WhenAll(stdout, stderr).WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
            throw new TimeoutException($"{file} {string.Join(' ', args.Select(ShellQuote))} did not finish within {timeout.TotalSeconds} s; " +
                                       $"stdout:\n{printed[0]}\nstderr:\n{printed[1]}");
        }
        return new CliResult(p.ExitCode, await stdout, await stderr, sw.Elapsed);
    }

    public static string ShellQuote(string s) =>
        s.Length > 0 && s.All(c => char.IsAsciiLetterOrDigit(c) || "/._-=:,@+%".Contains(c)) ? s : "'" + s.Replace("'", "'\\''") + "'";

    private static bool IsUnder(string path, string dir) =>
        path == dir || path.StartsWith(dir.TrimEnd('/') + "/", StringComparison.Ordinal);

    /// <summary>root's home as /etc/passwd has it (sshd makes it the sessions' HOME and working directory).</summary>
    private static string RootHome() =>
        File.ReadLines("/etc/passwd").Select(l => l.Split(':')).FirstOrDefault(f => f.Length >= 6 && f[0] == "root")?[5] is { Length: > 1 } home
            ? home.TrimEnd('/')
            : throw new InvalidOperationException("root's home in /etc/passwd is missing or /: it cannot be made private per host");

    private static string? FindOnPath(string program) =>
        (System.Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
        .Select(d => Path.Combine(d, program)).FirstOrDefault(File.Exists);

    /// <summary>Stops every sshd of this test (SIGTERM, SIGKILL after 5 s) by the pid recorded, and deletes the keys.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var server in _servers.Values.Where(s => s.Process is not null))
        {
            if (!server.Process!.HasExited) Common.Posix.Kill(server.Pid, Common.Posix.SIGTERM);
        }
        foreach (var server in _servers.Values.Where(s => s.Process is not null))
        {
            if (!server.Process!.WaitForExit(5000))
            {
                Common.Posix.Kill(server.Pid, Common.Posix.SIGKILL);
                server.Process.WaitForExit(5000);
            }
            server.Process.Dispose();
        }
        try { Directory.Delete(StateDir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
