// Usage: dotnet run -c Release --project bench/RaySharp.Bench.Scale -- [filter] [--quick]
// Scale tests (minutes, not hours), as Ray's single-node scalability benchmarks (release/benchmarks/single_node): each
// row prints its time and the peak memory (VmHWM) of every process of the embedded cluster so far. --quick: a tenth of
// each size, for CI.
using System.Diagnostics;
using System.Globalization;
using RaySharp;

var quick = args.Contains("--quick");
var filter = args.FirstOrDefault(a => !a.StartsWith("--", StringComparison.Ordinal));
var scale = quick ? 10 : 1;
// --pg-actors=N: how many of the many_placement_groups row's groups get an actor. Ray's many_pgs puts one in each, but
// here each is a worker process of its own (~70 MiB resident), so the default is one per group up to one per 100 MiB
// of the machine's available memory (--quick: 20).
var pgActors = args.FirstOrDefault(a => a.StartsWith("--pg-actors=", StringComparison.Ordinal)) is { } pa
    ? int.Parse(pa["--pg-actors=".Length..], CultureInfo.InvariantCulture)
    : quick ? 20 : (int)(Status(Environment.ProcessId, "MemAvailable:", "/proc/meminfo") / 1024 / 100);

using var ray = Ray.Init();
Console.WriteLine($"RaySharp scale tests, embedded cluster of {Environment.ProcessorCount} CPUs{(quick ? " (--quick: sizes / 10)" : "")}");
Console.WriteLine($"{"test",-40} {"size",12} {"seconds",9} {"Ray (64 vCPU)",14}   peak memory (MiB)");

Row("tasks_queued_on_one_node", 1_000_000 / scale, 184, n =>
{
    var noop = Ray.Task(Zero);
    var refs = new List<ObjectRef<int>>(n);
    for (var i = 0; i < n; i++) refs.Add(noop.Remote());
    return Ray.Get(refs).Length == n;
});
Row("object_args_to_one_task", 10_000 / scale, 17.2, n =>
{
    // Ray passes 10,000 refs as arguments; RaySharp tasks take up to 3 parameters, so the refs travel in one list
    // (nested refs) and the task reads them all.
    var refs = Enumerable.Range(0, n).Select(i => Ray.Put(i)).ToList();
    return Ray.Get(Ray.Task<List<ObjectRef<int>>, long>(SumAll).Remote(refs)) == (long)n * (n - 1) / 2;
});
Row("returns_from_one_task", 3_000 / scale, null, n =>
{
    var returned = Ray.Get(Ray.Task<int, List<ObjectRef<int>>>(MakeRefs).Remote(n));
    return Ray.Get(returned).Length == n;
});
Row("get_objects_in_one_call", 10_000 / scale, null, n =>
{
    var refs = Enumerable.Range(0, n).Select(i => Ray.Put(new byte[1024])).ToList();
    return Ray.Get(refs).Length == n;
});
Row("largest_object_that_fits_bytes", 0, null, _ =>
{
    // Doubling from 128 MiB up to the largest .NET array (2 GiB - 1 byte), each put, read back and checked.
    long largest = 0;
    for (long size = 128L << 20; ; size = Math.Min(size * 2, Array.MaxLength))
    {
        var data = new byte[size];
        data[^1] = 7;
        try
        {
            var back = Ray.Get(Ray.Put(data));
            if (back.Length != size || back[^1] != 7) break;
            largest = size;
        }
        catch (ObjectStoreFullException e)
        {
            Console.WriteLine($"    {size >> 20} MiB does not fit: {e.Message}");
            break;
        }
        if (size == Array.MaxLength || (quick && size >= 256L << 20)) break;
    }
    Console.WriteLine($"    largest: {largest:N0} bytes ({largest / (double)(1L << 30):0.00} GiB)");
    return largest > 0;
});
Row("lightweight_actors_on_one_node", 50_000 / scale, null, n =>
{
    var actors = new List<ActorHandle<Counter>>(n);
    for (var i = 0; i < n; i++) actors.Add(Ray.Actor(() => new Counter(), new ActorOptions { Lightweight = true }).Remote());
    return Ray.Get(actors.Select(a => a.Next()).ToList()).All(v => v == 1);
});
Row("many_placement_groups", 1_000 / scale, null, n =>
{
    // As Ray's many_pgs: groups of 3 bundles created at once and waited for, an actor in a bundle of each, one call to
    // every actor, then every group removed (which ends its actor). Bundles take a sliver of CPU (0.0002: 3,000 of them
    // hold 0.6 of the node's 2) so that all fit one node.
    var bundle = new Dictionary<string, double> { ["CPU"] = 0.0002 };
    var step = Stopwatch.StartNew();
    var groups = Enumerable.Range(0, n).Select(_ => Ray.PlacementGroup([bundle, bundle, bundle], PlacementStrategy.Pack)).ToList();
    foreach (var group in groups)
        if (!group.Wait(TimeSpan.FromMinutes(2))) throw new TimeoutException($"placement group {group.Id} was not created within 2 minutes");
    Console.WriteLine($"    {n:N0} groups of 3 bundles created in {step.Elapsed.TotalSeconds:0.00} s");
    step.Restart();
    var withActors = groups.Take(Math.Min(n, pgActors)).ToList();
    var actors = withActors.Select((g, i) => Ray.Actor(() => new Counter(),
        new ActorOptions { Strategy = SchedulingStrategy.PlacementGroup(g, bundleIndex: i % 3) }).Remote()).ToList();
    var answered = Ray.Get(actors.Select(a => a.Next()).ToList()).All(v => v == 1);
    Console.WriteLine($"    {actors.Count:N0} actors in them created and called in {step.Elapsed.TotalSeconds:0.00} s   ({PeakMemory()})");
    step.Restart();
    foreach (var group in groups) Ray.RemovePlacementGroup(group);
    Console.WriteLine($"    all removed in {step.Elapsed.TotalSeconds:0.00} s");
    return answered && Ray.PlacementGroups().Count == 0;
});
return 0;

void Row(string name, int size, double? raySeconds, Func<int, bool> run)
{
    if (filter is not null && !name.Contains(filter, StringComparison.Ordinal)) return;
    var clock = Stopwatch.StartNew();
    bool ok;
    try
    {
        ok = run(size);
    }
    catch (Exception e)
    {
        Console.WriteLine($"{name,-40} failed: {e.GetType().Name}: {e.Message}");
        return;
    }
    var seconds = clock.Elapsed.TotalSeconds;
    var ray = raySeconds is { } r ? r.ToString("0.0", CultureInfo.InvariantCulture) + " s" : "—";
    Console.WriteLine($"{name,-40} {(size > 0 ? size.ToString("N0", CultureInfo.InvariantCulture) : ""),12} {seconds,9:0.00} {ray,14}   {PeakMemory()}{(ok ? "" : "   WRONG RESULT")}");
}

// VmHWM of this driver and of every process under it (the embedded cluster's GCS, raylet and workers).
static string PeakMemory()
{
    var children = new Dictionary<int, List<int>>();
    foreach (var dir in Directory.EnumerateDirectories("/proc"))
    {
        if (!int.TryParse(Path.GetFileName(dir), out var pid)) continue;
        try
        {
            var ppidLine = File.ReadLines(Path.Combine(dir, "status")).FirstOrDefault(l => l.StartsWith("PPid:", StringComparison.Ordinal));
            if (ppidLine is null) continue;
            var ppid = int.Parse(ppidLine[5..].Trim(), CultureInfo.InvariantCulture);
            if (!children.TryGetValue(ppid, out var list)) children[ppid] = list = [];
            list.Add(pid);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
    var peaks = new List<(string Name, long Mib)>();
    var stack = new Stack<int>([Environment.ProcessId]);
    while (stack.Count > 0)
    {
        var pid = stack.Pop();
        var peak = Status(pid, "VmHWM:");
        var cmdline = Cmdline(pid);
        var component = pid == Environment.ProcessId ? "driver"
            : cmdline.Contains(" gcs_server ", StringComparison.Ordinal) ? "gcs"
            : cmdline.Contains(" raylet ", StringComparison.Ordinal) ? "raylet"
            : cmdline.Contains(" worker ", StringComparison.Ordinal) ? "worker" : null;
        if (component is not null && peak > 0) peaks.Add((component, peak / 1024));
        foreach (var child in children.GetValueOrDefault(pid) ?? []) stack.Push(child);
    }
    var workers = peaks.Where(p => p.Name == "worker").ToList();
    var parts = peaks.Where(p => p.Name != "worker").Select(p => $"{p.Name} {p.Mib}").ToList();
    if (workers.Count > 0) parts.Add($"workers {workers.Count} × max {workers.Max(w => w.Mib)}");
    return string.Join(", ", parts);
}

static long Status(int pid, string key, string? file = null)
{
    try
    {
        var line = File.ReadLines(file ?? $"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith(key, StringComparison.Ordinal));
        return line is null ? 0 : long.Parse(line[key.Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
    }
    catch (IOException) { return 0; }
}

static string Cmdline(int pid)
{
    try { return " " + File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' '); }
    catch (IOException) { return ""; }
}

static int Zero() => 0;

static long SumAll(List<ObjectRef<int>> refs) => Ray.Get(refs).Sum(x => (long)x);

static List<ObjectRef<int>> MakeRefs(int n)
{
    var refs = Enumerable.Range(0, n).Select(i => Ray.Put(i)).ToList();
    return refs;
}

public sealed class Counter
{
    private int _value;

    public int Next() => ++_value;
}
