using System.Text.RegularExpressions;
using Google.Protobuf;
using RaySharp.Common;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>
/// The cluster token, on by default: a host of the test network that is not part of the cluster (and has no token, or
/// a wrong one) tries every port of a 2-node cluster with gRPC, framed requests and HTTP, while the cluster's own
/// driver keeps working; and what <c>--auth none</c> gives up.
/// </summary>
public sealed class ClusterSecurityTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(3);

    public void Dispose() => _net.Dispose();

    private TestHost Head => _net[0];
    private TestHost Worker => _net[1];
    private TestHost Outsider => _net[2];

    [Fact]
    public async Task AHostWithoutTheTokenCanNeitherRunCodeNorReachStateOnAnyPort()
    {
        Assert.Equal(0, (await Cli.RunAsync(Head, "start", "--head", "--num-cpus=1")).ExitCode);
        Assert.Equal(0, (await Cli.RunAsync(Worker, "start", $"--address={Head.Ip}:6379", "--num-cpus=1")).ExitCode);
        var gcs = $"{Head.Ip}:6379";
        var token = Cli.HeadToken(gcs);

        using var driver = new SignalledDriver(Head, "guarded");
        await driver.WaitForAsync("ready", TimeSpan.FromSeconds(90));
        // Every port now open on either node: GCS, raylets, object managers, and the workers the driver leased.
        var ports = Head.ListeningPorts().Select(p => $"{Head.Ip}:{p}").Concat(Worker.ListeningPorts().Select(p => $"{Worker.Ip}:{p}")).ToList();
        var gatewayPorts = GrpcPorts(Head).Concat(GrpcPorts(Worker)).ToList();
        Assert.True(ports.Count >= 7, "expected the GCS, 2 raylets, 2 object managers and workers to listen: " + string.Join(' ', ports));

        var anonymous = await RunIntruderAsync(ports);
        var wrong = await RunIntruderAsync(ports, "--token", ClusterToken.Generate());
        driver.Signal("attacked");
        var run = await driver.Run;

        foreach (var (attempt, presented) in new[] { (anonymous, "none was presented"), (wrong, "is not this RaySharp cluster's") })
        {
            var lines = attempt.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            Assert.Equal(ports.Count * 8, lines.Length);
            var refusedOnce = new HashSet<string>();
            foreach (var line in lines)
            {
                var fields = line.Split(' ', 4);
                var (kind, target) = (fields[0], fields[1]);
                switch (kind)
                {
                    case "grpc":
                        // A server with gRPC says Unauthenticated, then closes the connection: later calls of the
                        // same channel may see it closing. A worker's framed-only port closes on anything but the
                        // framing, which the client sees as a broken (Internal) or lost (Unavailable) connection, or
                        // as no answer while its channel waits to reconnect (DeadlineExceeded). None is served.
                        // A gateway says why at least once (on a loaded machine its first connection may be the one lost).
                        if (gatewayPorts.Contains(target) && fields[3] == "Unauthenticated") refusedOnce.Add(target);
                        Assert.True(fields[3] is "Unauthenticated" or "Internal" or "Unavailable" or "DeadlineExceeded", line);
                        break;
                    case "framed":
                        // The handshake's refusal and nothing else: none of the nine requests sent behind it was answered.
                        Assert.Matches(@"^answers=Error#0 closed=True message=", fields[2] + " " + fields[3]);
                        Assert.Contains(presented, fields[3]);
                        Assert.Contains("RAYSHARP_CLUSTER_TOKEN", fields[3]);
                        break;
                    case "http1":
                        Assert.DoesNotMatch(@"HTTP/1\.[01]_2\d\d", fields[2]);
                        break;
                    default:
                        Assert.Fail("unexpected line " + line);
                        break;
                }
            }
            Assert.True(gatewayPorts.All(refusedOnce.Contains), $"every gRPC port must refuse as Unauthenticated at least once: {attempt}");
        }

        // The cluster's own driver kept working throughout, and nothing the intruder sent took effect.
        Assert.Contains("after actor-ok=True remote-intact=True", run.Stdout);
        Assert.Matches(@"during rounds=[1-9]\d*", run.Stdout);
        using (var channels = new RpcChannelPool(new RpcSecurityOptions { ClusterToken = token }))
        {
            var kv = new InternalKvGcsService.InternalKvGcsServiceClient(channels.Get(gcs));
            Assert.False((await kv.KvGetAsync(new KvGetRequest { Namespace = "intruder", Key = ByteString.CopyFromUtf8("owned") })).Found);
        }

        // The token: 0600 in both nodes' sessions, on no command line, in no log; each refused address logged once.
        foreach (var host in new[] { Head, Worker })
        {
            var session = ClusterAssertions.Sessions(host).Single();
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(ClusterToken.PathIn(session)));
            Assert.Equal(token, ClusterToken.ReadFrom(session));
            foreach (var log in Directory.EnumerateFiles(session.LogsDir)) Assert.DoesNotContain(token, File.ReadAllText(log));
        }
        foreach (var cmdline in Directory.EnumerateDirectories("/proc").Where(d => Path.GetFileName(d).All(char.IsDigit)))
        {
            string text;
            try { text = File.ReadAllText(Path.Combine(cmdline, "cmdline")); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { continue; }
            Assert.DoesNotContain(token, text);
        }
        var gcsLog = File.ReadAllText(ClusterAssertions.Sessions(Head).Single().LogFile(Components.GcsServer));
        Assert.Single(Regex.Matches(gcsLog, $@"Refused .* from {Regex.Escape(Outsider.Ip)}:"));

        await ClusterAssertions.StopAndAssertCleanAsync(Worker);
        await ClusterAssertions.StopAndAssertCleanAsync(Head);
    }

    [Fact]
    public async Task JoiningNeedsTheHeadsTokenAndSaysWhereItIs()
    {
        Assert.Equal(0, (await Cli.RunAsync(Head, "start", "--head", "--num-cpus=1")).ExitCode);
        var gcs = $"{Head.Ip}:6379";

        Worker.Environment["RAYSHARP_CLUSTER_TOKEN"] = "";
        var without = await Cli.RunAsync(Worker, "start", $"--address={gcs}", "--num-cpus=1");
        Assert.Equal(1, without.ExitCode);
        Assert.Contains($"The head at {gcs} requires the cluster token, and none was given", without.Stderr);
        Assert.Contains("RAYSHARP_CLUSTER_TOKEN=<token> raysharp start", without.Stderr);

        var wrong = await Cli.RunAsync(Worker, "start", $"--address={gcs}", $"--token={ClusterToken.Generate()}");
        Assert.Equal(1, wrong.ExitCode);
        Assert.Contains("refused the cluster token given", wrong.Stderr);
        var malformed = await Cli.RunAsync(Worker, "start", $"--address={gcs}", "--token=short");
        Assert.Contains("fewer than the 32 required", malformed.Stderr);
        Assert.Empty(Worker.Pids());

        // A copy of the head's token file, as `start --head` suggests.
        var copy = Path.Combine(Worker.TempDir, "token-copy");
        File.Copy(ClusterToken.PathIn(ClusterAssertions.Sessions(Head).Single()), copy);
        Assert.Equal(0, (await Cli.RunAsync(Worker, "start", $"--address={gcs}", "--num-cpus=1", $"--token-file={copy}")).ExitCode);
        Assert.Equal(2, (await ClusterAssertions.StatusAsync(Worker)).Count(n => n.State == "ALIVE"));

        // A driver on a machine that is not a node, by address: refused without the token, with a message that names it.
        var outside = await Cli.RunProgramAsync(Outsider, "ClusterInfo", gcs);
        Assert.Equal(1, outside.ExitCode);
        Assert.Contains("refused this connection: this RaySharp cluster requires its cluster token", outside.Stderr);
        Assert.Contains("RayInitOptions.Token", outside.Stderr);

        await ClusterAssertions.StopAndAssertCleanAsync(Worker);
        await ClusterAssertions.StopAndAssertCleanAsync(Head);
    }

    [Fact]
    public async Task AuthNoneRunsTheSameDriverAndWarnsAtStartAndInStatus()
    {
        var started = await Cli.RunAsync(Head, "start", "--head", "--num-cpus=1", "--auth", "none");
        Assert.Equal(0, started.ExitCode);
        Assert.Contains("WARNING: This cluster was started with --auth none", started.Stdout);
        Assert.False(File.Exists(ClusterToken.PathIn(ClusterAssertions.Sessions(Head).Single())));
        // A node that brings a token of its own is told that the cluster does not use one, and joins without it.
        var joined = await Cli.RunAsync(Worker, "start", $"--address={Head.Ip}:6379", "--num-cpus=1", $"--token={ClusterToken.Generate()}");
        Assert.Equal(0, joined.ExitCode);
        Assert.Contains("runs without authentication", joined.Stdout);

        var status = await Cli.RunAsync(Head, "status");
        Assert.Contains("WARNING: Authentication: none", status.Stdout);
        var nodeIps = await Cli.RunProgramAsync(Head, "NodeIps");
        Assert.True(nodeIps.ExitCode == 0, nodeIps.ToString());
        Assert.Contains("1000 tasks", nodeIps.Stdout);
        // What it gives up: anyone on the network reads and writes the cluster's state.
        var open = await RunIntruderAsync([$"{Head.Ip}:6379"]);
        Assert.Contains($"grpc {Head.Ip}:6379 KvPut OK", open);

        await ClusterAssertions.StopAndAssertCleanAsync(Worker);
        await ClusterAssertions.StopAndAssertCleanAsync(Head);
    }

    private async Task<string> RunIntruderAsync(IReadOnlyList<string> targets, params string[] options)
    {
        var run = await Cli.RunDllAsync(Cli.ProgramDll("RaySharp.Intruder"), Outsider.Namespace, Outsider.TempDir, null, TimeSpan.FromSeconds(180), [.. options, .. targets]);
        Assert.True(run.ExitCode == 0, run.ToString());
        return run.Stdout;
    }

    /// <summary>The ports of a host that serve gRPC as well as the framing: its GCS, raylet and object manager.</summary>
    private static IEnumerable<string> GrpcPorts(TestHost host)
    {
        var session = ClusterAssertions.Sessions(host).Single();
        if (session.ReadPorts(Components.GcsServer) is { } gcs) yield return $"{host.Ip}:{gcs.Port}";
        var raylet = session.ReadPorts(Components.Raylet)!;
        yield return $"{host.Ip}:{raylet.Port}";
        yield return $"{host.Ip}:{raylet.ObjectManagerPort}";
    }
}
