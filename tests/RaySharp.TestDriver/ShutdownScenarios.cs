using RaySharp;

/// <summary>What a driver's pending work becomes when it shuts down: every result fails at once, none is left waiting.</summary>
internal static class ShutdownScenarios
{
    public static int? Run(string scenario)
    {
        if (scenario != "shutdown-pending") return null;
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
        return 0;
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
