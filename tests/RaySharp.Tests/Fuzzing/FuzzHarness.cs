using System.Diagnostics;
using System.Globalization;
using System.Text;
using CsCheck;
using Xunit.Abstractions;

namespace RaySharp.Tests.Fuzzing;

/// <summary>
/// Runs one fuzz target: CsCheck draws inputs for a time budget and the property is checked on each. A property
/// returns for an input the code handled as its contract says (including the documented failures) and throws for
/// anything else: every throw is counted as a crash, an input that outlives the per-input limit as a hang, and the run
/// goes on to the end of its budget so that one run says how much it found. The counts go to the test output and to
/// <c>artifacts/fuzz/&lt;target&gt;.txt</c>, rewritten every few seconds so that a run the process did not survive (a
/// stack overflow, a wild read) still leaves how far it got.
/// </summary>
internal sealed class FuzzHarness
{
    /// <summary>Seconds each target runs; a few by default, so the ordinary test run stays short.</summary>
    public const string SecondsEnv = "RAYSHARP_FUZZ_SECONDS";

    private const int MaxExamples = 10;

    private readonly string _target;
    private readonly ITestOutputHelper _output;
    private readonly TimeSpan _perInput;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, (int Count, string Example)> _findings = new(StringComparer.Ordinal);
    private long _inputs;
    private long _crashes;
    private long _hangs;
    private long _inputStarted;
    private long _inputNumber;
    private long _flaggedNumber = -1;

    public FuzzHarness(string target, ITestOutputHelper output, TimeSpan perInput)
    {
        _target = target;
        _output = output;
        _perInput = perInput;
    }

    /// <summary>A property's way of saying the input took too long (for work it waits on rather than runs).</summary>
    public sealed class HangException(string message) : Exception(message);

    public static double Seconds(double byDefault) =>
        double.TryParse(Environment.GetEnvironmentVariable(SecondsEnv), NumberStyles.Float, CultureInfo.InvariantCulture, out var s) && s > 0 ? s : byDefault;

    public TimeSpan PerInput => _perInput;

    /// <summary>Checks <paramref name="property"/> on inputs of <paramref name="gen"/> for the budget, then asserts none crashed or hung.</summary>
    public void Run<T>(Gen<T> gen, Action<T> property, Func<T, string> describe, double defaultSeconds = 5)
    {
        var seconds = Seconds(defaultSeconds);
        var clock = Stopwatch.StartNew();
        using var stop = new CancellationTokenSource();
        var watchdog = new Thread(() => Watch(clock, stop.Token)) { IsBackground = true, Name = $"fuzz watchdog {_target}" };
        watchdog.Start();
        Exception? runFailure = null;
        // Its own thread, so that an input stuck for good cannot stop the run from reporting.
        var runner = new Thread(() =>
        {
            try
            {
                gen.Sample(value => Check(value, property, describe), time: (int)Math.Ceiling(seconds), threads: 1);
            }
            catch (Exception e)
            {
                runFailure = e;
            }
        }) { IsBackground = true, Name = $"fuzz {_target}" };
        runner.Start();
        var finished = runner.Join(TimeSpan.FromSeconds(seconds) + _perInput * 2 + TimeSpan.FromSeconds(30));
        stop.Cancel();
        // The watchdog reads the token's wait handle each round: disposing it under a round in progress (a loaded
        // machine) crashed the test host.
        watchdog.Join();
        if (!finished) Flag("stuck for good", "(the run never finished)", hang: true);
        var summary = Summary(clock.Elapsed, finished ? "finished" : "stuck");
        _output.WriteLine(summary);
        Write(summary);
        Assert.True(runFailure is null, $"the fuzz run itself failed: {runFailure}");
        Assert.True(Interlocked.Read(ref _crashes) == 0 && Interlocked.Read(ref _hangs) == 0, summary);
    }

    private void Check<T>(T value, Action<T> property, Func<T, string> describe)
    {
        var number = Interlocked.Increment(ref _inputNumber);
        var input = new Lazy<string>(() => describe(value));
        lock (_gate) _currentDescribe = () => input.Value;
        Volatile.Write(ref _inputStarted, Stopwatch.GetTimestamp());
        try
        {
            property(value);
        }
        catch (HangException e)
        {
            if (Interlocked.Read(ref _flaggedNumber) != number) Flag("hang: " + e.Message, input.Value, hang: true);
        }
        catch (Exception e)
        {
            Flag(Signature(e), input.Value + "\n    " + e.ToString().Replace("\n", "\n    ", StringComparison.Ordinal), hang: false);
        }
        finally
        {
            Volatile.Write(ref _inputStarted, 0);
            Interlocked.Increment(ref _inputs);
        }
    }

    private Func<string> _currentDescribe = () => "";

    private void Watch(Stopwatch clock, CancellationToken stop)
    {
        var lastWrite = clock.Elapsed;
        while (!stop.WaitHandle.WaitOne(50))
        {
            var started = Volatile.Read(ref _inputStarted);
            var number = Interlocked.Read(ref _inputNumber);
            if (started != 0 && Stopwatch.GetElapsedTime(started) > _perInput && Interlocked.Exchange(ref _flaggedNumber, number) != number)
            {
                Func<string> describe;
                lock (_gate) describe = _currentDescribe;
                Flag($"hang: an input ran over {_perInput.TotalSeconds} s", describe(), hang: true);
            }
            if (clock.Elapsed - lastWrite > TimeSpan.FromSeconds(5))
            {
                lastWrite = clock.Elapsed;
                Write(Summary(clock.Elapsed, "running"));
            }
        }
    }

    private void Flag(string signature, string example, bool hang)
    {
        Interlocked.Increment(ref hang ? ref _hangs : ref _crashes);
        lock (_gate)
        {
            if (_findings.TryGetValue(signature, out var seen)) _findings[signature] = (seen.Count + 1, seen.Example);
            else if (_findings.Count < MaxExamples) _findings[signature] = (1, example.Length > 4000 ? example[..4000] + " ..." : example);
        }
    }

    // Same exception type thrown from the same place: one finding, however many inputs reach it.
    private static string Signature(Exception e)
    {
        var frame = new StackTrace(e, false).GetFrames().FirstOrDefault(f => f.GetMethod()?.DeclaringType?.Namespace?.StartsWith("RaySharp", StringComparison.Ordinal) == true)
            ?? new StackTrace(e, false).GetFrame(0);
        var method = frame?.GetMethod();
        return $"{e.GetType().FullName} at {method?.DeclaringType?.FullName}.{method?.Name}";
    }

    private string Summary(TimeSpan elapsed, string status)
    {
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"target: {_target}");
        text.AppendLine(CultureInfo.InvariantCulture, $"status: {status}");
        text.AppendLine(CultureInfo.InvariantCulture, $"seconds: {elapsed.TotalSeconds:F0}");
        text.AppendLine(CultureInfo.InvariantCulture, $"inputs: {Interlocked.Read(ref _inputs)}");
        text.AppendLine(CultureInfo.InvariantCulture, $"crashes: {Interlocked.Read(ref _crashes)}");
        text.AppendLine(CultureInfo.InvariantCulture, $"hangs: {Interlocked.Read(ref _hangs)}");
        text.AppendLine(CultureInfo.InvariantCulture, $"per-input limit: {_perInput.TotalSeconds} s");
        lock (_gate)
        {
            foreach (var (signature, (count, example)) in _findings)
                text.AppendLine(CultureInfo.InvariantCulture, $"finding ({count}x): {signature}\n  input: {example}");
        }
        return text.ToString();
    }

    private void Write(string summary)
    {
        try
        {
            var directory = Path.Combine(ArtifactsDirectory(), "fuzz");
            Directory.CreateDirectory(directory);
            File.WriteAllText(Path.Combine(directory, _target + ".txt"), summary);
        }
        catch (IOException)
        {
            // The summary is a convenience; the test output has it too.
        }
    }

    private static string ArtifactsDirectory()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "RaySharp.slnx"))) return Path.Combine(dir.FullName, "artifacts");
        }
        return Path.Combine(Path.GetTempPath(), "raysharp-artifacts");
    }

    public static string Hex(ReadOnlySpan<byte> bytes, int max = 512) =>
        bytes.Length <= max ? Convert.ToHexString(bytes) : $"{Convert.ToHexString(bytes[..max])}... ({bytes.Length} bytes)";
}
