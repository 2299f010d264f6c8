using RaySharp;

/// <summary>
/// A worker node cut off from the head by its link going down (not a process killed): what the driver on the head
/// sees before, during and after. It coordinates with the test through <see cref="TestSignals"/>.
/// </summary>
internal static class PartitionScenarios
{
    public static int? Run(string scenario)
    {
        if (scenario != "partition") return null;
        var worker = Ray.Nodes().Single(n => n.Alive && !n.IsHeadNode);
        var head = Ray.Nodes().Single(n => n.Alive && n.IsHeadNode);
        // Soft affinity: placed on the worker node, restarted on the head if that node is declared dead.
        var remote = Ray.Actor(() => new PartitionProbe(), new ActorOptions
        {
            Strategy = SchedulingStrategy.NodeAffinity(worker.NodeId, soft: true),
            MaxRestarts = 1,
            MaxTaskRetries = 1,
        }).Remote();
        var local = Ray.Actor(() => new PartitionProbe(), new ActorOptions { Strategy = SchedulingStrategy.NodeAffinity(head.NodeId) }).Remote();
        Console.WriteLine($"remote-before {Ray.Get(remote.Call(p => p.Step()))} on {Ray.Get(remote.Call(p => p.Where()))}");
        Console.WriteLine($"local-before {Ray.Get(local.Call(p => p.Step()))} on {Ray.Get(local.Call(p => p.Where()))}");
        TestSignals.Signal("ready");
        TestSignals.WaitFor("down");

        // Calls to the cut-off node's actor go out now; their fate is read after the link is back.
        var during = Enumerable.Range(0, 3).Select(_ => remote.Call(p => p.Step())).ToList();
        var pinned = Ray.Task(NodeIp, new TaskOptions { Strategy = SchedulingStrategy.NodeAffinity(worker.NodeId, soft: true) }).Remote();
        // Meanwhile everything that does not need that node goes on: nothing in this process waits on it.
        var answered = 0;
        for (var i = 0; i < 20; i++) answered += Ray.Get(local.Call(p => p.Step()), TimeSpan.FromSeconds(20)) > 0 ? 1 : 0;
        Console.WriteLine($"local-during {answered}");
        Console.WriteLine("task-during " + Ray.Get(Ray.Task(NodeIp, new TaskOptions { Strategy = SchedulingStrategy.NodeAffinity(head.NodeId) }).Remote(), TimeSpan.FromSeconds(20)));
        TestSignals.Signal("during-done");
        TestSignals.WaitFor("up");

        // Each call made during the partition completed or failed within its retry bound: none waits forever.
        foreach (var call in during)
        {
            try
            {
                Console.WriteLine("remote-during ok " + Ray.Get(call, TimeSpan.FromSeconds(120)));
            }
            catch (GetTimeoutException e)
            {
                Console.WriteLine("remote-during hung " + e.Message);
            }
            catch (RayException e)
            {
                Console.WriteLine($"remote-during failed {e.GetType().Name}: {e.Message}");
            }
        }
        try
        {
            Console.WriteLine("pinned-during ok " + Ray.Get(pinned, TimeSpan.FromSeconds(120)));
        }
        catch (GetTimeoutException e)
        {
            Console.WriteLine("pinned-during hung " + e.Message);
        }
        catch (RayException e)
        {
            Console.WriteLine($"pinned-during failed {e.GetType().Name}: {e.Message}");
        }
        // After the link is back the actor answers: on its node if that rejoined, else restarted on the head.
        Console.WriteLine($"remote-after {Ray.Get(remote.Call(p => p.Step()), TimeSpan.FromSeconds(120))} on {Ray.Get(remote.Call(p => p.Where()), TimeSpan.FromSeconds(120))}");
        // Once the test has seen the node rejoin, or be declared dead and its processes gone: where the actor is now.
        TestSignals.Signal("after-done");
        TestSignals.WaitFor("settled");
        Console.WriteLine($"remote-final on {Ray.Get(remote.Call(p => p.Where()), TimeSpan.FromSeconds(120))}");
        return 0;
    }

    private static string NodeIp() => Ray.NodeIpAddress;
}

/// <summary>Counts the calls it answers and says where it runs.</summary>
public sealed class PartitionProbe
{
    private int _steps;

    public int Step() => ++_steps;

    public string Where() => Ray.NodeIpAddress;
}
