// Usage: RaySharp.TestDriver <scenario> [address]
using RaySharp;

var scenario = args[0];
// The nested scenario runs on a single CPU: it only finishes if a worker blocked in Get lends its CPU back.
using var ray = Ray.Init(args.Length > 1 && args[1] != "embedded" ? args[1] : null, new RayInitOptions
{
    NumCpus = scenario == "nested" ? 1 : null,
    Namespace = Environment.GetEnvironmentVariable("TESTDRIVER_NAMESPACE"),
});
switch (scenario)
{
    case "types":
        Console.WriteLine("int " + Ray.Get(Ray.Task<int, int, int>(Add).Remote(20, 22)));
        Console.WriteLine("string " + Ray.Get(Ray.Task<string, int, string>(Repeat).Remote("ab", 3)));
        Console.WriteLine("array " + string.Join(",", Ray.Get(Ray.Task<int[], int[]>(Reverse).Remote(new[] { 1, 2, 3 }))));
        var moved = Ray.Get(Ray.Task<Point, int, Point>(Move).Remote(new Point(1, 2, "p"), 10));
        Console.WriteLine($"record {moved}");
        var nested = Ray.Get(Ray.Task<Dictionary<string, List<Point>>, Dictionary<string, int>>(Count).Remote(
            new Dictionary<string, List<Point>> { ["a"] = [new(1, 1, "x"), new(2, 2, "y")], ["b"] = [] }));
        Console.WriteLine("nested " + string.Join(",", nested.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key}={kv.Value}")));
        Console.WriteLine("lambda " + Ray.Get(Ray.Task(static (double x) => x * 1.5).Remote(4)));
        Console.WriteLine("async " + Ray.Get(Ray.Task<int, int>(SquareLaterAsync).Remote(9)));
        Console.WriteLine("await " + await Ray.Task<int, int, int>(Add).Remote(1, 2));
        Console.WriteLine("zero-arg " + Ray.Get(Ray.Task(NodeIp).Remote()));
        // Method groups with parameters, typed by the generated overloads: no type arguments.
        Console.WriteLine("method-group " + Ray.Get(Ray.Task(Add).Remote(40, 2)) + " " + Ray.Get(Ray.Task(Move).Remote(new Point(0, 0, "g"), 1)));
        Console.WriteLine("method-group-async " + Ray.Get(Ray.Task(SquareLaterAsync).Remote(3)));
        break;
    case "errors":
        try
        {
            Ray.Get(Ray.Task<int, int>(Fail).Remote(7));
        }
        catch (RayTaskException e)
        {
            Console.WriteLine($"task-exception {e.RemoteExceptionType} | {e.RemoteMessage} | {e.NodeIpAddress} | stack has Fail: {e.RemoteStackTrace.Contains("Fail")}");
        }
        try
        {
            var unserializable = new Func<int>(() => 1);
            _ = Ray.Task<Func<int>, int>(Call).Remote(unserializable);
        }
        catch (ArgumentException e)
        {
            Console.WriteLine("bad-argument " + e.Message);
        }
        try
        {
            var captured = 5;
            _ = Ray.Task(() => captured).Remote();
        }
        catch (ArgumentException e)
        {
            Console.WriteLine("capturing-lambda " + e.Message);
        }
        try
        {
            // A task that takes 2 s, read with a 1 ms timeout: a no-op task can answer within 1 ms on a quiet machine.
            Ray.Get(Ray.Task<int, int>(SleepThenReturn).Remote(2000), TimeSpan.FromMilliseconds(1));
            Console.WriteLine("timeout none");
        }
        catch (GetTimeoutException e)
        {
            Console.WriteLine("timeout " + e.Message);
        }
        // The worker that threw is still usable.
        Console.WriteLine("after-error " + Ray.Get(Ray.Task<int, int, int>(Add).Remote(2, 3)));
        break;
    case "placement":
        // First, on workers that have run nothing yet: an actor that asked for no GPU sees none, whatever its worker
        // inherited (a task run before would have cleared it already).
        foreach (var node in Ray.Nodes().Where(n => n.Alive).OrderBy(n => n.NodeIpAddress, StringComparer.Ordinal))
        {
            var probe = Ray.Actor(() => new GpuProbe(), new ActorOptions { Strategy = SchedulingStrategy.NodeAffinity(node.NodeId) }).Remote();
            Console.WriteLine("actor-cuda-none " + Ray.Get(probe.Call(p => p.Seen())));
        }
        var special = new TaskOptions { Resources = new Dictionary<string, double> { ["special"] = 1 } };
        var onSpecial = Ray.Get(Enumerable.Range(0, 20).Select(_ => Ray.Task(NodeIp, special).Remote())).ToHashSet();
        Console.WriteLine("special " + string.Join(",", onSpecial));
        var gpu = new TaskOptions { NumGpus = 1 };
        var onGpu = Ray.Get(Enumerable.Range(0, 10).Select(_ => Ray.Task(NodeIp, gpu).Remote())).ToHashSet();
        Console.WriteLine("gpu " + string.Join(",", onGpu));
        Console.WriteLine("cuda " + string.Join(",", Ray.Get(Enumerable.Range(0, 4).Select(_ => Ray.Task(VisibleGpus, gpu).Remote())).ToHashSet()));
        // The nodes were started with CUDA_VISIBLE_DEVICES set, so their workers inherit it: a task that asked for no
        // GPU must see it cleared, on every node (on the GPU node, by a worker that may just have run a GPU task).
        foreach (var node in Ray.Nodes().Where(n => n.Alive).OrderBy(n => n.NodeIpAddress, StringComparer.Ordinal))
        {
            var there = new TaskOptions { Strategy = SchedulingStrategy.NodeAffinity(node.NodeId) };
            var seen = Ray.Get(Enumerable.Range(0, 4).Select(_ => Ray.Task(NodeIpAndVisibleGpus, there).Remote())).ToHashSet();
            Console.WriteLine("cuda-none " + string.Join(",", seen.Order(StringComparer.Ordinal)));
        }
        break;
    case "objects":
        var put = Ray.Put(41);
        Console.WriteLine("put-get " + Ray.Get(put));
        Console.WriteLine("put-arg " + Ray.Get(Ray.Task<int, int, int>(Add).Remote(put, 1)));
        var inner = Ray.Task<int, int, int>(Add).Remote(1, 2);
        Console.WriteLine("chained " + Ray.Get(Ray.Task<int, int, int>(Add).Remote(inner, Ray.Put(10))));
        var point = Ray.Put(new Point(3, 4, "put"));
        Console.WriteLine("put-record " + Ray.Get(Ray.Task<Point, int, Point>(Move).Remote(point, 1)));
        var slow = Ray.Task<int, int>(SleepThenReturn).Remote(3000);
        var fast = Ray.Task<int, int>(SleepThenReturn).Remote(10);
        var (ready, notReady) = Ray.Wait([slow, fast], numReturns: 1, timeout: TimeSpan.FromSeconds(10));
        Console.WriteLine($"wait-1 ready={string.Join(",", ready.Select(r => Ray.Get(r)))} not-ready={notReady.Count}");
        var (ready2, notReady2) = Ray.Wait([slow, fast], numReturns: 2, timeout: TimeSpan.FromMilliseconds(200));
        Console.WriteLine($"wait-timeout ready={ready2.Count} not-ready={notReady2.Count}");
        var (ready3, _) = Ray.Wait([slow, fast], numReturns: 2);
        Console.WriteLine($"wait-all ready={string.Join(",", ready3.Select(r => Ray.Get(r)))}");
        var failed = Ray.Task<int, int>(Fail).Remote(1);
        try
        {
            Ray.Get(Ray.Task<int, int, int>(Add).Remote(failed, 1));
        }
        catch (RayTaskException e)
        {
            Console.WriteLine("dependency-failed " + e.RemoteMessage);
        }
        Console.WriteLine("context " + (Ray.Get(Ray.Task(Context).Remote()) == $"{Ray.JobId} True True"));
        // Refs inside a value stay refs: the task gets them unresolved and reads them itself (borrowing), even two hops on.
        var parts = new List<ObjectRef<int>> { Ray.Put(1), Ray.Task<int, int, int>(Add).Remote(1, 1), Ray.Put(3) };
        Console.WriteLine("nested-refs " + Ray.Get(Ray.Task<List<ObjectRef<int>>, int>(SumRefs).Remote(parts)));
        Console.WriteLine("nested-refs-forwarded " + Ray.Get(Ray.Task<List<ObjectRef<int>>, int>(ForwardRefs).Remote(parts)));
        // Refs a task returns inside its result (owned by the worker that made them) are readable by the driver.
        var returned = Ray.Get(Ray.Task<int, List<ObjectRef<int>>>(MakeRefs).Remote(4));
        Console.WriteLine("returned-refs " + Ray.Get(returned).Sum());
        var returnedLarge = Ray.Get(Ray.Task<int, ObjectRef<double[]>>(PutLarge).Remote(1_000_000));
        Console.WriteLine("returned-large-ref " + Ray.Get(returnedLarge).Length);
        break;
    case "spread":
        // Three tasks that each wait until all three run, so each holds its own lease: the default policy packs
        // them all on this (lightly used) node, SPREAD puts each on the least used node.
        string RunTogether(TaskOptions options)
        {
            var barrier = Directory.CreateTempSubdirectory("raysharp-spread-").FullName;
            try
            {
                return string.Join(",", Ray.Get(Enumerable.Range(0, 3).Select(_ => Ray.Task(NodeIpWhenAllRun, options).Remote(barrier, 3))).ToHashSet().Order(StringComparer.Ordinal));
            }
            finally
            {
                Directory.Delete(barrier, recursive: true);
            }
        }
        Console.WriteLine("default " + RunTogether(new TaskOptions()));
        // The default run's leases are returned shortly after it: until then they count as use of this node, and
        // even the default policy would spread. Wait until every CPU of the cluster is free again.
        var idleBy = DateTime.UtcNow.AddSeconds(60);
        while (Ray.AvailableResources().GetValueOrDefault("CPU") < Ray.ClusterResources()["CPU"] && DateTime.UtcNow < idleBy) Thread.Sleep(50);
        Console.WriteLine("spread " + RunTogether(new TaskOptions { Strategy = SchedulingStrategy.Spread }));
        var target = Ray.Nodes().Where(n => n.Alive).OrderBy(n => n.NodeIpAddress).Last();
        var pinned = new TaskOptions { Strategy = SchedulingStrategy.NodeAffinity(target.NodeId) };
        Console.WriteLine("affinity " + string.Join(",", Ray.Get(Enumerable.Range(0, 10).Select(_ => Ray.Task(NodeIp, pinned).Remote())).ToHashSet()));
        break;
    case "many":
        var many = Enumerable.Range(0, 10_000).Select(i => Ray.Task(static (int x) => x).Remote(i)).ToList();
        Console.WriteLine($"many {Ray.Get(many).Length} sum {Ray.Get(many).Sum(x => (long)x)}");
        break;
    case "large":
        // 100 MiB each way: correctness before the object store makes it cheap.
        var big = Enumerable.Range(0, 13_107_200).Select(i => (double)(i % 1000)).ToArray();
        var expected = ContentHash.Of(big);
        Console.WriteLine("large-arg " + (Ray.Get(Ray.Task<double[], string>(HashArray).Remote(big)) == expected));
        Console.WriteLine("large-put-arg " + (Ray.Get(Ray.Task<double[], string>(HashArray).Remote(Ray.Put(big))) == expected));
        var made = Ray.Get(Ray.Task<int, double[]>(MakeArray).Remote(13_107_200));
        Console.WriteLine($"large-result {made.Length} {ContentHash.Of(made) == expected}");
        break;
    case "nested":
        Console.WriteLine("nested " + Ray.Get(Ray.Task<int, int>(SumOfSquares).Remote(5)));
        try
        {
            Ray.Get(Ray.Task<int, int>(Outer).Remote(1));
        }
        catch (RayTaskException e)
        {
            Console.WriteLine($"nested-error {e.RemoteExceptionType} | inner: {e.Message.Contains("inner failure")} {e.Message.Contains("System.ArgumentOutOfRangeException")}");
        }
        break;
    case "stream":
        // Returns only once the test has seen this task's first line on the driver's console: output must stream.
        Console.WriteLine("stream done " + Ray.Get(Ray.Task<string, int>(WaitForFile).Remote(args[2])));
        break;
    case "output":
        Console.WriteLine("chatty returned " + Ray.Get(Ray.Task<int, int>(Chatty).Remote(2)));
        // Output of a task's own tasks reaches the driver too, with the nested task's prefix.
        Console.WriteLine("outer returned " + Ray.Get(Ray.Task(static () => Ray.Get(Ray.Task<int, int>(Chatty).Remote(1)) + 1, new TaskOptions { Name = "Outer" }).Remote()));
        break;
    case "failures":
        var marker = Path.Combine(Path.GetTempPath(), "raysharp-crash-once-" + Guid.NewGuid().ToString("N"));
        Console.WriteLine("retried " + Ray.Get(Ray.Task<string, string>(CrashOnce).Remote(marker)));
        try
        {
            Ray.Get(Ray.Task(CrashAlways, new TaskOptions { MaxRetries = 1 }).Remote());
        }
        catch (WorkerCrashedException e)
        {
            Console.WriteLine($"gave-up {e.GetType().Name} attempts={e.Attempts} " + e.Message.Replace('\n', ' '));
        }
        // Exceptions are retried only when asked, and only those asked for.
        string Flaky(TaskOptions options, int failures)
        {
            var counter = Path.Combine(Path.GetTempPath(), "raysharp-flaky-" + Guid.NewGuid().ToString("N"));
            try
            {
                return "ok " + Ray.Get(Ray.Task(ThrowIOExceptionTimes, options).Remote(counter, failures)) + $" attempts={File.ReadAllLines(counter).Length}";
            }
            catch (RayTaskException e)
            {
                return $"failed {e.RemoteExceptionType} attempts={File.ReadAllLines(counter).Length}";
            }
            finally
            {
                File.Delete(counter);
            }
        }
        Console.WriteLine("retry-exceptions " + Flaky(new TaskOptions { RetryExceptions = true }, 2));
        Console.WriteLine("no-retry-exceptions " + Flaky(new TaskOptions(), 2));
        Console.WriteLine("retry-listed " + Flaky(new TaskOptions { RetryExceptionTypes = [typeof(SystemException)] }, 1));
        Console.WriteLine("retry-unlisted " + Flaky(new TaskOptions { RetryExceptionTypes = [typeof(TimeoutException)] }, 1));
        Console.WriteLine("retry-budget " + Flaky(new TaskOptions { RetryExceptions = true, MaxRetries = 1 }, 5));
        var impossible = Ray.Task(NodeIp, new TaskOptions { Resources = new Dictionary<string, double> { ["unobtainium"] = 1 } }).Remote();
        var (done, waiting) = Ray.Wait([impossible], numReturns: 1, timeout: TimeSpan.FromSeconds(6));
        Console.WriteLine($"infeasible ready={done.Count} waiting={waiting.Count}");
        Console.Out.Flush();
        Environment.Exit(0); // the infeasible task never finishes; leave without waiting for it
        break;
    default:
        if (ActorScenarios.Run(scenario, args) is { } code) return code;
        if (ObjectStoreScenarios.Run(scenario, args) is { } storeCode) return storeCode;
        if (FaultToleranceScenarios.Run(scenario, args) is { } faultCode) return faultCode;
        if (SecurityScenarios.Run(scenario) is { } securityCode) return securityCode;
        if (PartitionScenarios.Run(scenario) is { } partitionCode) return partitionCode;
        if (LifecycleScenarios.Run(scenario, args) is { } lifecycleCode) return lifecycleCode;
        if (OrderingScenarios.Run(scenario) is { } orderCode) return orderCode;
        if (AutoscalerScenarios.Run(scenario, args) is { } autoscalerCode) return autoscalerCode;
        if (PlacementGroupScenarios.Run(scenario) is { } placementGroupCode) return placementGroupCode;
        Console.Error.WriteLine("unknown scenario " + scenario);
        return 2;
}
return 0;

static int Add(int a, int b) => a + b;
static string Repeat(string s, int n) => string.Concat(Enumerable.Repeat(s, n));
static int[] Reverse(int[] xs) => xs.Reverse().ToArray();
static Point Move(Point p, int by) => p with { X = p.X + by, Y = p.Y + by };
static Dictionary<string, int> Count(Dictionary<string, List<Point>> groups) => groups.ToDictionary(g => g.Key, g => g.Value.Sum(p => p.X));
static async Task<int> SquareLaterAsync(int x)
{
    await Task.Delay(10);
    return x * x;
}
static string NodeIp() => Ray.NodeIpAddress;
static string VisibleGpus() => Environment.GetEnvironmentVariable("CUDA_VISIBLE_DEVICES") ?? "";
static string NodeIpAndVisibleGpus() => $"{Ray.NodeIpAddress}=[{VisibleGpus()}]";
static string CrashOnce(string marker)
{
    if (!File.Exists(marker))
    {
        File.WriteAllText(marker, "crashed once");
        Environment.Exit(3);
    }
    File.Delete(marker);
    return "after a crash";
}
static int SumOfSquares(int n) => Ray.Get(Enumerable.Range(1, n).Select(i => Ray.Task<int, int>(Square).Remote(i))).Sum();
static int Square(int x) => x * x;
static int Outer(int x) => Ray.Get(Ray.Task<int, int>(Middle).Remote(x));
static int Middle(int x) => Ray.Get(Ray.Task<int, int>(Inner).Remote(x));
static int Inner(int x) => throw new ArgumentOutOfRangeException(nameof(x), "inner failure");
static int WaitForFile(string path)
{
    Console.WriteLine("waiting for " + path);
    while (!File.Exists(path)) Thread.Sleep(50);
    Console.WriteLine("released");
    return 1;
}
static string HashArray(double[] values) => ContentHash.Of(values);
static double[] MakeArray(int n) => Enumerable.Range(0, n).Select(i => (double)(i % 1000)).ToArray();
static int SumRefs(List<ObjectRef<int>> refs) => Ray.Get(refs).Sum();
static List<ObjectRef<int>> MakeRefs(int n)
{
    var refs = Enumerable.Range(1, n).Select(i => i % 2 == 0 ? Ray.Put(i) : Ray.Task<int, int, int>(Add).Remote(i, 0)).ToList();
    Ray.Get(refs);
    return refs;
}
static ObjectRef<double[]> PutLarge(int n) => Ray.Put(Enumerable.Range(0, n).Select(i => (double)i).ToArray());
static int ForwardRefs(List<ObjectRef<int>> refs) => Ray.Get(Ray.Task<List<ObjectRef<int>>, int>(SumRefs).Remote(refs)) * 10;
static int Chatty(int lines)
{
    for (var i = 0; i < lines; i++) Console.WriteLine($"hello {i} from a task");
    Console.Error.WriteLine("a warning from a task");
    return lines;
}
static int ThrowIOExceptionTimes(string counter, int failures)
{
    File.AppendAllText(counter, "attempt\n");
    if (File.ReadAllLines(counter).Length <= failures) throw new IOException("flaky on purpose");
    return 42;
}
static int CrashAlways()
{
    Environment.Exit(4);
    return 0;
}
static string NodeIpWhenAllRun(string barrier, int count)
{
    File.WriteAllText(Path.Combine(barrier, Guid.NewGuid().ToString("N")), "");
    var deadline = DateTime.UtcNow.AddSeconds(60);
    while (Directory.GetFiles(barrier).Length < count)
    {
        if (DateTime.UtcNow > deadline) return "never-ran-together";
        Thread.Sleep(20);
    }
    return Ray.NodeIpAddress;
}
static int Fail(int x) => throw new InvalidOperationException($"task failed on purpose with {x}");
static int Call(Func<int> f) => f();
static int SleepThenReturn(int ms)
{
    Thread.Sleep(ms);
    return ms;
}
static string Context() => $"{Ray.JobId} {Ray.NodeId is not null} {Ray.WorkerId is not null}";

public sealed record Point(int X, int Y, string Label);
