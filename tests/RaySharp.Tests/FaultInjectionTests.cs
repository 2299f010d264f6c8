using RaySharp.Common;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>The fault-injection hooks make failures happen where a test asks, and the failure paths handle them.</summary>
public sealed class FaultInjectionTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(1);

    public void Dispose() => _net.Dispose();

    [Fact]
    public async Task InjectedGcsFailuresAreRiddenThroughAndAWorkerKilledAtAChosenAttemptIsRetried()
    {
        var head = _net[0];
        // The GCS fails the first 3 reads of its key-value store (workers load the job's code through them), and a
        // worker dies as it starts the first attempt of any task named InjectedVictim.
        head.Environment[FaultInjection.RpcFailureEnv] = "KvGet=3";
        head.Environment[FaultInjection.DieAtEnv] = "task:InjectedVictim:1";
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=1")).ExitCode);

        var run = await ClusterAssertions.RunDriverAsync(head, "injected", "auto");
        Assert.Contains("victim-retried survived\n", run.Stdout);
        Assert.Contains("victim-no-retries WorkerCrashedException attempts=1\n", run.Stdout);

        var session = ClusterAssertions.Sessions(head).Single();
        var gcsLog = File.ReadAllText(session.LogFile(Components.GcsServer));
        Assert.Contains("Injected failure of KvGet (3 of 3)", gcsLog);
        Assert.DoesNotContain("Injected failure of KvGet (4 of", gcsLog);
        var workerLogs = string.Concat(Directory.EnumerateFiles(session.LogsDir, "worker*").Select(File.ReadAllText));
        Assert.Equal(2, System.Text.RegularExpressions.Regex.Matches(workerLogs,
            @"\[fault injection\] RAYSHARP_testing_die_at: killing worker pid \d+ at attempt 1 of task InjectedVictim").Count);
        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }

    [Fact]
    public async Task AWorkerWhoseLoadOfAJobsCodeFailedLoadsItAgainForTheJobsNextTask()
    {
        var head = _net[0];
        // The first read of the job's code manifest fails with an error no client retries.
        head.Environment[FaultInjection.RpcFailureEnv] = "KvGet=1@Internal";
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=1")).ExitCode);

        var run = await ClusterAssertions.RunDriverAsync(head, "code-retry", "auto");
        var line = Assert.Single(run.Stdout.Split('\n'), l => l.StartsWith("code-attempts ", StringComparison.Ordinal));
        var attempts = line["code-attempts ".Length..].Split(" | ");
        Assert.StartsWith("failed ", attempts[0]);
        Assert.StartsWith("ok ", attempts[1]);
        Assert.Contains("Injected failure of KvGet (1 of 1)", File.ReadAllText(ClusterAssertions.Sessions(head).Single().LogFile(Components.GcsServer)));
        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }

    [Fact]
    public async Task ACallerAskingWhereAnActorIsRidesThroughGcsErrorsOtherThanUnavailable()
    {
        var head = _net[0];
        // Not the GCS being down (Unavailable, always waited out) but an error of another kind, as an overloaded or
        // failing GCS gives: the caller's resolution of the actor's address must try again, not stop (its calls would
        // then wait forever behind it).
        head.Environment[FaultInjection.RpcFailureEnv] = "GetActorInfo=2@Internal";
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=1")).ExitCode);

        var run = await ClusterAssertions.RunDriverAsync(head, "actor-resolve", "auto");
        Assert.Contains("actor-answered 1\n", run.Stdout);
        var gcsLog = File.ReadAllText(ClusterAssertions.Sessions(head).Single().LogFile(Components.GcsServer));
        Assert.Contains("Injected failure of GetActorInfo (2 of 2)", gcsLog);
        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }

    [Fact]
    public async Task ABorrowedReferenceWhoseOwnerDiedFailsWithOwnerDiedException()
    {
        var head = _net[0];
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=3")).ExitCode);
        var run = await ClusterAssertions.RunDriverAsync(head, "owner-died", "auto");
        Assert.Contains("owner crashed\n", run.Stdout);
        Assert.Contains("borrower saw OwnerDiedException: object ", run.Stdout);
        Assert.Contains("the process that owns it (the one that passed this reference) died before its value was known", run.Stdout);
        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }
}
