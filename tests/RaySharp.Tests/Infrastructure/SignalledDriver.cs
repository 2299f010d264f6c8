namespace RaySharp.Tests.Infrastructure;

/// <summary>
/// A test driver run in the background that coordinates with the test through files (TESTDRIVER_SIGNAL_DIR): it
/// writes one when it reaches the point where the test injects a fault, and waits for the test's file saying the
/// fault is over. The directory goes on dispose.
/// </summary>
internal sealed class SignalledDriver : IDisposable
{
    private readonly string _signals = Directory.CreateTempSubdirectory("raysharp-signals-").FullName;

    public SignalledDriver(TestHost host, params string[] args)
    {
        host.Environment["TESTDRIVER_SIGNAL_DIR"] = _signals;
        Run = ClusterAssertions.RunDriverAsync(host, args);
    }

    /// <summary>The driver's run; it fails the test if the driver exits with an error.</summary>
    public Task<CliResult> Run { get; }

    /// <summary>Waits for the driver's signal; fails when it exits without giving it.</summary>
    public async Task WaitForAsync(string name, TimeSpan within)
    {
        await ClusterAssertions.EventuallyAsync(() => Task.FromResult(File.Exists(Path.Combine(_signals, name)) || Run.IsCompleted),
            within, $"the driver's '{name}' signal");
        Assert.False(Run.IsCompleted, Run.IsCompleted ? $"the driver exited before signalling '{name}': {await Run}" : "");
    }

    /// <summary>What the driver wrote into a signal file (a value it hands the test).</summary>
    public string Read(string name) => File.ReadAllText(Path.Combine(_signals, name));

    /// <summary>Tells the driver that it may go on.</summary>
    public void Signal(string name) => File.WriteAllText(Path.Combine(_signals, name), "");

    public void Dispose() => Directory.Delete(_signals, recursive: true);
}
