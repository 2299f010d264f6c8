// Actors: stateful remote objects. Usage: Actors [address]  (no address: the local cluster, or an embedded one)
using System.Diagnostics;
using RaySharp;

using var ray = Ray.Init(args.Length > 0 ? args[0] : null);

// Any class is an actor; calls are typed by proxies generated at build time and run in the order they were made.
var counter = Ray.Actor((int start) => new Counter(start)).Remote(10);
var results = Ray.Get(Enumerable.Range(0, 1000).Select(_ => counter.Increment(1)).ToList());
Console.WriteLine($"counter: 1000 increments from 10 -> {results[^1]} (in order: {results.SequenceEqual(Enumerable.Range(11, 1000))})");
Console.WriteLine($"counter lives on {Ray.Get(counter.Call(c => c.Where()))}");

// An async actor interleaves its calls at their awaits: 100 waits of 100 ms take about 100 ms, not 10 s.
var waiter = Ray.Actor(() => new Waiter()).Remote();
var clock = Stopwatch.StartNew();
Ray.Get(Enumerable.Range(0, 100).Select(_ => waiter.WaitAsync(100)).ToList());
Console.WriteLine($"async actor: 100 concurrent 100 ms waits in {clock.ElapsedMilliseconds} ms");

// A named actor can be found from anywhere in the namespace; a detached one outlives this driver until killed.
var board = Ray.Actor(() => new Counter(0), new ActorOptions { Name = "board" }).Remote();
Ray.Get(board.Increment(42));
Console.WriteLine($"named actor 'board' found by name: {Ray.Get(Ray.GetActor<Counter>("board").Call(c => c.Value))}");

// Lightweight actors share worker processes: thousands per node.
clock.Restart();
var many = Enumerable.Range(0, 2000).Select(i => Ray.Actor((int s) => new Counter(s), new ActorOptions { Lightweight = true }).Remote(i)).ToList();
var sum = Ray.Get(many.Select(a => a.Increment(1)).ToList()).Sum();
Console.WriteLine($"2000 lightweight actors created and called once in {clock.ElapsedMilliseconds} ms (sum {sum})");

Ray.Kill(counter);
try
{
    Ray.Get(counter.Increment(1));
}
catch (ActorDiedException e)
{
    Console.WriteLine($"after Ray.Kill: {e.Message}");
}

public sealed class Counter(int start)
{
    public int Value { get; private set; } = start;

    public int Increment(int by) => Value += by;

    public string Where() => $"{Ray.NodeIpAddress}, pid {Environment.ProcessId}";
}

public sealed class Waiter
{
    public async Task<int> WaitAsync(int ms)
    {
        await Task.Delay(ms);
        return ms;
    }
}
