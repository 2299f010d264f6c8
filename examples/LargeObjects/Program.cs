// Large values through the node's shared-memory object store: written once, read in place by tasks (no copy for
// ReadOnlyMemory<T> of primitives), large results coming back the same way.
// Usage: dotnet run --project examples/LargeObjects [-- auto | <head-ip>:<port>]
using System.Diagnostics;
using RaySharp;

using var ray = Ray.Init(args.Length > 0 ? args[0] : null);

var data = new double[25_000_000]; // 200 MB
for (var i = 0; i < data.Length; i++) data[i] = i % 1000;

var clock = Stopwatch.StartNew();
ObjectRef<ReadOnlyMemory<double>> shared = Ray.Put<ReadOnlyMemory<double>>(data);
Console.WriteLine($"Put 200 MB into the node's shared memory in {clock.ElapsedMilliseconds} ms");

clock.Restart();
var parts = Enumerable.Range(0, 4).Select(part => Ray.Task(SumPart).Remote(shared, part, 4)).ToList();
var total = Ray.Get(parts).Sum();
Console.WriteLine($"4 tasks summed it where it lies: {total} (expected {data.Sum()}) in {clock.ElapsedMilliseconds} ms");

clock.Restart();
var doubled = Ray.Get(Ray.Task(Doubled).Remote(shared));
Console.WriteLine($"A 200 MB result came back through the store: {doubled.Length:N0} values, [1] = {doubled[1]}, in {clock.ElapsedMilliseconds} ms");

// Each task reads a quarter of the shared array without copying it.
static double SumPart(ReadOnlyMemory<double> values, int part, int parts)
{
    var span = values.Span;
    var size = span.Length / parts;
    var slice = part == parts - 1 ? span[(part * size)..] : span.Slice(part * size, size);
    var sum = 0.0;
    foreach (var v in slice) sum += v;
    return sum;
}

static double[] Doubled(ReadOnlyMemory<double> values)
{
    var result = new double[values.Length];
    var span = values.Span;
    for (var i = 0; i < span.Length; i++) result[i] = span[i] * 2;
    return result;
}
