using System.Reflection;
using RaySharp;

/// <summary>
/// Fault-tolerance scenarios of the test driver. They coordinate with the test through files in
/// <c>TESTDRIVER_SIGNAL_DIR</c>: the driver writes one when it reaches the point where the test injects the fault,
/// and waits for the test's file saying the fault is over.
/// </summary>
internal static class FaultToleranceScenarios
{
    public static int? Run(string scenario, string[] args)
    {
        switch (scenario)
        {
            case "gcs-restart":
                GcsRestart();
                return 0;
            case "chaos":
                Chaos();
                return 0;
            case "injected":
                Console.WriteLine("victim-retried " + Ray.Get(Ray.Task(InjectedVictim).Remote()));
                try
                {
                    Ray.Get(Ray.Task(InjectedVictim, new TaskOptions { MaxRetries = 0 }).Remote());
                    Console.WriteLine("victim-no-retries no-exception");
                }
                catch (WorkerCrashedException e)
                {
                    Console.WriteLine($"victim-no-retries {e.GetType().Name} attempts={e.Attempts}");
                }
                return 0;
            case "owner-died":
                OwnerDied();
                return 0;
            case "lineage":
                LineageAfterNodeDeath(args[2]);
                return 0;
            case "driver-drop":
                DriverDrop();
                return 0;
            default:
                return null;
        }
    }

    /// <summary>
    /// A detached actor and 200 tasks exist when the test kills the GCS; after its restart the tasks' results all
    /// arrive, the actor answers with its state, and new tasks and actors work.
    /// </summary>
    private static void GcsRestart()
    {
        var survivor = Ray.Actor(() => new Counter(0), new ActorOptions { Name = "survivor", Lifetime = ActorLifetime.Detached }).Remote();
        Console.WriteLine("actor-before " + Ray.Get(survivor.Increment(1)));
        var tasks = Enumerable.Range(0, 200).Select(i => Ray.Task(SlowSquare).Remote(i)).ToList();
        // Objects in the store: one put here, one a task made on the other node and read here (so this node holds a
        // copy, listed in the GCS's location table).
        var put = Ray.Put(Enumerable.Range(0, 200_000).ToArray());
        var other = Ray.Nodes().Single(n => n.Alive && !n.IsHeadNode);
        var made = Ray.Task(Seed, new TaskOptions { Strategy = SchedulingStrategy.NodeAffinity(other.NodeId) }).Remote(200_000);
        Console.WriteLine($"copied {Ray.Get(made).Length} object {made.Id}");
        TestSignals.Signal("submitted");
        // While the GCS is down (the test killed it and saw it unreachable): calls to a live actor go straight to its worker.
        TestSignals.WaitFor("gcs-down");
        Console.WriteLine("actor-during " + Ray.Get(survivor.Increment(1)));
        TestSignals.Signal("called-during");
        TestSignals.WaitFor("restarted");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var results = Ray.Get(tasks);
        var wrong = Enumerable.Range(0, 200).Count(i => results[i] != i * i);
        Console.WriteLine($"tasks {results.Length} wrong {wrong}");
        Console.WriteLine($"tasks done {clock.Elapsed.TotalSeconds:0.0} s after the restart");
        clock.Restart();
        Console.WriteLine("actor-after " + Ray.Get(survivor.Increment(1)));
        Console.WriteLine($"actor answered in {clock.Elapsed.TotalMilliseconds:0} ms after the restart");
        var lookedUp = Ray.GetActor<Counter>("survivor");
        Console.WriteLine("actor-lookup " + Ray.Get(lookedUp.Increment(1)));
        Console.WriteLine("new-tasks " + Ray.Get(Enumerable.Range(0, 20).Select(i => Ray.Task(SlowSquare).Remote(i))).Sum());
        var fresh = Ray.Actor(() => new Counter(5)).Remote();
        Console.WriteLine("new-actor " + Ray.Get(fresh.Increment(1)));
        Console.WriteLine("nodes " + Ray.Nodes().Count(n => n.Alive));
        var expectedObjects = ContentHash.Of(Enumerable.Range(0, 200_000).ToArray());
        Console.WriteLine($"objects {ContentHash.Of(Ray.Get(put)) == expectedObjects} {ContentHash.Of(Ray.Get(made)) == expectedObjects}");
    }

    /// <summary>
    /// 2,000 tasks that may be retried forever, and numbered messages to an actor that may restart forever, while the
    /// test kills and restarts worker nodes. Prints what came back wrong (nothing, when all is well).
    /// </summary>
    private static void Chaos()
    {
        // The actor first: placing it needs a free CPU, which the tasks would otherwise hold for their whole run.
        var echo = Ray.Actor(() => new Echo(), new ActorOptions
        {
            MaxRestarts = -1,
            MaxTaskRetries = -1,
            Resources = new Dictionary<string, double> { ["worker"] = 1 },
        }).Remote();
        var messages = new List<ObjectRef<Echoed>> { echo.Receive(0) };
        Ray.Get(messages[0]);
        var retryForever = new TaskOptions { MaxRetries = -1, Strategy = SchedulingStrategy.Spread };
        var tasks = Enumerable.Range(0, 2000).Select(i => Ray.Task(Compute, retryForever).Remote(i)).ToList();
        TestSignals.Signal("submitted");
        var n = 1;
        // Messages go on for as long as tasks run (at least 200 of them), so both see the nodes die.
        while (true)
        {
            var done = Ray.Wait(tasks, tasks.Count, TimeSpan.Zero).Ready.Count;
            if (done == tasks.Count && n >= 200) break;
            messages.Add(echo.Receive(n++));
            Thread.Sleep(25);
            if (n % 200 == 0) Console.WriteLine($"progress messages {n} tasks-done {done}");
        }
        var results = Ray.Get(tasks);
        Console.WriteLine($"tasks {results.Length} wrong {Enumerable.Range(0, results.Length).Count(i => results[i] != Expected(i))}");
        var echoed = Ray.Get(messages);
        Console.WriteLine($"messages {echoed.Length} wrong {Enumerable.Range(0, echoed.Length).Count(i => echoed[i].Message != i)}");
        // This driver is the actor's only caller, so each incarnation must run the messages in the order they were
        // sent: each one's predecessor there is the message before it, or none for the first an incarnation ran.
        var disordered = echoed.Where(e => e.Previous != -1 && e.Previous != e.Message - 1).Select(e => $"{e.Previous}->{e.Message}").ToList();
        Console.WriteLine($"out-of-order {disordered.Count} {string.Join(",", disordered.Take(10))}".TrimEnd());
        Console.WriteLine("incarnations " + echoed.Count(e => e.Previous == -1));
        Console.WriteLine("actor-restarts " + Ray.ListActors().Single(a => a.ActorId == echo.ActorId).NumRestarts);
    }

    /// <summary>
    /// A chain of three tasks whose large results all live on the victim node; once it is killed, reading the last
    /// result makes all three again elsewhere. A task pinned to the victim with no retries fails with NodeDiedException.
    /// </summary>
    private static void LineageAfterNodeDeath(string victimIp)
    {
        var victim = Ray.Nodes().Single(n => n.Alive && n.NodeIpAddress == victimIp);
        var there = new TaskOptions { Strategy = SchedulingStrategy.NodeAffinity(victim.NodeId, soft: true) };
        var a = Ray.Task(Seed, there).Remote(300_000);
        var b = Ray.Task(AddOne, there).Remote(a);
        var c = Ray.Task(AddOne, there).Remote(b);
        var doomedStarted = Path.Combine(Path.GetTempPath(), "raysharp-doomed-" + Guid.NewGuid().ToString("N"));
        var doomed = Ray.Task(SleepThenNodeIp, new TaskOptions { Strategy = SchedulingStrategy.NodeAffinity(victim.NodeId), MaxRetries = 0 }).Remote(doomedStarted, 120_000);
        // An object put by a task on the victim, its reference returned inside a list: no task made it, none can remake it.
        var putThere = Ray.Get(Ray.Task(PutInside, there).Remote(300_000))[0];
        var (ready, _) = Ray.Wait([c], 1, TimeSpan.FromSeconds(60));
        Console.WriteLine("chain-ready " + ready.Count);
        WaitForFile(doomedStarted, "the doomed task to start");
        File.Delete(doomedStarted);
        TestSignals.Signal("computed");
        TestSignals.WaitFor("killed");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var values = Ray.Get(c);
        Console.WriteLine($"chain length {values.Length} first {values[0]} last {values[^1]}");
        Console.WriteLine($"rebuilt in {clock.Elapsed.TotalSeconds:0.0} s after the kill");
        try
        {
            Ray.Get(doomed);
            Console.WriteLine("doomed no-exception");
        }
        catch (RayException e)
        {
            Console.WriteLine($"doomed {e.GetType().Name} attempts={(e as NodeDiedException)?.Attempts} {e.Message.Split('\n')[0]}");
        }
        try
        {
            Console.WriteLine("put-there " + Ray.Get(putThere).Length);
        }
        catch (RayException e)
        {
            Console.WriteLine($"put-there {e.GetType().Name}: {e.Message.Split('\n')[0]}");
        }
        // Stay until the cluster has declared the node dead, so the driver's notice of it is printed before exit.
        for (var i = 0; i < 300 && Ray.Nodes().Single(n => n.NodeId == victim.NodeId).Alive; i++) Thread.Sleep(100);
        Thread.Sleep(1000);
    }

    /// <summary>
    /// A task creates an object (it owns it), passes a reference to it inside a list to an actor, and dies before the
    /// value exists: the actor's read fails with OwnerDiedException.
    /// </summary>
    /// <summary>
    /// The driver's registration with the GCS drops while the driver lives on (closed here from inside, as a network
    /// blip would): the driver registers again, and its job and actor go on. Then the test kills it.
    /// </summary>
    private static void DriverDrop()
    {
        var counter = Ray.Actor(() => new Counter(0), new ActorOptions { Name = "kept", NumCpus = 1 }).Remote();
        Console.WriteLine("before " + Ray.Get(counter.Increment(1)));
        DropRegistration();
        TestSignals.Signal("dropped");
        TestSignals.WaitFor("kept");
        Console.WriteLine("after " + Ray.Get(counter.Increment(1)));
        TestSignals.Signal("answered");
        TestSignals.WaitFor("killed"); // the test kills this process with SIGKILL meanwhile
    }

    /// <summary>
    /// Closes the driver's registration connection (reaching into the process's runtime, CoreWorkerProcess.s_current:
    /// test only) and waits until it registered again.
    /// </summary>
    private static void DropRegistration()
    {
        var process = Type.GetType("RaySharp.CoreWorker.CoreWorkerProcess, RaySharp.CoreWorker", throwOnError: true)!;
        var runtime = process.GetField("s_current", BindingFlags.NonPublic | BindingFlags.Static)!.GetValue(null)
            ?? throw new InvalidOperationException("no core worker runtime in this driver process");
        var field = runtime.GetType().GetField("_driverConnection", BindingFlags.NonPublic | BindingFlags.Instance)!;
        var dropped = field.GetValue(runtime)!;
        ((IAsyncDisposable)dropped).DisposeAsync().AsTask().GetAwaiter().GetResult();
        var deadline = DateTime.UtcNow.AddMinutes(1);
        while (ReferenceEquals(field.GetValue(runtime), dropped))
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException("the driver did not register with the GCS again");
            Thread.Sleep(20);
        }
    }

    private static void OwnerDied()
    {
        var sink = Ray.Actor(() => new Sink()).Remote();
        try
        {
            Ray.Get(Ray.Task<ActorHandle<Sink>, int>(PassThenCrash, new TaskOptions { MaxRetries = 0 }).Remote(sink));
            Console.WriteLine("owner no-exception");
        }
        catch (WorkerCrashedException)
        {
            Console.WriteLine("owner crashed");
        }
        Console.WriteLine("borrower saw " + Ray.Get(sink.Outcome()));
    }

    private static int PassThenCrash(ActorHandle<Sink> sink)
    {
        var slow = Ray.Task(SleepThenReturn).Remote(30_000);
        var reading = Path.Combine(Path.GetTempPath(), "raysharp-sink-reading-" + Guid.NewGuid().ToString("N"));
        _ = sink.Consume(new List<ObjectRef<int>> { slow }, reading);
        WaitForFile(reading, "the sink to read the value"); // the sink is now waiting for the value from this process
        File.Delete(reading);
        Environment.Exit(1);
        return 0;
    }

    /// <summary>Waits, bounded, for a file another process writes when it reaches the point this one waits for.</summary>
    private static void WaitForFile(string path, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!File.Exists(path))
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"waited 60 s for {what}");
            Thread.Sleep(20);
        }
    }

    private static int SleepThenReturn(int ms)
    {
        Thread.Sleep(ms);
        return ms;
    }

    /// <summary>Killed on its first attempt by the test's RAYSHARP_testing_die_at.</summary>
    private static string InjectedVictim() => "survived";

    private static int[] Seed(int n)
    {
        Console.WriteLine($"ran Seed on {Ray.NodeIpAddress}");
        return Enumerable.Range(0, n).ToArray();
    }

    private static List<ObjectRef<int[]>> PutInside(int n) => [Ray.Put(Enumerable.Range(0, n).ToArray())];

    private static int[] AddOne(int[] values)
    {
        Console.WriteLine($"ran AddOne on {Ray.NodeIpAddress}");
        return values.Select(v => v + 1).ToArray();
    }

    private static string SleepThenNodeIp(string started, int ms)
    {
        File.WriteAllText(started, "");
        Thread.Sleep(ms);
        return Ray.NodeIpAddress;
    }

    private static int Expected(int i) => (i * 7919) % 10007;

    private static int Compute(int i)
    {
        Thread.Sleep(150);
        return Expected(i);
    }

    private static int SlowSquare(int i)
    {
        Thread.Sleep(100);
        return i * i;
    }
}

/// <summary>
/// An actor that answers each numbered message with its number, proving it arrived, and the number of the message it
/// ran before it (-1 for the first this incarnation ran), showing the order.
/// </summary>
public sealed class Echo
{
    private int _previous = -1;

    public int Received { get; private set; }

    public Echoed Receive(int n)
    {
        Received++;
        var answer = new Echoed(n, _previous);
        _previous = n;
        return answer;
    }
}

public sealed record Echoed(int Message, int Previous);

/// <summary>An actor that reads a reference it was given inside a list and remembers what happened.</summary>
public sealed class Sink
{
    private string _outcome = "nothing yet";

    public int Consume(List<ObjectRef<int>> refs, string reading)
    {
        try
        {
            File.WriteAllText(reading, "");
            var value = Ray.Get(refs[0]);
            _outcome = "value " + value;
            return value;
        }
        catch (RayException e)
        {
            _outcome = $"{e.GetType().Name}: {e.Message}";
            return -1;
        }
    }

    public string Outcome() => _outcome;
}
