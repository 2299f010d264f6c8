using System.Diagnostics;
using RaySharp;

/// <summary>Actor scenarios of the test driver: each prints what it observed, one line per check.</summary>
internal static class ActorScenarios
{
    public static int? Run(string scenario, string[] args)
    {
        switch (scenario)
        {
            case "actors":
                Basics();
                return 0;
            case "actor-concurrency":
                Concurrency();
                return 0;
            case "actor-lifecycle":
                Lifecycle();
                return 0;
            case "named-create":
                var registry = Ray.Actor(() => new Registry(), new ActorOptions { Name = "registry", Lifetime = ActorLifetime.Detached }).Remote();
                Console.WriteLine("stored " + Ray.Get(registry.Set("answer", 42)));
                Console.WriteLine("named-duplicate " + Describe(() => Ray.Actor(() => new Registry(), new ActorOptions { Name = "registry" }).Remote()));
                var same = Ray.Actor(() => new Registry(), new ActorOptions { Name = "registry", GetIfExists = true }).Remote();
                Console.WriteLine("get-if-exists " + (same.ActorId == registry.ActorId));
                // Owned by this driver: it goes when the driver exits.
                var owned = Ray.Actor(() => new Counter(0), new ActorOptions { Name = "owned" }).Remote();
                Console.WriteLine("owned " + Ray.Get(owned.Increment(1)));
                return 0;
            case "named-lookup":
                var found = Ray.GetActor<Registry>("registry");
                Console.WriteLine("looked-up " + Ray.Get(found.Get("answer")) + " from " + Ray.Get(found.Call(r => r.CreatorPid)));
                Ray.Kill(found);
                Console.WriteLine("after-kill " + Describe(() => Ray.Get(found.Get("answer"))));
                Console.WriteLine("lookup-after-kill " + Describe(() => Ray.GetActor<Registry>("registry")));
                return 0;
            case "lightweight":
                Lightweight(int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture));
                return 0;
            case "actor-gc":
                // The kept actor exists before the dropped one: the collections that end the dropped one had every chance to end it too.
                var kept = Ray.Actor(() => new Counter(0)).Remote();
                var id = CreateAndDrop();
                var cause = "";
                for (var i = 0; i < 100 && cause.Length == 0; i++)
                {
                    GC.Collect();
                    GC.WaitForPendingFinalizers();
                    Thread.Sleep(100);
                    cause = Ray.ListActors().Single(a => a.ActorId == id).DeathCause ?? "";
                }
                Console.WriteLine("dropped-handle " + cause);
                Console.WriteLine("kept-handle " + Ray.Get(kept.Increment(1)));
                GC.KeepAlive(kept);
                return 0;
            case "actor-placement":
                Placement();
                return 0;
            case "dead-actors":
                // Five actors killed one after another and one alive, listed by the test while this driver runs.
                for (var i = 0; i < 5; i++)
                {
                    var doomed = Ray.Actor(() => new Counter(0), new ActorOptions { Name = $"dead-{i}" }).Remote();
                    Ray.Get(doomed.Increment(1));
                    Ray.Kill(doomed);
                }
                var alive = Ray.Actor(() => new Counter(0), new ActorOptions { Name = "alive" }).Remote();
                Console.WriteLine("alive " + Ray.Get(alive.Increment(1)));
                TestSignals.Signal("ready");
                TestSignals.WaitFor("listed");
                return 0;
            default:
                return null;
        }
    }

    private static string Describe(Action action)
    {
        try
        {
            action();
            return "no-exception";
        }
        catch (Exception e)
        {
            return $"{e.GetType().Name}: {e.Message.Split('\n')[0]}";
        }
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static string CreateAndDrop()
    {
        var counter = Ray.Actor(() => new Counter(0)).Remote();
        Ray.Get(counter.Increment(1));
        return counter.ActorId;
    }

    private static void Basics()
    {
        var counter = Ray.Actor((int start) => new Counter(start)).Remote(10);
        var refs = Enumerable.Range(0, 10_000).Select(_ => counter.Increment(1)).ToList();
        var values = Ray.Get(refs);
        Console.WriteLine($"ordered {values.SequenceEqual(Enumerable.Range(11, 10_000))} last {values[^1]}");
        Console.WriteLine("lambda " + Ray.Get(counter.Call(c => c.Value)));
        Console.WriteLine("lambda-arg " + Ray.Get(counter.Call((Counter c, int by) => c.Increment(by), 5)));
        Console.WriteLine("ref-arg " + Ray.Get(counter.Increment(Ray.Put(100))));
        Console.WriteLine("async-method " + Ray.Get(counter.IncrementLaterAsync(1)));
        Console.WriteLine("void-method " + (Ray.Get(counter.Reset()) is null) + " " + Ray.Get(counter.Call(c => c.Value)));
        try
        {
            Ray.Get(counter.Fail("boom"));
        }
        catch (RayTaskException e)
        {
            Console.WriteLine($"method-exception {e.RemoteExceptionType} {e.RemoteMessage}");
        }
        Console.WriteLine("alive-after-exception " + Ray.Get(counter.Increment(2)));

        // Four tasks share one handle: each adds 10 to the same counter.
        var shared = Ray.Actor(() => new Counter(0)).Remote();
        Ray.Get(Enumerable.Range(0, 4).Select(_ => Ray.Task<ActorHandle<Counter>, int, int>(AddThroughHandle).Remote(shared, 10)).ToList());
        Console.WriteLine("shared-handle " + Ray.Get(shared.Call(c => c.Value)));

        var broken = Ray.Actor(() => new Broken()).Remote();
        Console.WriteLine("constructor " + Describe(() => Ray.Get(broken.Ping())));
        Ray.Kill(counter);
        Console.WriteLine("killed " + Describe(() => Ray.Get(counter.Increment(1))));

        var slow = Ray.Actor(() => new Sleeper(), new ActorOptions { MaxPendingCalls = 2 }).Remote();
        var pending = new[] { slow.Sleep(300), slow.Sleep(300) };
        Console.WriteLine("pending-limit " + Describe(() => slow.Sleep(1)));
        // Answered, so the sleeper is surely alive (not still being created) when the actors are listed.
        Ray.Get(pending);

        var actors = Ray.ListActors();
        Console.WriteLine("listed " + string.Join(",", actors.GroupBy(a => a.State).OrderBy(g => g.Key).Select(g => $"{g.Key}={g.Count()}")));
    }

    private static int AddThroughHandle(ActorHandle<Counter> counter, int times)
    {
        for (var i = 0; i < times; i++) Ray.Get(counter.Increment(1));
        return times;
    }

    private static void Concurrency()
    {
        var waiter = Ray.Actor(() => new AsyncWaiter()).Remote();
        Ray.Get(waiter.WaitAsync(1));
        // 100 calls that each wait until all 100 are inside: they finish released only if they interleave.
        var released = Ray.Get(Enumerable.Range(0, 100).Select(_ => waiter.WaitForAllAsync(100)).ToList()).Count(r => r);
        Console.WriteLine($"async-interleaved {released} of 100 max-inside {Ray.Get(waiter.Call(w => w.MaxInside))}");

        // An async actor's calls interleave at their awaits but never run in parallel: no call ever finds another inside
        // a stretch of synchronous code. The control leaves the actor's context after its first await, so its calls do
        // run in parallel: it shows the probe can see it.
        var probe = Ray.Actor(() => new OverlapProbe()).Remote();
        Ray.Get(Enumerable.Range(0, 100).Select(_ => probe.RunAsync(20, false)).ToList());
        var control = Ray.Actor(() => new OverlapProbe()).Remote();
        Ray.Get(Enumerable.Range(0, 100).Select(_ => control.RunAsync(20, true)).ToList());
        Console.WriteLine($"async-parallel overlaps {Ray.Get(probe.Call(p => p.Overlaps))} control-overlaps-seen {Ray.Get(control.Call(p => p.Overlaps)) > 0}");

        // Nine calls gathered three at a time: they finish released only if three run at once, and never more than three do.
        var threaded = Ray.Actor(() => new Sleeper(), new ActorOptions { MaxConcurrency = 3 }).Remote();
        var gathered = Ray.Get(Enumerable.Range(0, 9).Select(_ => threaded.Gather(3)).ToList()).Count(r => r);
        Console.WriteLine($"threaded-gathered {gathered} of 9 max " + Ray.Get(threaded.Call(s => s.MaxInside)));
        var serial = Ray.Actor(() => new Sleeper()).Remote();
        Ray.Get(Enumerable.Range(0, 4).Select(_ => serial.Sleep(50)).ToList());
        Console.WriteLine("serial-max " + Ray.Get(serial.Call(s => s.MaxInside)));
    }

    private static void Lifecycle()
    {
        var restartable = Ray.Actor(() => new Counter(0), new ActorOptions { MaxRestarts = 1 }).Remote();
        var firstPid = Ray.Get(restartable.Pid());
        Ray.Get(restartable.Increment(5));
        Ray.Kill(restartable, noRestart: false);
        // Calls after the kill wait for the restarted actor: a fresh process with fresh state.
        Console.WriteLine($"restarted {Ray.Get(restartable.Pid()) != firstPid} value {Ray.Get(restartable.Call(c => c.Value))}");
        Ray.Kill(restartable, noRestart: false);
        Console.WriteLine("restarts-used " + Describe(() => Ray.Get(restartable.Pid())));
        // A call interrupted by the actor's death is sent again to the restarted actor within MaxTaskRetries...
        var retrying = Ray.Actor(() => new Counter(0), new ActorOptions { MaxRestarts = 1, MaxTaskRetries = 1 }).Remote();
        Console.WriteLine("retried-call " + Ray.Get(retrying.CrashOnce(Marker())));
        // ...and fails without it (at-most-once), while the actor itself comes back for later calls.
        var fragile = Ray.Actor(() => new Counter(0), new ActorOptions { MaxRestarts = 1 }).Remote();
        Console.WriteLine("unretried-call " + Describe(() => Ray.Get(fragile.CrashOnce(Marker()))));
        Console.WriteLine("after-restart " + Ray.Get(fragile.Increment(1)));
        var crash = Ray.Actor(() => new Counter(0)).Remote();
        Ray.Get(crash.Increment(1));
        Console.WriteLine("worker-died " + Describe(() => Ray.Get(crash.Crash())));
        Console.WriteLine("states " + string.Join(",", Ray.ListActors().Select(a => a.State).Distinct().Order()));
    }

    private static string Marker() => Path.Combine(Path.GetTempPath(), "raysharp-actor-crash-" + Guid.NewGuid().ToString("N"));

    private static void Lightweight(int count)
    {
        var clock = Stopwatch.StartNew();
        var actors = Enumerable.Range(0, count).Select(i => Ray.Actor((int start) => new Counter(start), new ActorOptions { Lightweight = true }).Remote(i)).ToList();
        var values = Ray.Get(actors.Select(a => a.Increment(1)).ToList());
        var pids = Ray.Get(actors.Select(a => a.Pid()).ToList()).Distinct().Count();
        Console.WriteLine($"lightweight {count} correct {values.SequenceEqual(Enumerable.Range(1, count))} processes {pids} seconds {clock.Elapsed.TotalSeconds:0.0}");
        Ray.Kill(actors[0]);
        Console.WriteLine("lightweight-killed " + Describe(() => Ray.Get(actors[0].Increment(1))) + " neighbour " + Ray.Get(actors[1].Increment(1)));
        Console.WriteLine("lightweight-bad " + Describe(() => Ray.Actor(() => new Counter(0), new ActorOptions { Lightweight = true, NumCpus = 1 }).Remote()));
    }

    private static void Placement()
    {
        var gpu = Ray.Actor(() => new Counter(0), new ActorOptions { NumGpus = 1 }).Remote();
        Console.WriteLine($"gpu-actor {Ray.Get(gpu.Call(c => Ray.NodeIpAddress))} {Ray.Get(gpu.Call(c => Environment.GetEnvironmentVariable("CUDA_VISIBLE_DEVICES") ?? ""))}");
        var custom = Ray.Actor(() => new Counter(0), new ActorOptions { Resources = new Dictionary<string, double> { ["special"] = 1 } }).Remote();
        Console.WriteLine("custom-actor " + Ray.Get(custom.Call(c => Ray.NodeIpAddress)));
        var shared = Ray.Actor(() => new Counter(0)).Remote();
        var ips = Ray.Get(Enumerable.Range(0, 4).Select(_ => Ray.Task<ActorHandle<Counter>, string>(IncrementFromTask, new TaskOptions { Strategy = SchedulingStrategy.Spread })
            .Remote(shared)).ToList());
        Console.WriteLine($"handle-in-tasks {Ray.Get(shared.Call(c => c.Value))} task-nodes {ips.Distinct().Count()}");
    }

    private static string IncrementFromTask(ActorHandle<Counter> counter)
    {
        Thread.Sleep(200);
        Ray.Get(counter.Increment(1));
        return Ray.NodeIpAddress;
    }
}

public sealed class Counter(int start)
{
    public int Value { get; private set; } = start;

    public int Increment(int by) => Value += by;

    public async Task<int> IncrementLaterAsync(int by)
    {
        await Task.Delay(5);
        return Value += by;
    }

    public void Reset() => Value = 0;

    public int Fail(string message) => throw new InvalidOperationException(message);

    public int Pid() => Environment.ProcessId;

    /// <summary>Kills its own process the first time (leaving a marker file), answers afterwards.</summary>
    public string CrashOnce(string marker)
    {
        if (File.Exists(marker))
        {
            File.Delete(marker);
            return "survived";
        }
        File.WriteAllText(marker, "");
        Environment.FailFast("a test crash of an actor's process");
        return "unreachable";
    }

    public int Crash()
    {
        Environment.FailFast("a test crash of an actor's process");
        return 0;
    }
}

public sealed class Broken
{
    public Broken() => throw new FormatException("no config");

    public int Ping() => 1;
}

public sealed class Registry
{
    private readonly Dictionary<string, int> _values = [];

    public int CreatorPid { get; } = Environment.ProcessId;

    public int Set(string key, int value) => _values[key] = value;

    public int Get(string key) => _values[key];
}

public sealed class Sleeper
{
    private int _inside;

    public int MaxInside { get; private set; }

    public int Sleep(int ms)
    {
        var now = Interlocked.Increment(ref _inside);
        lock (this) MaxInside = Math.Max(MaxInside, now);
        Thread.Sleep(ms);
        Interlocked.Decrement(ref _inside);
        return ms;
    }

    private int _entered;
    private DateTime? _deadline;

    /// <summary>Waits until the group of <paramref name="size"/> calls it entered with is all inside; false if that never happened.</summary>
    public bool Gather(int size)
    {
        var now = Interlocked.Increment(ref _inside);
        bool released;
        lock (this)
        {
            MaxInside = Math.Max(MaxInside, now);
            var target = (_entered / size + 1) * size;
            _entered++;
            _deadline ??= DateTime.UtcNow.AddSeconds(30);
            Monitor.PulseAll(this);
            while (_entered < target && DateTime.UtcNow < _deadline) Monitor.Wait(this, _deadline.Value - DateTime.UtcNow);
            released = _entered >= target;
        }
        Interlocked.Decrement(ref _inside);
        return released;
    }
}

public sealed class AsyncWaiter
{
    private int _inside;

    public int MaxInside { get; private set; }

    public async Task<int> WaitAsync(int ms)
    {
        MaxInside = Math.Max(MaxInside, ++_inside); // no lock: an async actor's calls never run in parallel
        await Task.Delay(ms);
        _inside--;
        return ms;
    }

    private readonly TaskCompletionSource _allInside = new();
    private DateTime? _deadline;

    /// <summary>Waits until <paramref name="count"/> calls are inside at once; false if that never happened.</summary>
    public async Task<bool> WaitForAllAsync(int count)
    {
        MaxInside = Math.Max(MaxInside, ++_inside);
        if (_inside >= count) _allInside.TrySetResult();
        _deadline ??= DateTime.UtcNow.AddSeconds(30);
        var left = _deadline.Value - DateTime.UtcNow;
        var released = left > TimeSpan.Zero && await Task.WhenAny(_allInside.Task, Task.Delay(left)) == _allInside.Task;
        _inside--;
        return released || _allInside.Task.IsCompleted;
    }
}

/// <summary>Catches two calls inside synchronous code at once, which an async actor must never allow.</summary>
public sealed class OverlapProbe
{
    private int _running;
    private int _overlaps;

    public int Overlaps => Volatile.Read(ref _overlaps);

    public async Task<int> RunAsync(int stretches, bool leaveContext)
    {
        for (var i = 0; i < stretches; i++)
        {
            if (Interlocked.Exchange(ref _running, 1) == 1) Interlocked.Increment(ref _overlaps);
            Thread.Sleep(1); // a stretch long enough that a call running in parallel lands inside it
            Volatile.Write(ref _running, 0);
            await Task.Delay(1).ConfigureAwait(!leaveContext);
        }
        return stretches;
    }
}
