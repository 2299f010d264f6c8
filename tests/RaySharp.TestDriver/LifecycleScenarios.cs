using RaySharp;

/// <summary>Scenarios about the lifetimes of drivers and workers.</summary>
internal static class LifecycleScenarios
{
    public static int? Run(string scenario, string[] args)
    {
        switch (scenario)
        {
            case "shutdown-pending":
                ShutdownPending();
                return 0;
            case "worker-pid":
                // Which worker process runs this job's task (the pool's reuse of workers across jobs).
                Console.WriteLine("worker-pid " + Ray.Get(Ray.Task(Pid).Remote()));
                return 0;
            case "actor-resolve":
                // The first call to a new actor waits for its address from the GCS (which the test makes fail).
                var actor = Ray.Actor(() => new Counter(0)).Remote();
                try
                {
                    Console.WriteLine("actor-answered " + Ray.Get(actor.Increment(1), TimeSpan.FromSeconds(60)));
                }
                catch (GetTimeoutException)
                {
                    Console.WriteLine("actor-hung");
                }
                return 0;
            case "code-retry":
                // The first task's worker fails to load this job's code (the test makes the GCS fail that read once);
                // the next task on the same worker (one CPU) must load it again rather than fail the same way.
                var attempts = new List<string>();
                for (var i = 0; i < 2; i++)
                {
                    try { attempts.Add("ok " + Ray.Get(Ray.Task(Pid, new TaskOptions { MaxRetries = 0 }).Remote())); }
                    catch (RayException e) { attempts.Add("failed " + e.GetType().Name); }
                }
                Console.WriteLine("code-attempts " + string.Join(" | ", attempts));
                return 0;
            case "copies-freed":
                CopiesFreed();
                return 0;
            case "crash-workers":
                // Workers that die one after another (each task kills its own process), for the raylet's bookkeeping.
                var crashed = 0;
                for (var i = 0; i < int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture); i++)
                {
                    try { Ray.Get(Ray.Task(Die, new TaskOptions { MaxRetries = 0 }).Remote()); }
                    catch (WorkerCrashedException) { crashed++; }
                }
                Console.WriteLine("crashed " + crashed);
                return 0;
            default:
                return null;
        }
    }

    private static int Pid() => Environment.ProcessId;

    /// <summary>
    /// An object put here is read by a task on the worker node (which pulls a copy into its store); then this driver
    /// drops its only ref and stays alive, so only the owner's free (not the end of the job) can remove that copy.
    /// </summary>
    private static void CopiesFreed()
    {
        var worker = Ray.Nodes().Single(n => n.Alive && !n.IsHeadNode);
        PutAndReadThere(worker.NodeId);
        TestSignals.Signal("copied");
        TestSignals.WaitFor("drop");
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        TestSignals.Signal("dropped");
        TestSignals.WaitFor("done");
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void PutAndReadThere(string nodeId)
    {
        var data = Enumerable.Range(0, 1 << 20).ToArray();
        var stored = Ray.Put(data);
        var there = new TaskOptions { Strategy = SchedulingStrategy.NodeAffinity(nodeId) };
        Console.WriteLine("read-there " + (Ray.Get(Ray.Task(HashOf, there).Remote(stored)) == ContentHash.Of(data)));
    }

    private static string HashOf(int[] values) => ContentHash.Of(values);

    private static int Die()
    {
        Environment.FailFast("a test crash of a worker");
        return 0;
    }

    /// <summary>What a driver's pending work becomes when it shuts down: every result fails at once, none is left waiting.</summary>
    private static void ShutdownPending()
    {
        var sleeper = Ray.Actor(() => new NapActor()).Remote();
        Ray.Get(sleeper.Call(s => s.Nap(0)));
        // A task and a call running, and more of each queued behind them.
        var tasks = Enumerable.Range(0, 8).Select(_ => Ray.Task(Nap).Remote(60_000)).ToList();
        var calls = Enumerable.Range(0, 3).Select(_ => sleeper.Call(s => s.Nap(60_000))).ToList();
        var waiters = tasks.Concat(calls).Select(r => Task.Run(async () => await r)).ToList();
        Ray.Shutdown();
        var settled = Task.WhenAll(waiters).ContinueWith(_ => { }, TaskScheduler.Default).Wait(TimeSpan.FromSeconds(30));
        Console.WriteLine($"settled {settled}");
        foreach (var group in waiters.GroupBy(w => w.Status == TaskStatus.Faulted ? w.Exception!.GetBaseException().GetType().Name : w.Status.ToString()))
            Console.WriteLine($"outcome {group.Count()} {group.Key}");
        var reasons = waiters.Where(w => w.IsFaulted).Count(w => w.Exception!.GetBaseException().Message.Contains("did not finish: this process shut down", StringComparison.Ordinal));
        Console.WriteLine($"with-reason {reasons}");
    }

    private static int Nap(int ms)
    {
        Thread.Sleep(ms);
        return ms;
    }
}

public sealed class NapActor
{
    public int Nap(int ms)
    {
        Thread.Sleep(ms);
        return ms;
    }
}

/// <summary>Says which GPUs its process sees, and where it runs.</summary>
public sealed class GpuProbe
{
    public string Seen() => $"{Ray.NodeIpAddress}=[{Environment.GetEnvironmentVariable("CUDA_VISIBLE_DEVICES")}]";
}
