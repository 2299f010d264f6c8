using System.Diagnostics;
using System.Security.Cryptography;

namespace RaySharp.Tests.Infrastructure;

/// <summary>One test host: its own network namespace, IP and RAYSHARP_TEMP_DIR.</summary>
internal sealed class TestHost(string name, string ns, string ip, string tempDir)
{
    public string Name { get; } = name;
    public string Namespace { get; } = ns;
    public string Ip { get; } = ip;
    public string TempDir { get; } = tempDir;
    public Dictionary<string, string> Environment { get; } = new(StringComparer.Ordinal);

    /// <summary>Every process now living in this host's network namespace.</summary>
    public IReadOnlyList<int> Pids()
    {
        var output = TestNetwork.Ip("netns", "pids", Namespace);
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToList();
    }

    /// <summary>The TCP ports listening in this host's namespace (all of them RaySharp's: nothing else runs there).</summary>
    public IReadOnlyList<int> ListeningPorts() =>
        TestNetwork.Ip("netns", "exec", Namespace, "ss", "-ltnH").Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[3])
            .Select(local => int.Parse(local[(local.LastIndexOf(':') + 1)..], System.Globalization.CultureInfo.InvariantCulture))
            .Distinct().ToList();

    public override string ToString() => $"{Name} ({Ip}, {Namespace})";
}

/// <summary>
/// A private test network: a bridge and one network namespace per host, each with a veth on the bridge and an address
/// of a private /24 chosen at random. The bridge itself has .1, so the test process can reach every host. Everything is
/// deleted on dispose, processes left in the namespaces included.
/// </summary>
internal sealed class TestNetwork : IDisposable
{
    private readonly string _id;
    private readonly string _bridge;
    private readonly string _rootDir;
    public IReadOnlyList<TestHost> Hosts { get; }
    public string Subnet { get; }
    public string BridgeIp { get; }

    private TestNetwork(string id, int subnet, int hostCount)
    {
        _id = id;
        _bridge = "rsbr" + id;
        _rootDir = Path.Combine(Path.GetTempPath(), "raysharp-tests", id);
        Subnet = $"10.231.{subnet}";
        BridgeIp = $"{Subnet}.1";
        Hosts = Enumerable.Range(0, hostCount)
            .Select(i => new TestHost(i == 0 ? "head" : $"worker{i}", $"rs{id}h{i}", $"{Subnet}.{i + 10}", Path.Combine(_rootDir, i == 0 ? "head" : $"worker{i}")))
            .ToList();
    }

    public static TestNetwork Create(int hostCount)
    {
        if (System.Environment.UserName != "root" && System.Environment.GetEnvironmentVariable("USER") != "root")
            throw new InvalidOperationException("the multi-node tests create network namespaces and must run as root");
        var id = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(3));
        var net = new TestNetwork(id, RandomNumberGenerator.GetInt32(2, 250), hostCount);
        try
        {
            Ip("link", "add", net._bridge, "type", "bridge");
            Ip("addr", "add", net.BridgeIp + "/24", "dev", net._bridge);
            Ip("link", "set", net._bridge, "up");
            for (var i = 0; i < net.Hosts.Count; i++)
            {
                var h = net.Hosts[i];
                var veth = $"rsv{id}{i}";
                Ip("netns", "add", h.Namespace);
                Ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", h.Namespace);
                Ip("link", "set", veth, "master", net._bridge);
                Ip("link", "set", veth, "up");
                Ip("-n", h.Namespace, "addr", "add", h.Ip + "/24", "dev", "eth0");
                Ip("-n", h.Namespace, "link", "set", "eth0", "up");
                Ip("-n", h.Namespace, "link", "set", "lo", "up");
                Directory.CreateDirectory(h.TempDir);
            }
        }
        catch
        {
            net.Dispose();
            throw;
        }
        return net;
    }

    public TestHost this[int i] => Hosts[i];

    /// <summary>
    /// Takes the host's cable out of the bridge (its veth's bridge end down) or puts it back: its processes keep
    /// running and their sockets stay open, but no packet passes either way, as in a network partition.
    /// </summary>
    public void SetLink(TestHost host, bool up) =>
        Ip("link", "set", $"rsv{_id}{Hosts.ToList().IndexOf(host)}", up ? "up" : "down");

    public void Dispose()
    {
        foreach (var h in Hosts)
        {
            try
            {
                // A safety net only: tests assert that `raysharp stop` already left nothing running here.
                foreach (var pid in h.Pids()) Common.Posix.Kill(pid, Common.Posix.SIGKILL);
            }
            catch (InvalidOperationException) { }
            TryIp("netns", "del", h.Namespace);
            // A failed test's killed processes cannot remove their object stores' shared memory (gigabytes each,
            // reserved): remove the files of this host's sessions, which nothing else uses.
            try
            {
                foreach (var session in Common.SessionDirectory.EnumerateAll(h.TempDir))
                    foreach (var file in Directory.EnumerateFiles("/dev/shm", "raysharp_" + session.Name + "*"))
                        File.Delete(file);
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        TryIp("link", "del", _bridge);
        try { Directory.Delete(_rootDir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    public static string Ip(params string[] args)
    {
        var psi = new ProcessStartInfo("ip") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEnd();
        var stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"ip {string.Join(' ', args)} failed: {stderr.Trim()}");
        return stdout;
    }

    private static void TryIp(params string[] args)
    {
        try { Ip(args); } catch (InvalidOperationException) { }
    }
}
