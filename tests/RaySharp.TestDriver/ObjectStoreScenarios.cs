using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using RaySharp;

/// <summary>Object store scenarios of the test driver: large values through shared memory, across nodes, spilled.</summary>
internal static class ObjectStoreScenarios
{
    private const int Mib200 = 26_214_400; // doubles
    private const int Mib100 = 13_107_200;

    public static int? Run(string scenario, string[] args)
    {
        switch (scenario)
        {
            case "store":
                SingleNode();
                return 0;
            case "store-nodes":
                AcrossNodes();
                return 0;
            case "store-spill":
                Spill();
                return 0;
            case "store-crash":
                // Stores 200 MiB, says so, waits for the signal file (args[2]), then dies without any cleanup.
                var kept = Ray.Put(Data(Mib200, 3));
                Console.WriteLine("stored " + kept.IsReady);
                Console.Out.Flush();
                while (!File.Exists(args[2])) Thread.Sleep(50);
                Environment.FailFast("the test driver crashes on purpose");
                return 0;
            case "store-failover":
                Failover(args[2], args[3], args[4], args.Length > 5 ? args[5] : null);
                return 0;
            default:
                return null;
        }
    }

    /// <summary>Bytes in use in /dev/shm, where every node's store lives.</summary>
    private static long ShmUsed()
    {
        var shm = new DriveInfo("/dev/shm");
        return shm.TotalSize - shm.TotalFreeSpace;
    }

    private static double[] Data(int n, int seed) => Enumerable.Range(0, n).Select(i => (double)((i + seed) % 1000)).ToArray();

    private static void SingleNode()
    {
        var baseline = ShmUsed();
        UseLargeObjects(baseline);
        var freed = WaitFreed(baseline);
        Console.WriteLine($"freed {freed}");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void UseLargeObjects(long baseline)
    {
        var data = Data(Mib200, 0);
        var expected = ContentHash.Of(data);
        var r = Ray.Put(data);
        Console.WriteLine($"shm-grew {ShmUsed() - baseline >= 200L << 20}");
        var back = Ray.Get(r);
        Console.WriteLine($"put-get {back.Length} {back.AsSpan().SequenceEqual(data)}");
        var memory = Ray.Put<ReadOnlyMemory<double>>(data);
        var view = Ray.Get(memory);
        // Not backed by an array: the doubles are read where they lie in shared memory.
        Console.WriteLine($"zero-copy {!MemoryMarshal.TryGetArray(view, out _)} {ContentHash.Of(view.Span) == expected}");
        Console.WriteLine($"task-arg {Ray.Get(Ray.Task<double[], string>(HashArray).Remote(r)) == expected}");
        Console.WriteLine($"task-zero-copy {Ray.Get(Ray.Task<ReadOnlyMemory<double>, string>(HashInPlace).Remote(memory)) == $"True {expected}"}");
        Console.WriteLine($"large-value-arg {Ray.Get(Ray.Task<double[], string>(HashArray).Remote(data)) == expected}");
        var made = Ray.Get(Ray.Task<int, double[]>(MakeArray).Remote(Mib100));
        Console.WriteLine($"large-result {made.Length} {made.AsSpan().SequenceEqual(Data(Mib100, 0))}");
        GC.KeepAlive(view);
    }

    /// <summary>Collects this process's dropped refs, then waits for the stores to give the memory back.</summary>
    private static bool WaitFreed(long baseline)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (DateTime.UtcNow < deadline)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            if (ShmUsed() <= baseline + (16L << 20)) return true;
            Thread.Sleep(250);
        }
        Console.WriteLine($"still used: {(ShmUsed() - baseline) >> 20} MiB above the baseline");
        return false;
    }

    private static void AcrossNodes()
    {
        var here = Ray.NodeIpAddress;
        var others = Ray.Nodes().Where(n => n.Alive && n.NodeIpAddress != here).OrderBy(n => n.NodeIpAddress).ToList();
        var data = Data(Mib200, 7);
        var expected = ContentHash.Of(data);
        var r = Ray.Put(data);
        // Each remote node pulls the object once, however many of its tasks read it.
        for (var round = 0; round < 3; round++)
        {
            var hashes = others.Select(n => Ray.Task<double[], string>(HashWithIp, new TaskOptions { Strategy = SchedulingStrategy.NodeAffinity(n.NodeId) }).Remote(r)).ToList();
            foreach (var line in Ray.Get(hashes)) Console.WriteLine($"remote-hash {line.Split(' ')[0]} {line.Split(' ')[1] == expected}");
        }
        var farResult = Ray.Task<int, double[]>(MakeArray, new TaskOptions { Strategy = SchedulingStrategy.NodeAffinity(others[0].NodeId) }).Remote(Mib100);
        Console.WriteLine($"remote-result {Ray.Get(farResult).AsSpan().SequenceEqual(Data(Mib100, 0))}");
        var fanOut = Ray.Get(Enumerable.Range(0, 50).Select(_ => Ray.Task<double[], string>(HashWithIp, new TaskOptions { Strategy = SchedulingStrategy.Spread }).Remote(r)));
        var fanOutOk = fanOut.All(l => l.Split(' ')[1] == expected);
        Console.WriteLine($"fan-out {fanOut.Length} {fanOutOk} nodes={fanOut.Select(l => l.Split(' ')[0]).Distinct().Count()}");
    }

    private static void Spill()
    {
        // Ten 100 MiB objects, all referenced, through a 256 MiB store: most of them live on disk at any time.
        var refs = new List<(ObjectRef<double[]> Ref, string Hash)>();
        for (var i = 0; i < 10; i++)
        {
            var data = Data(Mib100, i * 37);
            refs.Add((Ray.Put(data), ContentHash.Of(data)));
        }
        var intact = refs.Count(x => ContentHash.Of(Ray.Get(x.Ref)) == x.Hash);
        Console.WriteLine($"spill-roundtrip {intact}/{refs.Count}");
        // Read again, in reverse, by tasks: restored for them too.
        var byTasks = refs.AsEnumerable().Reverse().Count(x => Ray.Get(Ray.Task<double[], string>(HashArray).Remote(x.Ref)) == x.Hash);
        Console.WriteLine($"spill-task-reads {byTasks}/{refs.Count}");
        try
        {
            // Larger than the whole store: fails with the sizes, and loses nothing already stored.
            Ray.Put(new double[40_000_000]);
            Console.WriteLine("too-large none");
        }
        catch (ObjectStoreFullException e)
        {
            Console.WriteLine("too-large " + e.Message);
        }
        Console.WriteLine($"after-full {refs.Count(x => ContentHash.Of(Ray.Get(x.Ref)) == x.Hash)}/{refs.Count}");
    }

    /// <summary>
    /// The object's primary is on <paramref name="primaryIp"/>; <paramref name="copyIp"/> pulls a copy; then
    /// <paramref name="readerIp"/> reads it, pulling from the copy first. The test kills the copy's node mid-transfer.
    /// With <paramref name="retrySignal"/>, the test makes that first read fail (it freezes every holder): the driver
    /// says how it failed, waits for the file, then reads on the same node again.
    /// </summary>
    private static void Failover(string primaryIp, string copyIp, string readerIp, string? retrySignal)
    {
        var nodes = Ray.Nodes().Where(n => n.Alive).ToDictionary(n => n.NodeIpAddress, n => n.NodeId);
        TaskOptions On(string ip) => new() { Strategy = SchedulingStrategy.NodeAffinity(nodes[ip]) };
        var x = Ray.Task<int, double[]>(MakeArray, On(primaryIp)).Remote(Mib200);
        var expected = ContentHash.Of(Data(Mib200, 0));
        Console.WriteLine($"copy {Ray.Get(Ray.Task<double[], string>(HashWithIp, On(copyIp)).Remote(x)) == $"{copyIp} {expected}"}");
        var read = Ray.Task<double[], string>(HashWithIp, On(readerIp)).Remote(x);
        Console.WriteLine("pulling");
        Console.Out.Flush();
        if (retrySignal is not null)
        {
            try
            {
                Console.WriteLine($"first-read {Ray.Get(read) == $"{readerIp} {expected}"}");
            }
            catch (RayTaskException e)
            {
                Console.WriteLine("first-read failed: " + e.Message.ReplaceLineEndings(" "));
            }
            Console.Out.Flush();
            while (!File.Exists(retrySignal)) Thread.Sleep(50);
            read = Ray.Task<double[], string>(HashWithIp, On(readerIp)).Remote(x);
        }
        Console.WriteLine($"failover {Ray.Get(read) == $"{readerIp} {expected}"}");
    }

    private static string HashArray(double[] values) => ContentHash.Of(values);

    private static string HashInPlace(ReadOnlyMemory<double> values) => $"{!MemoryMarshal.TryGetArray(values, out _)} {ContentHash.Of(values.Span)}";

    private static string HashWithIp(double[] values) => $"{Ray.NodeIpAddress} {ContentHash.Of(values)}";

    private static double[] MakeArray(int n) => Data(n, 0);
}
