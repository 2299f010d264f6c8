using System.Diagnostics;
using System.Text.Json;

namespace RaySharp.Bench.Peers;

// Shared by the peer benches (bench/RaySharp.Bench.Akka compiles this file too), so that every peer is measured the same way.

/// <summary>Command line of the measuring process: <c>[filter] [--quick] [--json PATH]</c>.</summary>
internal sealed record BenchOptions(bool Quick, string? Filter, string? JsonPath)
{
    public static BenchOptions Parse(string[] args)
    {
        var quick = false;
        string? filter = null, json = null;
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--quick": quick = true; break;
                case "--json" when i + 1 < args.Length: json = args[++i]; break;
                case var a when a.StartsWith("--", StringComparison.Ordinal): throw new ArgumentException($"unknown option {a}");
                default: filter = args[i]; break;
            }
        }
        return new BenchOptions(quick, filter, json);
    }

    // Ray's microbenchmark method (ray_perf.py's timeit): 1 s warm-up, then 4 trials of at least 2 s each.
    public int Trials => Quick ? 1 : 4;
    public TimeSpan TrialTime => TimeSpan.FromSeconds(Quick ? 0.2 : 2);
    public TimeSpan Warmup => TimeSpan.FromSeconds(Quick ? 0.2 : 1);

    public bool Selects(string name) => Filter is null || name.Contains(Filter, StringComparison.Ordinal);
}

internal sealed record BenchResult(string Name, double Mean, double Stdev, string Unit);

internal sealed class BenchRunner(BenchOptions options, string system, ChildServer server)
{
    // A lost reply would otherwise hang the run with the child still alive; a healthy row takes about 9 s.
    private static readonly TimeSpan RowLimit = TimeSpan.FromSeconds(60);
    private readonly List<BenchResult> _results = [];

    public void PrintHeader(string detail)
    {
        Console.WriteLine($"{system} on loopback ({Environment.ProcessorCount} cores), {detail}; " +
                          $"{options.Trials} trial(s) of {options.TrialTime.TotalSeconds:0.#} s after {options.Warmup.TotalSeconds:0.#} s warm-up");
        Console.WriteLine($"{"benchmark",-16} {"calls/s",14} {"± sd",12}");
    }

    /// <summary>
    /// <paramref name="workload"/> issues calls until at least the given time has passed and returns how many completed;
    /// a trial's rate is that count over the time the workload took, so batches that straddle the end still count fully.
    /// </summary>
    public async Task RunAsync(string name, Func<TimeSpan, Task<long>> workload)
    {
        if (!options.Selects(name)) return;
        var row = RunRowAsync();
        // A dead server leaves calls pending forever in some clients (Akka's Ask without a timeout): fail at once instead.
        var first = await Task.WhenAny(row, server.Exited, Task.Delay(RowLimit));
        if (first != row)
            throw new InvalidOperationException(first == server.Exited ? $"the server process exited during {name}" : $"{name} took longer than {RowLimit.TotalSeconds:0} s");
        await row;

        async Task RunRowAsync()
        {
            await workload(options.Warmup);
            var rates = new List<double>();
            for (var t = 0; t < options.Trials; t++)
            {
                var sw = Stopwatch.StartNew();
                var calls = await workload(options.TrialTime);
                rates.Add(calls / sw.Elapsed.TotalSeconds);
            }
            var mean = rates.Average();
            // Population standard deviation, as numpy's std in ray_perf.py.
            var sd = Math.Sqrt(rates.Sum(r => (r - mean) * (r - mean)) / rates.Count);
            _results.Add(new BenchResult(name, mean, sd, "calls/s"));
            Console.WriteLine($"{name,-16} {mean,14:N0} {sd,12:N0}");
        }
    }

    public void WriteJson()
    {
        if (options.JsonPath is null) return;
        var json = JsonSerializer.Serialize(_results, new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.CamelCase, WriteIndented = true });
        File.WriteAllText(options.JsonPath, json + Environment.NewLine);
    }
}

/// <summary>A copy of this program running the server side, killed whenever this process ends.</summary>
internal sealed class ChildServer : IDisposable
{
    private readonly Process _process;
    private int _disposed;
    private volatile bool _silenced;

    private ChildServer(Process process)
    {
        _process = process;
        Exited = process.WaitForExitAsync();
    }

    /// <summary>Completes when the child process has exited, for whatever reason.</summary>
    public Task Exited { get; }

    /// <summary>The line the child printed once it was serving, without the READY prefix.</summary>
    public string ReadyLine { get; private set; } = "";

    public static ChildServer Start(string mode, TimeSpan readyTimeout)
    {
        var host = Environment.ProcessPath!;
        // Under `dotnet x.dll` the host needs the dll; under the apphost the executable is the program itself.
        var args = Path.GetFileNameWithoutExtension(host) == "dotnet" ? new[] { typeof(ChildServer).Assembly.Location, mode } : [mode];
        var psi = new ProcessStartInfo(host, args)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            // The child exits when this pipe closes, which covers a parent killed without running any handler.
            RedirectStandardInput = true,
        };
        var process = Process.Start(psi) ?? throw new InvalidOperationException($"could not start the {mode} process");
        var child = new ChildServer(process);
        AppDomain.CurrentDomain.ProcessExit += child.OnExit;
        Console.CancelKeyPress += child.OnExit;
        try
        {
            child.ReadyLine = WaitReady(process, mode, readyTimeout);
            // Later output (warnings) goes to stderr; drained so that a full pipe never blocks the child.
            _ = Task.Run(async () =>
            {
                while (await process.StandardOutput.ReadLineAsync() is { } line)
                {
                    if (!child._silenced) Console.Error.WriteLine($"[{mode}] {line}");
                }
            });
            return child;
        }
        catch
        {
            child.Dispose();
            throw;
        }
    }

    private static string WaitReady(Process process, string mode, TimeSpan timeout)
    {
        var read = Task.Run(() =>
        {
            while (process.StandardOutput.ReadLine() is { } line)
            {
                if (line.StartsWith("READY", StringComparison.Ordinal)) return line["READY".Length..].Trim();
                Console.Error.WriteLine($"[{mode}] {line}");
            }
            return null;
        });
        if (!read.Wait(timeout)) throw new TimeoutException($"the {mode} process was not ready after {timeout.TotalSeconds:0} s");
        return read.Result ?? throw new InvalidOperationException($"the {mode} process exited before it was ready");
    }

    /// <summary>Drops the child's output from now on: what it says while the clients disconnect is expected.</summary>
    public void Silence() => _silenced = true;

    private void OnExit(object? sender, EventArgs e) => Dispose();

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Kill(_process);
    }

    private static void Kill(Process process)
    {
        try
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
                process.WaitForExit(5000);
            }
        }
        catch (InvalidOperationException) { }
    }

    /// <summary>In the child: exit once the parent's end of stdin is gone.</summary>
    public static Task ParentGone() => Task.Run(() =>
    {
        while (Console.In.ReadLine() is not null) { }
    });
}
