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
        var values = Enumerable.Range(0, 250_000).ToArray();
        var large = Ray.Put(values);
        var expected = ContentHash.Of(values);
        var other = Ray.Nodes().First(n => n.Alive && !n.IsHeadNode);
        var onOther = new TaskOptions { Strategy = SchedulingStrategy.NodeAffinity(other.NodeId) };
        Console.WriteLine($"before actor={Ray.Get(counter.Increment(1))} remote-intact={Ray.Get(Ray.Task(Hash, onOther).Remote(large)) == expected}");
        TestSignals.Signal("ready");
        // Throughout the attack: every call and task must still come back.
        var rounds = 0;
        while (!TestSignals.IsSignalled("attacked"))
        {
            Ray.Get(counter.Increment(1));
            if (Ray.Get(Ray.Task(Hash, onOther).Remote(large)) != expected) throw new InvalidOperationException("the value arrived changed");
            rounds++;
            Thread.Sleep(50);
        }
        Console.WriteLine($"during rounds={rounds} actor={Ray.Get(counter.Increment(0))}");
        Console.WriteLine($"after actor-ok={Ray.Get(counter.Increment(1)) == rounds + 2} remote-intact={Ray.Get(Ray.Task(Hash, onOther).Remote(large)) == expected}");
        return 0;
    }

    private static string Hash(int[] values) => ContentHash.Of(values);
}
