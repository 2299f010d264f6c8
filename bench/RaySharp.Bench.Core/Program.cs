// Usage: dotnet run -c Release --project bench/RaySharp.Bench.Core -- [filter] [--quick] [--peers] [--trials=N] [--each]
// --each: every trial's rate, the median and the best, and per operation the machine's context switches and busy CPU
// time (from /proc/stat: all processes count, so keep the machine otherwise idle) and the bytes the driver allocated.
// (or `raysharp microbenchmark [filter] [--quick]`, which runs this program from next to the CLI)
// --peers: afterwards, runs the Orleans and Akka.NET peers (bench/RaySharp.Bench.Orleans, bench/RaySharp.Bench.Akka; build
// them first) with the same call shapes and prints them beside RaySharp's actor rows, with the ratios.
// Ray's microbenchmarks (release/microbenchmark, ray_perf.py): each row is the mean of 4 trials of at least 2 s after a
// 1 s warm-up (--quick: 1 trial of 1 s after 0.3 s), with the standard deviation, beside Ray's published figure
// (64-vCPU m5.16xlarge).
using System.Diagnostics;
using RaySharp;

var quick = args.Contains("--quick");
var peers = args.Contains("--peers");
var measured = new Dictionary<string, double>(StringComparer.Ordinal);
var filter = args.FirstOrDefault(a => !a.StartsWith("--", StringComparison.Ordinal));
var trials = args.FirstOrDefault(a => a.StartsWith("--trials=", StringComparison.Ordinal)) is { } t ? int.Parse(t["--trials=".Length..], System.Globalization.CultureInfo.InvariantCulture) : quick ? 1 : 4;
// --each: every trial's rate on its own line too (for A/B comparisons on a noisy machine, where the median says more than the mean).
var each = args.Contains("--each");
var trialTime = TimeSpan.FromSeconds(quick ? 1 : 2);
var warmup = TimeSpan.FromSeconds(quick ? 0.3 : 1);

// The embedded cluster takes this token, so that the second node of the transfer row can join it.
if (Environment.GetEnvironmentVariable("RAYSHARP_CLUSTER_TOKEN") is not { Length: > 0 })
    Environment.SetEnvironmentVariable("RAYSHARP_CLUSTER_TOKEN", Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32)));
using var ray = Ray.Init();
Console.WriteLine($"RaySharp core microbenchmarks, embedded cluster of {Environment.ProcessorCount} CPUs; {trials} trial(s) of {trialTime.TotalSeconds:0.#} s");
Console.WriteLine($"{"benchmark",-52} {"RaySharp/s",14} {"± sd",10} {"Ray/s",10} {"ratio",8}");

var noop = Ray.Task(NoOp);
var put0 = Ray.Put(0);
// Small values stay in the owner's memory and only values above 100 KiB go to the node's shared-memory store (Ray puts
// every value in plasma): the small-object rows measure that design, the gigabytes rows the shared-memory store.
Run("single_client_get_calls_Plasma_Store", 10_394, () => { Ray.Get(put0); return 1; });
Run("single_client_put_calls_Plasma_Store", 5_238, () => { Ray.Put(0); return 1; });
var putSmall = Ray.Task(PutSmall);
Run("multi_client_put_calls_Plasma_Store", 12_280, () => { Ray.Get(Enumerable.Range(0, 10).Select(_ => putSmall.Remote()).ToList()); return 10_000; });
// As ray_perf: an 800 MiB array of 64-bit integers per put, counted as 0.8 GB.
long[]? large = new long[100 * 1024 * 1024];
Array.Fill(large, 1L);
Run("single_client_put_gigabytes", 20.9, () => { Ray.Put(large); return 1; }, scale: 0.8);
// As ray_perf: 10 tasks, each putting an 80 MiB int64 array 10 times (0.08 GB per put).
var putLargeTen = Ray.Task(PutLargeTen);
Run("multi_client_put_gigabytes", 41.0, () => { Ray.Get(Enumerable.Range(0, 10).Select(_ => putLargeTen.Remote()).ToList()); return 1; }, scale: 10 * 10 * 0.08);
large = null;
MeasureTransfer();
Run("single_client_tasks_and_get_batch", 7.99, () => { Ray.Get(Enumerable.Range(0, 1000).Select(_ => noop.Remote()).ToList()); return 1; });
// A RaySharp ref caches its value once read, so each round puts the list again: put + get of an object holding 10k
// refs (each written with its small value), where Ray's row gets the same ref again and again.
var tenThousandRefs = Enumerable.Range(0, 10_000).Select(_ => Ray.Put(1)).ToList();
Run("single_client_get_object_containing_10k_refs", 13.2, () => Ray.Get(Ray.Put(tenThousandRefs)).Count == 10_000 ? 1 : 0);
Run("single_client_wait_1k_refs", 5.18, () =>
{
    var refs = Enumerable.Range(0, 1000).Select(_ => noop.Remote()).ToList();
    Ray.Wait(refs, numReturns: refs.Count);
    return 1;
});
Run("single_client_tasks_sync", 952, () => { Ray.Get(noop.Remote()); return 1; });
Run("single_client_tasks_async", 7_691, () => { Ray.Get(Enumerable.Range(0, 1000).Select(_ => noop.Remote()).ToList()); return 1000; });
// As ray_perf: 4 actors each submitting 10,000 no-op tasks and getting them (per round; --quick: 1,000).
var taskClients = Enumerable.Range(0, 4).Select(_ => Ray.Actor(() => new BenchTaskClient()).Remote()).ToList();
var perClient = quick ? 1_000 : 10_000;
Run("multi_client_tasks_async", 22_009, () => Ray.Get(taskClients.Select(c => c.SubmitBatch(perClient)).ToList()).Sum());
// Actor rows, as ray_perf.py runs them; n = CPUs / 2 actors for the 1:n and n:n rows (1 on 2 CPUs, as Ray's script would).
var actor = Ray.Actor(() => new BenchActor()).Remote();
Run("1_1_actor_calls_sync", 1_950, () => { Ray.Get(actor.SmallValue()); return 1; });
// Not one of Ray's rows: one call at a time, awaited instead of waited for (async code's way, and the peers' 1:1 sync).
Run("1_1_actor_calls_awaited", double.NaN, () => { AwaitEach(actor, 100).GetAwaiter().GetResult(); return 100; });
Run("1_1_actor_calls_async", 7_956, () => { Ray.Get(Enumerable.Range(0, 1000).Select(_ => actor.SmallValue()).ToList()); return 1000; });
var concurrent = Ray.Actor(() => new BenchActor(), new ActorOptions { MaxConcurrency = 16 }).Remote();
Run("1_1_actor_calls_concurrent", 5_304, () => { Ray.Get(Enumerable.Range(0, 1000).Select(_ => concurrent.SmallValue()).ToList()); return 1000; });
var nCpu = Math.Max(1, Environment.ProcessorCount / 2);
var targets = Enumerable.Range(0, nCpu).Select(_ => Ray.Actor(() => new BenchActor()).Remote()).ToArray();
var client = Ray.Actor((ActorHandle<BenchActor>[] a) => new BenchClient(a)).Remote(targets);
Run("1_n_actor_calls_async", 8_575, () => Ray.Get(client.SmallValueBatch(5000)));
Run("n_n_actor_calls_async", 27_277, () => Ray.Get(Enumerable.Range(0, 4).Select(_ => Ray.Task<ActorHandle<BenchActor>[], int, int>(CallActors).Remote(targets, 5000)).ToList()).Sum());
var clients = targets.Select(t => Ray.Actor((ActorHandle<BenchActor>[] a) => new BenchClient(a)).Remote(new[] { t })).ToList();
Run("n_n_actor_calls_with_arg_async", 2_632, () => Ray.Get(clients.Select(c => c.SmallValueBatchArg(1000)).ToList()).Sum());
// Not one of Ray's rows: the peers' n:n shape, for a like-for-like comparison (ray_perf's n:n above has its callers in
// worker processes of their own): 2 callers in this process, each with its own actor and 1000 calls in flight.
var pipelinedTargets = Enumerable.Range(0, 2).Select(_ => Ray.Actor(() => new BenchActor()).Remote()).ToArray();
Run("n_n_actor_calls_pipelined", double.NaN, () => Task.WhenAll(pipelinedTargets.Select(a => Task.Run(() =>
{
    Ray.Get(Enumerable.Range(0, 1000).Select(_ => a.SmallValue()).ToList());
    return 1000;
}))).GetAwaiter().GetResult().Sum());
var asyncActor = Ray.Actor(() => new BenchAsyncActor()).Remote();
Run("1_1_async_actor_calls_sync", 1_438, () => { Ray.Get(asyncActor.SmallValueAsync()); return 1; });
Run("1_1_async_actor_calls_async", 4_785, () => { Ray.Get(Enumerable.Range(0, 1000).Select(_ => asyncActor.SmallValueAsync()).ToList()); return 1000; });
// As ray_perf: 100 groups of one bundle each (a sliver of CPU here; Ray's row uses a custom resource), each waited for
// up to 30 s, then all removed; the rate counts groups.
Run("placement_group_create/removal", 791, () =>
{
    var groups = Enumerable.Range(0, 100).Select(_ => Ray.PlacementGroup([new Dictionary<string, double> { ["CPU"] = 0.001 }], PlacementStrategy.Pack)).ToList();
    foreach (var group in groups)
        if (!group.Wait(TimeSpan.FromSeconds(30))) throw new InvalidOperationException($"placement group {group.Id} was not created within 30 s");
    foreach (var group in groups) Ray.RemovePlacementGroup(group);
    return groups.Count;
});
if (filter is null || "lightweight_actors_created_and_called_once".Contains(filter, StringComparison.Ordinal))
{
    var lightweight = Stopwatch.StartNew();
    var many = Enumerable.Range(0, quick ? 1000 : 10_000).Select(_ => Ray.Actor(() => new BenchActor(), new ActorOptions { Lightweight = true }).Remote()).ToList();
    Ray.Get(many.Select(a => a.SmallValue()).ToList());
    Console.WriteLine($"{"lightweight_actors_created_and_called_once",-52} {many.Count / lightweight.Elapsed.TotalSeconds,14:N2} {"",10} {550,10:N2} {many.Count / lightweight.Elapsed.TotalSeconds / 550,8:N2}   ({many.Count} actors; Ray: ~550 actors/s on 64 nodes)");
}
if (peers) ComparePeers();
return 0;

// Not one of Ray's rows: a second node joins the embedded cluster (same machine, its own raylet and store, reached
// over TCP), and tasks there read objects put here, zero-copy once local, so the time is the pull. Loopback TCP
// bandwidth, measured in the same run, is the ceiling.
void MeasureTransfer()
{
    const string row = "object_transfer_between_nodes (GB/s)";
    if (filter is not null && !row.Contains(filter, StringComparison.Ordinal)) return;
    // One folder up when `raysharp microbenchmark` runs this program from the CLI's microbenchmark/ folder, else in the repository's build output.
    var cli = Path.Combine(AppContext.BaseDirectory, "..", "RaySharp.Cli.dll");
    if (!File.Exists(cli)) cli = Path.Combine(RepoRoot(), "artifacts", "bin", "RaySharp.Cli", "release", "RaySharp.Cli.dll");
    if (!File.Exists(cli))
    {
        Console.WriteLine($"{row,-52} {"missing",14}   (build src/RaySharp.Cli first)");
        return;
    }
    var tempDir = Path.Combine(Path.GetTempPath(), "raysharp-bench-node2-" + Environment.ProcessId);
    RunCli(cli, "start", $"--address={Ray.GcsAddress}", "--num-cpus=1", "--resources={\"bench_node2\": 1}", "--temp-dir", tempDir);
    try
    {
        var onNode2 = new TaskOptions { Resources = new Dictionary<string, double> { ["bench_node2"] = 1 } };
        var length = Ray.Task(static (ReadOnlyMemory<long> xs) => xs.Length, onNode2);
        Ray.Get(length.Remote((ReadOnlyMemory<long>)new long[1]));
        var count = quick ? 25 * 1024 * 1024 : 100 * 1024 * 1024;
        var data = new long[count];
        Array.Fill(data, 3L);
        var rates = new List<double>();
        for (var t = 0; t < (quick ? 2 : 6); t++)
        {
            var r = Ray.Put<ReadOnlyMemory<long>>(data);
            var sw = Stopwatch.StartNew();
            if (Ray.Get(length.Remote(r)) != count) throw new InvalidOperationException("the remote task saw a different object");
            rates.Add(count * 8.0 / sw.Elapsed.TotalSeconds / 1e9);
        }
        rates.RemoveAt(0); // the first pull also maps fresh pages on node 2
        var mean = rates.Average();
        var sd = Math.Sqrt(rates.Sum(x => (x - mean) * (x - mean)) / rates.Count);
        var tcp = LoopbackTcpGBps(quick ? 256L << 20 : 2L << 30);
        Console.WriteLine($"{row,-52} {mean,14:N2} {sd,10:N2} {"",10} {"",8}   ({count * 8L >> 20} MiB objects; loopback TCP {tcp:N2} GB/s: {mean / tcp:P0} of it)");
    }
    finally
    {
        RunCli(cli, "stop", "--force", "--temp-dir", tempDir);
        try { Directory.Delete(tempDir, recursive: true); } catch (IOException) { }
    }
}

static void RunCli(string cli, params string[] arguments)
{
    var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
    psi.ArgumentList.Add(cli);
    foreach (var a in arguments) psi.ArgumentList.Add(a);
    using var process = Process.Start(psi)!;
    var output = process.StandardOutput.ReadToEndAsync();
    var error = process.StandardError.ReadToEnd();
    process.WaitForExit();
    if (process.ExitCode != 0) throw new InvalidOperationException($"raysharp {string.Join(' ', arguments)} failed: {error}{output.Result}");
}

static double LoopbackTcpGBps(long bytes)
{
    using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
    listener.Start();
    var port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
    var receiver = Task.Run(() =>
    {
        using var socket = listener.AcceptSocket();
        var buffer = new byte[4 << 20];
        long received = 0;
        while (received < bytes)
        {
            var n = socket.Receive(buffer);
            if (n == 0) break;
            received += n;
        }
    });
    using var sender = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
    sender.Connect(System.Net.IPAddress.Loopback, port);
    var chunk = new byte[4 << 20];
    var sw = Stopwatch.StartNew();
    long sent = 0;
    while (sent < bytes) sent += sender.Send(chunk);
    receiver.Wait();
    return bytes / sw.Elapsed.TotalSeconds / 1e9;
}

// The peers run as separate programs (their own processes and dependencies) and report through a JSON file.
void ComparePeers()
{
    var shapes = new[] { ("1_1_sync", "1_1_actor_calls_sync"), ("1_1_pipelined", "1_1_actor_calls_async"), ("n_n", "n_n_actor_calls_pipelined") };
    var results = new Dictionary<string, Dictionary<string, double>>();
    foreach (var peer in new[] { "Orleans", "Akka" })
    {
        var dll = Path.Combine(RepoRoot(), "artifacts", "bin", $"RaySharp.Bench.{peer}", "release", $"RaySharp.Bench.{peer}.dll");
        if (!File.Exists(dll))
        {
            Console.WriteLine($"{peer}: missing ({dll} not built: dotnet build bench/RaySharp.Bench.{peer} -c Release)");
            continue;
        }
        var json = Path.GetTempFileName();
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true };
        foreach (var a in new[] { dll, "--json", json }.Concat(quick ? ["--quick"] : [])) psi.ArgumentList.Add(a);
        using (var process = Process.Start(psi)!)
        {
            process.StandardOutput.ReadToEnd();
            process.WaitForExit();
        }
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(json));
        File.Delete(json);
        results[peer] = doc.RootElement.EnumerateArray().ToDictionary(e => e.GetProperty("name").GetString()!, e => e.GetProperty("mean").GetDouble());
    }
    Console.WriteLine();
    Console.WriteLine("Peers, same machine, same call shapes (calls/s; RaySharp: the actor rows above)");
    Console.WriteLine($"{"shape",-16} {"RaySharp",12} {"Orleans",12} {"Akka.NET",12} {"vs Orleans",11} {"vs Akka",9}");
    foreach (var (shape, row) in shapes)
    {
        var ours = measured.GetValueOrDefault(row);
        string Cell(string peer) => results.TryGetValue(peer, out var r) && r.TryGetValue(shape, out var v) ? v.ToString("N0", System.Globalization.CultureInfo.InvariantCulture) : "missing";
        string Ratio(string peer) => ours > 0 && results.TryGetValue(peer, out var r) && r.TryGetValue(shape, out var v) && v > 0 ? (ours / v).ToString("N2", System.Globalization.CultureInfo.InvariantCulture) : "";
        Console.WriteLine($"{shape,-16} {(ours > 0 ? ours.ToString("N0", System.Globalization.CultureInfo.InvariantCulture) : "missing"),12} {Cell("Orleans"),12} {Cell("Akka"),12} {Ratio("Orleans"),11} {Ratio("Akka"),9}");
    }
}

static string RepoRoot()
{
    for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        if (File.Exists(Path.Combine(dir.FullName, "RaySharp.slnx"))) return dir.FullName;
    return Directory.GetCurrentDirectory();
}

void Run(string name, double rayFigure, Func<int> op, double scale = 1)
{
    if (filter is not null && !name.Contains(filter, StringComparison.Ordinal)) return;
    var end = Stopwatch.StartNew();
    while (end.Elapsed < warmup) op();
    var rates = new List<double>();
    var costs = new List<string>();
    for (var t = 0; t < trials; t++)
    {
        long n = 0;
        var before = MachineCounters.Read();
        var allocatedBefore = GC.GetTotalAllocatedBytes();
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < trialTime) n += op();
        rates.Add(n * scale / sw.Elapsed.TotalSeconds);
        if (each && before is not null && MachineCounters.Read() is { } after)
            costs.Add($"{(after.ContextSwitches - before.ContextSwitches) / (double)n:F1}cs/{(after.CpuSeconds - before.CpuSeconds) * 1e6 / n:F0}us/{(GC.GetTotalAllocatedBytes() - allocatedBefore) / (double)n:F0}B");
    }
    var mean = rates.Average();
    var sd = Math.Sqrt(rates.Sum(r => (r - mean) * (r - mean)) / rates.Count);
    measured[name] = mean;
    if (each)
    {
        var sorted = rates.Order().ToList();
        Console.WriteLine($"  {name} trials: {string.Join(' ', rates.Select(r => r.ToString("F0", System.Globalization.CultureInfo.InvariantCulture)))}; median {sorted[sorted.Count / 2]:F0}, best {sorted[^1]:F0}");
        // Per operation, machine-wide (the machine is otherwise idle): context switches and CPU time of every process.
        if (costs.Count > 0) Console.WriteLine($"    per op: {string.Join(' ', costs)}");
    }
    // NaN: a row of our own, with no Ray figure to compare with.
    Console.WriteLine(double.IsNaN(rayFigure)
        ? $"{name,-52} {mean,14:N2} {sd,10:N2}"
        : $"{name,-52} {mean,14:N2} {sd,10:N2} {rayFigure,10:N2} {mean / rayFigure,8:N2}");
}

static int NoOp() => 0;

static int PutLargeTen()
{
    var array = new long[10 * 1024 * 1024];
    for (var i = 0; i < 10; i++) Ray.Put(array);
    return 0;
}

static int PutSmall()
{
    for (var i = 0; i < 1000; i++) Ray.Put(0);
    return 0;
}

static async Task AwaitEach(ActorHandle<BenchActor> actor, int n)
{
    for (var i = 0; i < n; i++) await actor.SmallValue();
}

static int CallActors(ActorHandle<BenchActor>[] actors, int n) =>
    Ray.Get(Enumerable.Range(0, n).Select(i => actors[i % actors.Length].SmallValue()).ToList()).Length;

/// <summary>Machine-wide context switches and busy CPU time since boot, from /proc/stat (Linux); null elsewhere.</summary>
internal sealed record MachineCounters(long ContextSwitches, double CpuSeconds)
{
    public static MachineCounters? Read()
    {
        if (!File.Exists("/proc/stat")) return null;
        long switches = 0;
        double busy = 0;
        foreach (var line in File.ReadLines("/proc/stat"))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f[0] == "ctxt") switches = long.Parse(f[1], System.Globalization.CultureInfo.InvariantCulture);
            // cpu user nice system idle iowait irq softirq steal: busy = all but idle and iowait, in clock ticks (100/s).
            else if (f[0] == "cpu") busy = f.Skip(1).Take(8).Select((v, i) => i is 3 or 4 ? 0 : long.Parse(v, System.Globalization.CultureInfo.InvariantCulture)).Sum() / 100.0;
        }
        return new MachineCounters(switches, busy);
    }
}

public sealed class BenchActor
{
    public int SmallValue() => 0;

    public int SmallValueArg(int x) => 0;
}

/// <summary>ray_perf.py's multi-client task submitter: an actor that submits tasks and gets them.</summary>
public sealed class BenchTaskClient
{
    public int SubmitBatch(int n) => Ray.Get(Enumerable.Range(0, n).Select(_ => Ray.Task(Zero).Remote()).ToList()).Length;

    private static int Zero() => 0;
}

public sealed class BenchAsyncActor
{
    public Task<int> SmallValueAsync() => Task.FromResult(0);
}

/// <summary>ray_perf.py's Client: an actor that calls other actors.</summary>
public sealed class BenchClient(ActorHandle<BenchActor>[] actors)
{
    public int SmallValueBatch(int n) =>
        Ray.Get(actors.SelectMany(a => Enumerable.Range(0, n).Select(_ => a.SmallValue())).ToList()).Length;

    public int SmallValueBatchArg(int n)
    {
        var x = Ray.Put(0);
        return Ray.Get(actors.SelectMany(a => Enumerable.Range(0, n).Select(_ => a.SmallValueArg(x))).ToList()).Length;
    }
}
