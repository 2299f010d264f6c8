using RaySharp;

/// <summary>
/// The cluster's own driver while a host outside the cluster attacks its ports: it keeps an actor, an object in the
/// store and tasks on both nodes going, before, during and after, and says what it saw.
/// </summary>
internal static class SecurityScenarios
{
    public static int? Run(string scenario)
    {
        if (scenario != "guarded") return null;
        var counter = Ray.Actor(() => new Counter(0)).Remote();
        var large = Ray.Put(Enumerable.Range(0, 250_000).ToArray());
        var other = Ray.Nodes().First(n => n.Alive && !n.IsHeadNode);
        var onOther = new TaskOptions { Strategy = SchedulingStrategy.NodeAffinity(other.NodeId) };
        Console.WriteLine($"before actor={Ray.Get(counter.Increment(1))} remote-sum={Ray.Get(Ray.Task(Sum, onOther).Remote(large))}");
        TestSignals.Signal("ready");
        // Throughout the attack: every call and task must still come back.
        var rounds = 0;
        while (!TestSignals.IsSignalled("attacked"))
        {
            Ray.Get(counter.Increment(1));
            Ray.Get(Ray.Task(Sum, onOther).Remote(large));
            rounds++;
            Thread.Sleep(50);
        }
        Console.WriteLine($"during rounds={rounds} actor={Ray.Get(counter.Increment(0))}");
        Console.WriteLine($"after actor-ok={Ray.Get(counter.Increment(1)) == rounds + 2} remote-sum={Ray.Get(Ray.Task(Sum, onOther).Remote(large))}");
        return 0;
    }

    private static long Sum(int[] values) => values.Sum(v => (long)v);
}
