using RaySharp;

/// <summary>Ordering guarantees of actor calls, printed one line per check.</summary>
internal static class OrderingScenarios
{
    public static int? Run(string scenario)
    {
        switch (scenario)
        {
            case "restart-order":
                RestartOrder();
                return 0;
            default:
                return null;
        }
    }

    /// <summary>
    /// 300 calls sent at once to an actor that may restart and retry calls; the 100th kills its process the first time
    /// it runs. The restarted actor must run that call again and every later one in the order they were sent.
    /// </summary>
    private static void RestartOrder()
    {
        var crashMarker = Path.Combine(Path.GetTempPath(), "raysharp-order-crash-" + Guid.NewGuid().ToString("N"));
        var actor = Ray.Actor(() => new Sequencer(), new ActorOptions { MaxRestarts = 1, MaxTaskRetries = -1 }).Remote();
        var firstPid = Ray.Get(actor.Pid());
        var calls = Enumerable.Range(0, 300).Select(i => actor.Record(i, i == 100 ? crashMarker : "")).ToList();
        var seen = Ray.Get(calls);
        File.Delete(crashMarker);
        Console.WriteLine($"restarted {Ray.Get(actor.Pid()) != firstPid} restarts {Ray.ListActors().Single(a => a.ActorId == actor.ActorId).NumRestarts}");
        Console.WriteLine($"answers {seen.Length} wrong {Enumerable.Range(0, seen.Length).Count(i => seen[i].Message != i)}");
        var disordered = seen.Where(e => e.Previous != -1 && e.Previous != e.Message - 1).Select(e => $"{e.Previous}->{e.Message}").ToList();
        Console.WriteLine($"out-of-order {disordered.Count} {string.Join(",", disordered.Take(10))}".TrimEnd());
        // The message each incarnation ran first: 0 in the first, the crashing one in the second.
        Console.WriteLine("incarnation-starts " + string.Join(",", seen.Where(e => e.Previous == -1).Select(e => e.Message)));
    }
}

/// <summary>Answers each numbered call with its number and the number of the call it ran before (-1: none yet).</summary>
public sealed class Sequencer
{
    private int _previous = -1;

    public int Pid() => Environment.ProcessId;

    /// <summary>Kills its own process the first time it finds a <paramref name="crashMarker"/> not yet written.</summary>
    public Echoed Record(int n, string crashMarker)
    {
        if (crashMarker.Length > 0 && !File.Exists(crashMarker))
        {
            File.WriteAllText(crashMarker, "");
            Environment.FailFast("a test crash of an actor's process in the middle of a stream of calls");
        }
        var answer = new Echoed(n, _previous);
        _previous = n;
        return answer;
    }
}
