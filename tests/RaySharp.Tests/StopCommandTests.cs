using System.Diagnostics;
using RaySharp.Common;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>
/// <c>raysharp stop</c> signals only the processes its sessions recorded that still are those processes, SIGTERM first
/// and SIGKILL only after the grace period.
/// </summary>
public sealed class StopCommandTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(2);
    private readonly List<Process> _started = [];
    private readonly string _dir = Directory.CreateTempSubdirectory("raysharp-stop-").FullName;

    public void Dispose()
    {
        foreach (var p in _started)
        {
            try { if (!p.HasExited) p.Kill(); } catch (InvalidOperationException) { }
            p.Dispose();
        }
        _net.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public async Task ARecordedPidNowUsedByAnUnrelatedProcessIsNotKilled()
    {
        var head = _net[0];
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=1")).ExitCode);
        var session = ClusterAssertions.Sessions(head).Single();
        // Recorded workers whose pids now belong to others: a plain process, one that names the node host but another
        // session, one that names this session but is not the node host.
        var decoys = new[]
        {
            Start("sleep", "600"),
            Start("bash", "-c", "while :; do sleep 1; done", NodeProcessLauncher.NodeHostAssembly, Path.Combine(head.TempDir, "session_other")),
            Start("bash", "-c", "while :; do sleep 1; done", session.Path),
        };
        foreach (var d in decoys) session.RecordProcess(new ProcessRecord(Components.Worker, d.Id));

        await ClusterAssertions.StopAndAssertCleanAsync(head);
        Assert.All(decoys, d => Assert.False(d.HasExited, $"raysharp stop killed pid {d.Id}, which is not a RaySharp process of the session"));
        Assert.Empty(session.RecordedProcesses());
    }

    [Fact]
    public async Task StopSendsSigtermAndWaitsTheGracePeriodBeforeSigkill()
    {
        // A node process that stops gracefully on SIGTERM, once the test lets it: stop must wait for it, not kill it.
        var (head, log, release) = (_net[0], Path.Combine(_dir, "graceful.log"), Path.Combine(_dir, "release"));
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=1")).ExitCode);
        var session = ClusterAssertions.Sessions(head).Single();
        var graceful = StartNodeLike(session, $"trap 'echo term >> {log}; while [ ! -e {release} ]; do sleep 0.05; done; echo done >> {log}; exit 0' TERM");
        var stop = Cli.RunAsync(head, "stop", "--grace-period=120");
        await ClusterAssertions.EventuallyAsync(() => Task.FromResult(graceful.HasExited || (File.Exists(log) && File.ReadAllText(log).Contains("term"))),
            TimeSpan.FromSeconds(60), "the SIGTERM reaching the graceful process");
        Assert.False(graceful.HasExited, $"stop killed the process (exit {(graceful.HasExited ? graceful.ExitCode : 0)}) before it could stop gracefully");
        Assert.False(stop.IsCompleted, "stop returned while a process it signalled was still stopping");
        await File.WriteAllTextAsync(release, "");
        Assert.True((await stop).ExitCode == 0, (await stop).ToString());
        Assert.True(graceful.WaitForExit(TimeSpan.FromSeconds(10)));
        Assert.Equal(0, graceful.ExitCode);
        Assert.Equal("term\ndone\n", File.ReadAllText(log));
        Assert.Empty(head.Pids());

        // One that ignores SIGTERM: killed with SIGKILL once the grace period is over.
        var (other, stubbornLog) = (_net[1], Path.Combine(_dir, "stubborn.log"));
        Assert.Equal(0, (await Cli.RunAsync(other, "start", "--head", "--num-cpus=1")).ExitCode);
        var otherSession = ClusterAssertions.Sessions(other).Single();
        var stubborn = StartNodeLike(otherSession, $"trap 'echo term >> {stubbornLog}' TERM");
        var stopped = await Cli.RunAsync(other, "stop", "--grace-period=2");
        Assert.True(stopped.ExitCode == 0, stopped.ToString());
        Assert.True(stubborn.WaitForExit(TimeSpan.FromSeconds(10)), "stop left a process that ignored SIGTERM running");
        Assert.Equal(128 + Posix.SIGKILL, stubborn.ExitCode);
        Assert.StartsWith("term\n", File.ReadAllText(stubbornLog));
        Assert.Empty(other.Pids());
        Assert.Empty(ClusterAssertions.SharedMemoryFiles(other));
    }

    /// <summary>
    /// A stand-in for a node process of the session (its command line names the node host and the session, as stop
    /// checks), recorded as a worker: runs <paramref name="onTerm"/> as its SIGTERM handler and otherwise idles.
    /// </summary>
    private Process StartNodeLike(SessionDirectory session, string onTerm)
    {
        var p = Start("bash", "-c", onTerm + "; while :; do sleep 0.05; done", NodeProcessLauncher.NodeHostAssembly, session.Path);
        session.RecordProcess(new ProcessRecord(Components.Worker, p.Id));
        return p;
    }

    private Process Start(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        var p = Process.Start(psi)!;
        _started.Add(p);
        return p;
    }
}
