using Google.Protobuf;
using Microsoft.Extensions.Logging.Abstractions;
using RaySharp.Gcs;
using RaySharp.Gcs.Storage;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

namespace RaySharp.Tests;

/// <summary>The GCS's driver registrations over real connections, in process.</summary>
public sealed class GcsDriverMonitorTests
{
    private static readonly TimeSpan s_within = TimeSpan.FromSeconds(30);

    private static Task<byte[]> RegisterAsync(FramedConnection connection, string jobId) =>
        connection.CallAsync(FramedMethods.RegisterDriver, new RegisterDriverRequest { JobId = jobId }.ToByteArray());

    [Fact]
    public async Task RegistrationsNameAnExistingJobAndOnlyTheLatestConnectionOfAJobCounts()
    {
        var security = new RpcSecurityOptions();
        var jobs = new GcsJobManager(new InMemoryGcsStore(), new GcsPublisher(), TimeProvider.System);
        var ended = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var job2Ended = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        jobs.JobFinished += id =>
        {
            ended.Enqueue(id);
            if (id == "00000002") job2Ended.TrySetResult();
        };
        var log = new CapturingLogger();
        using var drivers = new GcsDriverMonitor(jobs, TimeProvider.System, log, disconnectGrace: TimeSpan.Zero);
        await using var listener = FramedListener.Start("gcs", RpcListenOptions.Fixed(0), drivers, NullLoggerFactory.Instance, security);
        await using var a = await FramedClient.ConnectAsync("127.0.0.1", listener.Port, security);
        await using var b = await FramedClient.ConnectAsync("127.0.0.1", listener.Port, security);

        // Refused where framed requests are checked (before the monitor), naming the field and the value.
        Assert.Contains("job_id 'not-a-job' is not a job id", (await Assert.ThrowsAsync<RemoteCallException>(() => RegisterAsync(a, "not-a-job"))).Message);
        Assert.Contains("there is no job 000000ff", (await Assert.ThrowsAsync<RemoteCallException>(() => RegisterAsync(a, "000000ff"))).Message);

        await jobs.AddAsync(new JobInfo { JobId = "00000001" });
        await jobs.AddAsync(new JobInfo { JobId = "00000002" });
        await RegisterAsync(a, "00000001");
        await RegisterAsync(a, "00000001");
        await RegisterAsync(a, "00000002");
        // Job 1's driver registered again over another connection: from now on only that one's loss counts.
        await RegisterAsync(b, "00000001");
        // While a is still open: the driver may register again before the GCS reads its old connection's end.
        Assert.Contains(log.Lines, l => l.Contains("The driver of job 00000001 registered again over a new connection", StringComparison.Ordinal));

        // Connection a closes: job 2, registered only there, ends (with no grace here); job 1 goes on.
        await a.DisposeAsync();
        await job2Ended.Task.WaitAsync(s_within);
        await WaitUntilAsync(() => log.Lines.Any(l => l.Contains("An earlier connection of the driver of job 00000001 closed", StringComparison.Ordinal)));
        Assert.Equal(["00000002"], ended.ToArray());
        Assert.False((await jobs.GetAsync("00000001"))!.IsDead);

        // A job that ended cannot be registered again.
        Assert.Contains("job 00000002 has ended", (await Assert.ThrowsAsync<RemoteCallException>(() => RegisterAsync(b, "00000002"))).Message);

        // Its latest connection gone, job 1 ends too.
        await b.DisposeAsync();
        await WaitUntilAsync(() => ended.Count == 2);
        Assert.Equal(["00000002", "00000001"], ended.ToArray());
        Assert.True((await jobs.GetAsync("00000001"))!.IsDead);
    }

    private sealed class CapturingLogger : Microsoft.Extensions.Logging.ILogger<GcsDriverMonitor>
    {
        public System.Collections.Concurrent.ConcurrentQueue<string> Lines { get; } = new();

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => true;

        public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Lines.Enqueue(formatter(state, exception));
    }

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + s_within;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "the condition did not become true in time");
            await Task.Delay(20);
        }
    }
}
