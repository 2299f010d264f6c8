using System.Security.Cryptography;
using RaySharp.Common;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>
/// The SSH test hosts the cluster launcher's tests reach: a real sshd in each, and hosts as separate as machines (their
/// own IP, hostname and host key; private /tmp, /dev/shm and home), with dotnet, rsync and the build usable over SSH.
/// </summary>
public sealed class SshHostsTests
{
    private static string NewId() => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));

    /// <summary>
    /// A listing of a host's /tmp without the checkout's own top folder when the checkout lives under /tmp: SshHosts
    /// binds the repository back into every host (the build must run there), so it is expected to be seen.
    /// </summary>
    private static string WithoutCheckout(string listing)
    {
        var root = Cli.RepoRoot.TrimEnd('/');
        if (!root.StartsWith("/tmp/", StringComparison.Ordinal)) return listing;
        var top = root.Split('/')[2];
        return string.Join('\n', listing.Split('\n').Where(l => l != top));
    }

    [Fact]
    public async Task EachHostLetsInTheTestsKeyOnlyAndAnswersWithItsOwnIpNameAndHostKey()
    {
        using var net = TestNetwork.Create(3);
        using var ssh = await SshHosts.StartAsync(net);

        foreach (var host in net.Hosts)
        {
            var who = await ssh.RunAsync(host, "hostname; hostname -I; id -un; echo $HOME; pwd");
            Assert.True(who.ExitCode == 0, who.ToString());
            var lines = who.Stdout.Split('\n', StringSplitOptions.TrimEntries);
            Assert.Equal(host.Name, lines[0]);
            Assert.Equal([host.Ip], lines[1].Split(' ', StringSplitOptions.RemoveEmptyEntries));
            Assert.Equal("root", lines[2]);
            Assert.Equal("/root", lines[3]);
            Assert.Equal("/root", lines[4]);
            Assert.Contains("Accepted publickey for root", ssh.SshdLog(host));

            // The form a launcher uses (no host key check) gets in too.
            var loose = await SshHosts.RunProcessAsync("ssh", ["-i", ssh.PrivateKeyPath, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", $"root@{host.Ip}", "echo in"], TimeSpan.FromSeconds(30));
            Assert.True(loose.ExitCode == 0 && loose.Stdout.Trim() == "in", loose.ToString());
        }

        var dir = Path.Combine(Path.GetTempPath(), "raysharp-tests", "sshkeys-" + NewId());
        Directory.CreateDirectory(dir);
        try
        {
            var a = net[0];
            var b = net[1];
            // Another key, even for root, is refused; so is no key at all: publickey is the only method offered.
            var other = Path.Combine(dir, "other_ed25519");
            await SshHosts.KeygenAsync(other, "not-the-tests");
            string[] common = ["-F", "/dev/null", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + ssh.KnownHostsFile];
            var withOther = await SshHosts.RunProcessAsync("ssh", [.. common, "-i", other, ssh.Destination(a), "echo in"], TimeSpan.FromSeconds(30));
            Assert.True(withOther.ExitCode == 255 && withOther.Stdout == "", withOther.ToString());
            Assert.Contains("Permission denied (publickey)", withOther.Stderr);
            var withNone = await SshHosts.RunProcessAsync("ssh", [.. common, "-o", "PubkeyAuthentication=no", ssh.Destination(a), "echo in"], TimeSpan.FromSeconds(30));
            Assert.True(withNone.ExitCode == 255 && withNone.Stdout == "", withNone.ToString());
            Assert.Contains("Permission denied (publickey)", withNone.Stderr);

            // Each host has a key of its own: A's IP with B's key on record is not A.
            var swapped = Path.Combine(dir, "known_hosts_swapped");
            var bKey = File.ReadAllLines(ssh.KnownHostsFile).Single(l => l.StartsWith(b.Ip + " ", StringComparison.Ordinal))[(b.Ip.Length + 1)..];
            File.WriteAllText(swapped, $"{a.Ip} {bKey}\n");
            var spoofed = await SshHosts.RunProcessAsync("ssh", ["-F", "/dev/null", "-i", ssh.PrivateKeyPath, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + swapped, ssh.Destination(a), "echo in"], TimeSpan.FromSeconds(30));
            Assert.True(spoofed.ExitCode == 255 && spoofed.Stdout == "", spoofed.ToString());
            Assert.Contains("Host key verification failed", spoofed.Stderr);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task TmpShmAndHomeArePrivateToEachHost()
    {
        using var net = TestNetwork.Create(3);
        using var ssh = await SshHosts.StartAsync(net);
        var a = net[0];
        var name = "raysharp-ssh-" + NewId();
        string[] places = [$"/tmp/{name}", $"/dev/shm/{name}", $"/root/{name}"];

        var write = await ssh.RunAsync(a, $"echo A > /tmp/{name} && echo A > /dev/shm/{name} && echo A > ~/{name}");
        Assert.True(write.ExitCode == 0, write.ToString());
        var read = await ssh.RunAsync(a, $"cat /tmp/{name} /dev/shm/{name} ~/{name}");
        Assert.True(read.ExitCode == 0 && read.Stdout == "A\nA\nA\n", read.ToString());

        const string ListPresent = "for f in {0}; do if [ -e \"$f\" ]; then echo \"$f\"; fi; done";
        foreach (var other in net.Hosts.Skip(1))
        {
            var seen = await ssh.RunAsync(other, string.Format(ListPresent, string.Join(' ', places)));
            Assert.True(seen.ExitCode == 0 && seen.Stdout == "", $"{other} sees A's files: {seen}");
        }
        foreach (var place in places) Assert.False(File.Exists(place), $"the test process sees {place} that host A wrote");

        // The same names on B are B's own, and A's files stay A's.
        var writeB = await ssh.RunAsync(net[1], $"echo B > /tmp/{name} && echo B > /dev/shm/{name} && echo B > ~/{name}");
        Assert.True(writeB.ExitCode == 0, writeB.ToString());
        read = await ssh.RunAsync(a, $"cat /tmp/{name} /dev/shm/{name} ~/{name}");
        Assert.True(read.ExitCode == 0 && read.Stdout == "A\nA\nA\n", read.ToString());

        // Nor does a host see the test process's /tmp: a host's TempDir (in the real /tmp) is not there over SSH.
        Assert.True(Directory.Exists(a.TempDir));
        var tempDir = await ssh.RunAsync(a, string.Format(ListPresent, a.TempDir) + $"; ls -A /tmp");
        Assert.True(tempDir.ExitCode == 0 && WithoutCheckout(tempDir.Stdout) == name + "\n", tempDir.ToString());
    }

    [Fact]
    public async Task DirectoriesToKeepVisibleAreBoundBackIntoEveryHostsPrivateTmpAndHome()
    {
        // As an SDK in ~/.dotnet or a checkout under /tmp would be: the same real directory in every host, nothing beside it.
        var id = NewId();
        var inTmp = Path.Combine(Path.GetTempPath(), "raysharp-tests", "sshkeep-" + id);
        var inHome = $"/root/.raysharp-sshkeep-{id}";
        string[] dirs = [inTmp, inTmp + "-sibling", inHome, inHome + "-sibling"];
        foreach (var d in dirs) Directory.CreateDirectory(d);
        try
        {
            foreach (var d in dirs) File.WriteAllText(Path.Combine(d, "f"), d + "\n");
            using var net = TestNetwork.Create(2);
            using var ssh = await SshHosts.StartAsync(net, keepVisible: [inTmp, inHome]);
            foreach (var host in net.Hosts)
            {
                var kept = await ssh.RunAsync(host, $"cat {inTmp}/f {inHome}/f; ls -A /dev/shm /root /tmp");
                Assert.True(kept.ExitCode == 0, kept.ToString());
                Assert.Equal($"{inTmp}\n{inHome}\n/dev/shm:\n\n/root:\n.raysharp-sshkeep-{id}\n\n/tmp:\nraysharp-tests\n", WithoutCheckout(kept.Stdout));
                var written = await ssh.RunAsync(host, $"echo {host.Name} > {inHome}/{host.Name}");
                Assert.True(written.ExitCode == 0, written.ToString());
                Assert.Equal(host.Name + "\n", File.ReadAllText(Path.Combine(inHome, host.Name)));
            }
        }
        finally
        {
            foreach (var d in dirs) Directory.Delete(d, recursive: true);
        }
    }

    [Fact]
    public async Task DotnetRsyncAndTheBuildRunInSshSessionsAndRsyncLandsOnOneHostOnly()
    {
        using var net = TestNetwork.Create(3);
        using var ssh = await SshHosts.StartAsync(net);
        var a = net[0];

        var localSdk = await SshHosts.RunProcessAsync("dotnet", ["--version"], TimeSpan.FromSeconds(60));
        Assert.True(localSdk.ExitCode == 0, localSdk.ToString());
        foreach (var host in net.Hosts)
        {
            var sdk = await ssh.RunAsync(host, "dotnet --version");
            Assert.True(sdk.ExitCode == 0 && sdk.Stdout.Trim() == localSdk.Stdout.Trim(), sdk.ToString());
            var rsync = await ssh.RunAsync(host, "rsync --version");
            Assert.True(rsync.ExitCode == 0 && rsync.Stdout.StartsWith("rsync  version", StringComparison.Ordinal), rsync.ToString());
        }
        var cli = await ssh.RunAsync(a, $"dotnet {Cli.CliDll} --help");
        Assert.True(cli.ExitCode == 0 && cli.Stdout.Contains("start", StringComparison.Ordinal), cli.ToString());

        var name = "raysharp-rsync-" + NewId();
        var local = Path.Combine(Path.GetTempPath(), "raysharp-tests", name);
        Directory.CreateDirectory(Path.Combine(local, "sub"));
        try
        {
            File.WriteAllText(Path.Combine(local, "a.txt"), "hello from the test process\n");
            var blob = RandomNumberGenerator.GetBytes(256 * 1024);
            File.WriteAllBytes(Path.Combine(local, "sub", "b.bin"), blob);

            foreach (var remote in new[] { name, $"/tmp/{name}" })
            {
                var copied = await ssh.RsyncToAsync(a, local + "/", remote + "/");
                Assert.True(copied.ExitCode == 0, copied.ToString());
                var there = await ssh.RunAsync(a, $"cd {remote} && cat a.txt && sha256sum sub/b.bin");
                Assert.True(there.ExitCode == 0, there.ToString());
                Assert.Equal($"hello from the test process\n{Convert.ToHexStringLower(SHA256.HashData(blob))}  sub/b.bin\n", there.Stdout);
                foreach (var other in net.Hosts.Skip(1))
                {
                    var absent = await ssh.RunAsync(other, $"test -e {remote} && echo present || echo absent");
                    Assert.True(absent.ExitCode == 0 && absent.Stdout == "absent\n", $"{other}: {absent}");
                }
            }
            Assert.False(Directory.Exists($"/root/{name}"));
            Assert.False(Directory.Exists($"/tmp/{name}"));
        }
        finally
        {
            Directory.Delete(local, recursive: true);
        }
    }

    [Fact]
    public async Task DisposeStopsEveryRecordedSshdAndLeavesNothingRunningInTheHosts()
    {
        using var net = TestNetwork.Create(2);
        var ssh = await SshHosts.StartAsync(net);
        var recorded = net.Hosts.ToDictionary(h => h, h => (Pid: ssh.SshdPid(h), Config: ssh.SshdConfigFile(h)));
        foreach (var host in net.Hosts)
        {
            var (pid, config) = recorded[host];
            Assert.Contains(config, Posix.ReadCommandLine(pid) ?? "");
            Assert.Contains(pid, host.Pids());
            var session = await ssh.RunAsync(host, "echo $$");
            Assert.Equal(0, session.ExitCode);
        }
        var stateDir = ssh.StateDir;
        Assert.True(Directory.Exists(stateDir));

        ssh.Dispose();

        foreach (var host in net.Hosts)
        {
            var (pid, config) = recorded[host];
            // Gone, or the pid reused by something that is not our sshd.
            Assert.False(Posix.IsAlive(pid) && (Posix.ReadCommandLine(pid) ?? "").Contains(config, StringComparison.Ordinal), $"sshd {pid} of {host} is alive");
            // Nothing else either (the sessions' sshd children), before the network's own safety net kills anything.
            await ClusterAssertions.EventuallyAsync(() => Task.FromResult(host.Pids().Count == 0), TimeSpan.FromSeconds(5), $"{host} left with no process");
            Assert.False(await PortOpenAsync(host.Ip, 22), $"{host} still accepts on port 22");
        }
        Assert.False(Directory.Exists(stateDir));
        var anyOfOurs = Directory.EnumerateDirectories("/proc").Select(Path.GetFileName).Where(n => n!.All(char.IsAsciiDigit))
            .Select(n => Posix.ReadCommandLine(int.Parse(n!, System.Globalization.CultureInfo.InvariantCulture)) ?? "")
            .Where(c => c.Contains(stateDir, StringComparison.Ordinal)).ToList();
        Assert.Empty(anyOfOurs);
    }

    private static async Task<bool> PortOpenAsync(string ip, int port)
    {
        using var client = new System.Net.Sockets.TcpClient();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        try
        {
            await client.ConnectAsync(ip, port, cts.Token);
            return true;
        }
        catch (Exception e) when (e is System.Net.Sockets.SocketException or OperationCanceledException)
        {
            return false;
        }
    }
}
