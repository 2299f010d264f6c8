using System.Buffers.Binary;
using CsCheck;
using MessagePack;
using RaySharp.CoreWorker.Serialization;
using Xunit.Abstractions;

namespace RaySharp.Tests.Fuzzing;

/// <summary>
/// The value deserializer (<see cref="ValueSerializer"/> with the raw array formatters) on random and mutated
/// MessagePack, read as the types task arguments and results have: primitives, strings, primitive arrays (raw),
/// memory, lists, dictionaries, sets, records, tuples, <c>object</c> and containers nested in each other. The
/// contract: a value that does not fit its type fails with <see cref="MessagePackSerializationException"/>, nothing
/// else; nesting deeper than the untrusted-data limit is refused rather than run into a stack overflow; a count or
/// length announced by the bytes costs nothing before the bytes are there; a well-formed value reads back.
/// </summary>
public sealed class ValueDeserializerFuzzTests(ITestOutputHelper output)
{
    public sealed record Point(int X, double Y, string Name);

    public sealed record Shape(string Kind, List<Point> Points, Dictionary<string, double> Tags, Point? Center, object? Extra);

    private static readonly (Type Type, Func<Random, object?> Make)[] Types =
    [
        (typeof(int), r => r.Next(int.MinValue, int.MaxValue)),
        (typeof(long), r => r.NextInt64(long.MinValue, long.MaxValue)),
        (typeof(double), r => r.NextDouble() * 1e6),
        (typeof(bool), r => r.Next(2) == 0),
        (typeof(string), Text),
        (typeof(decimal), r => (decimal)r.NextDouble()),
        (typeof(Guid), r => new Guid(Bytes(r, 16))),
        (typeof(DateTime), r => new DateTime(r.NextInt64(0, DateTime.MaxValue.Ticks), DateTimeKind.Utc)),
        (typeof(byte[]), r => Bytes(r, r.Next(64))),
        (typeof(int[]), r => Many(r, _ => r.Next())),
        (typeof(double[]), r => Many(r, _ => r.NextDouble())),
        (typeof(long[]), r => Many(r, _ => r.NextInt64())),
        (typeof(char[]), r => Many(r, _ => (char)r.Next(32, 127))),
        (typeof(float[]), r => Many(r, _ => (float)r.NextDouble())),
        (typeof(sbyte[]), r => Many(r, _ => (sbyte)r.Next(-128, 128))),
        (typeof(ushort[]), r => Many(r, _ => (ushort)r.Next(65536))),
        (typeof(ReadOnlyMemory<double>), r => new ReadOnlyMemory<double>(Many(r, _ => r.NextDouble()))),
        (typeof(Memory<int>), r => new Memory<int>(Many(r, _ => r.Next()))),
        (typeof(string[][]), r => Many(r, _ => Many(r, _ => Text(r)))),
        (typeof(List<int>), r => Many(r, _ => r.Next()).ToList()),
        (typeof(List<string>), r => Many(r, _ => Text(r)).ToList()),
        (typeof(HashSet<string>), r => Many(r, _ => Text(r)).ToHashSet()),
        (typeof(Dictionary<string, int>), r => Many(r, _ => Text(r)).Distinct().ToDictionary(k => k, _ => r.Next())),
        (typeof(Dictionary<int, List<string>>), r => Many(r, _ => r.Next()).Distinct().ToDictionary(k => k, _ => Many(r, _ => Text(r)).ToList())),
        (typeof(Dictionary<string, Dictionary<string, int[]>>), r => Many(r, _ => Text(r)).Distinct().ToDictionary(k => k, _ => new Dictionary<string, int[]> { ["a"] = Many(r, _ => r.Next()) })),
        (typeof(int?[]), r => Many(r, _ => r.Next(3) == 0 ? null : (int?)r.Next())),
        (typeof((int, string)), r => (r.Next(), Text(r))),
        (typeof(Point), MakePoint),
        (typeof(Shape), MakeShape),
        (typeof(List<Shape>), r => Many(r, _ => MakeShape(r)).ToList()),
        (typeof(object), r => Plain(r, 0)),
        (typeof(object[]), r => Many(r, _ => Plain(r, 1))),
        (typeof(List<object>), r => Many(r, _ => Plain(r, 1)).ToList()),
        (typeof(Dictionary<string, object>), r => Many(r, _ => Text(r)).Distinct().ToDictionary(k => k, _ => Plain(r, 1))),
    ];

    private static string Text(Random r) => new(Enumerable.Range(0, r.Next(12)).Select(_ => r.Next(5) == 0 ? (char)r.Next(0x100, 0xd7ff) : (char)r.Next(32, 127)).ToArray());

    private static byte[] Bytes(Random r, int length)
    {
        var bytes = new byte[length];
        r.NextBytes(bytes);
        return bytes;
    }

    private static T[] Many<T>(Random r, Func<int, T> make) => Enumerable.Range(0, r.Next(6)).Select(make).ToArray();

    private static Point MakePoint(Random r) => new(r.Next(), r.NextDouble(), Text(r));

    private static Shape MakeShape(Random r) =>
        new(Text(r), Many(r, _ => MakePoint(r)).ToList(), Many(r, _ => Text(r)).Distinct().ToDictionary(k => k, _ => r.NextDouble()),
            r.Next(2) == 0 ? null : MakePoint(r), Plain(r, 2));

    // What `object` reads back as: MessagePack's primitives, arrays and maps.
    private static object? Plain(Random r, int depth) => (depth > 3 ? r.Next(4) : r.Next(6)) switch
    {
        0 => null,
        1 => (long)r.Next(),
        2 => Text(r),
        3 => r.NextDouble(),
        4 => Many(r, _ => Plain(r, depth + 1)),
        _ => Many(r, _ => Text(r)).Distinct().ToDictionary(k => (object)k, _ => Plain(r, depth + 1)),
    };

    public sealed record Input(int WrittenAs, int ReadAs, byte[] Bytes, bool Intact)
    {
        public override string ToString() => $"written as {Types[WrittenAs].Type.Name}, read as {Types[ReadAs].Type}, bytes {FuzzHarness.Hex(Bytes)}";
    }

    private static readonly Gen<Input> Inputs =
        Gen.Select(Gen.Int[0, Types.Length - 1], Gen.Int[0, Types.Length - 1], Gen.Int, Gen.Int[0, 4], Gen.Int[0, 11], (written, other, seed, rounds, mode) =>
        {
            var random = new Random(seed);
            var readAs = random.Next(3) == 0 ? other : written;
            return mode switch
            {
                0 => new Input(written, readAs, Bytes(random, random.Next(100)), false),
                1 => new Input(written, readAs, Deep(random), false),
                2 => new Input(written, readAs, BigHeader(random), false),
                _ => Mutated(written, readAs, random, mode == 3 ? 0 : rounds),
            };
        });

    private static Input Mutated(int written, int readAs, Random random, int rounds)
    {
        var (type, make) = Types[written];
        var bytes = ValueSerializer.Serialize(type, make(random));
        return rounds == 0 ? new Input(written, written, bytes, true) : new Input(written, readAs, Mutations.Mutate(bytes, random, rounds), false);
    }

    /// <summary>Arrays or maps inside each other, deeper than any value a task passes.</summary>
    private static byte[] Deep(Random random)
    {
        var depth = random.Next(3) == 0 ? random.Next(400, 600) : random.Next(1000, 200_000);
        var level = random.Next(3) switch
        {
            0 => new byte[] { 0x91 }, // an array of one element
            1 => [0x81, 0xa1, (byte)'a'], // a map of one key
            _ => [0x92, 0xc0], // an array of nil and the next level
        };
        var bytes = new List<byte>(depth * level.Length + 1);
        for (var i = 0; i < depth; i++) bytes.AddRange(level);
        bytes.Add(0xc0);
        return bytes.ToArray();
    }

    /// <summary>A header announcing many elements or bytes, followed by few.</summary>
    private static byte[] BigHeader(Random random)
    {
        var count = random.Next(2) == 0 ? Mutations.EdgeInts[random.Next(Mutations.EdgeInts.Length)] : random.Next();
        var code = new byte[] { 0xdd, 0xdf, 0xdb, 0xc6, 0xc9 }[random.Next(5)];
        var bytes = new List<byte> { code };
        var number = new byte[4];
        BinaryPrimitives.WriteInt32BigEndian(number, count);
        bytes.AddRange(number);
        if (code == 0xc9) bytes.Add((byte)random.Next(38, 52)); // the extension's type code: a raw array's, or near
        bytes.AddRange(Bytes(random, random.Next(16)));
        return bytes.ToArray();
    }

    [Fact]
    public void Values_read_back_or_fail_with_MessagePackSerializationException_within_bounds()
    {
        // Formatters are made on first use (dynamic code): not what an input allocates.
        var warm = new Random(1);
        foreach (var (type, make) in Types) ValueSerializer.Deserialize(type, ValueSerializer.Serialize(type, make(warm)));
        new FuzzHarness("values", output, TimeSpan.FromSeconds(5)).Run(Inputs, input =>
        {
            var type = Types[input.ReadAs].Type;
            var before = GC.GetAllocatedBytesForCurrentThread();
            try
            {
                _ = ValueSerializer.Deserialize(type, input.Bytes);
            }
            catch (MessagePackSerializationException) when (!input.Intact)
            {
            }
            var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            if (allocated > 256L * input.Bytes.Length + (1 << 20))
                throw new InvalidOperationException($"reading {input.Bytes.Length} bytes allocated {allocated}");
        }, i => i.ToString());
    }
}
