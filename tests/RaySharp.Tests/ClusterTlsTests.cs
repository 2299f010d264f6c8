using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>
/// Mutual TLS: a 3-host cluster with certificates from `raysharp tls generate` runs the overview program, and a host
/// outside it is refused on every port, even holding the cluster's token, with a certificate of another CA or none.
/// </summary>
public sealed class ClusterTlsTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(4);

    public void Dispose() => _net.Dispose();

    [Fact]
    public async Task AThreeHostTlsClusterRunsTheOverviewProgramAndRefusesPeersOfAnotherCa()
    {
        var nodes = _net.Hosts.Take(3).ToList();
        var outsider = _net[3];
        // The cluster's CA signs one certificate per node; each host keeps its own copy of its files.
        var issued = Path.Combine(nodes[0].TempDir, "issued");
        foreach (var node in nodes)
        {
            var generated = await Cli.RunAsync(nodes[0], "tls", "generate", "--out", issued, "--name", node.Name, "--ip-address", node.Ip);
            Assert.True(generated.ExitCode == 0, generated.ToString());
            var own = Path.Combine(node.TempDir, "tls");
            Directory.CreateDirectory(own);
            foreach (var file in new[] { "ca.crt", node.Name + ".crt", node.Name + ".key" }) File.Copy(Path.Combine(issued, file), Path.Combine(own, file));
        }
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(issued, "ca.key")));
        string[] Tls(TestHost node)
        {
            var own = Path.Combine(node.TempDir, "tls");
            return [$"--tls-cert={own}/{node.Name}.crt", $"--tls-key={own}/{node.Name}.key", $"--tls-ca={own}/ca.crt"];
        }

        Assert.Equal(0, (await Cli.RunAsync(nodes[0], ["start", "--head", "--num-cpus=1", .. Tls(nodes[0])])).ExitCode);
        var gcs = $"{nodes[0].Ip}:6379";
        // A node without certificates cannot join a TLS cluster, and is told what to give.
        var plainJoin = await Cli.RunAsync(nodes[1], "start", $"--address={gcs}", "--num-cpus=1");
        Assert.Equal(1, plainJoin.ExitCode);
        Assert.Contains("--tls-cert", plainJoin.Stderr);
        foreach (var node in nodes.Skip(1)) Assert.Equal(0, (await Cli.RunAsync(node, ["start", $"--address={gcs}", "--num-cpus=1", .. Tls(node)])).ExitCode);

        var status = await Cli.RunAsync(nodes[1], "status");
        Assert.Contains("Transport: mutual TLS", status.Stdout);
        // The overview program, unchanged: a driver on a node finds the node's certificate and token by itself.
        var run = await Cli.RunProgramAsync(nodes[0], "NodeIps");
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains($"on 3 node(s): {string.Join(", ", nodes.Select(n => n.Ip).Order())}", run.Stdout);

        // From outside: the right token, but a certificate of another CA; then the right token in plain TCP.
        var otherCa = Path.Combine(outsider.TempDir, "other");
        Assert.Equal(0, (await Cli.RunAsync(outsider, "tls", "generate", "--out", otherCa)).ExitCode);
        // Every port of every node (GCS, raylets, object managers, and the workers of a driver that runs throughout).
        using var driver = new SignalledDriver(nodes[0], "guarded");
        await driver.WaitForAsync("ready", TimeSpan.FromSeconds(90));
        var ports = nodes.SelectMany(n => n.ListeningPorts().Select(p => $"{n.Ip}:{p}")).ToList();
        Assert.True(ports.Count >= 9, string.Join(' ', ports));
        var token = Cli.HeadToken(gcs);
        foreach (var options in new[] { new[] { "--token", token, "--tls-cert", $"{otherCa}/node.crt", "--tls-key", $"{otherCa}/node.key" }, ["--token", token] })
        {
            var probe = await Cli.RunDllAsync(Cli.ProgramDll("RaySharp.Intruder"), outsider.Namespace, outsider.TempDir, null, TimeSpan.FromSeconds(120), [.. options, .. ports]);
            Assert.True(probe.ExitCode == 0, probe.ToString());
            var lines = probe.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.NotEmpty(lines);
            foreach (var line in lines)
            {
                Assert.DoesNotContain(" OK", line);
                Assert.DoesNotContain("HelloAck", line);
                Assert.DoesNotContain("Unauthenticated", line); // refused by TLS, before the token is even looked at
                if (line.StartsWith("framed", StringComparison.Ordinal)) Assert.Contains("closed=True", line);
            }
        }

        driver.Signal("attacked");
        Assert.Contains("after actor-ok=True", (await driver.Run).Stdout);

        // The cluster still serves its own.
        var again = await Cli.RunProgramAsync(nodes[1], "ClusterInfo");
        Assert.True(again.ExitCode == 0, again.ToString());
        Assert.Contains("cluster CPU=3", again.Stdout);
        foreach (var node in nodes.AsEnumerable().Reverse()) await ClusterAssertions.StopAndAssertCleanAsync(node);
    }
}
