using System.Buffers;
using System.Buffers.Binary;
using CsCheck;

namespace RaySharp.Tests.Fuzzing;

/// <summary>
/// Byte-level mutations of well-formed inputs: most malformed messages a broken or hostile peer sends are a valid one
/// cut short, with bits flipped, a length or count changed, a piece repeated, or garbage around it. Each mutation is
/// drawn from a seed, so an input is reproduced from the numbers CsCheck prints.
/// </summary>
internal static class Mutations
{
    /// <summary>Lengths and counts that sit on the edges of what readers check.</summary>
    public static readonly int[] EdgeInts =
        [0, 1, 2, 11, 12, 13, 16, 17, 127, 128, 255, 256, 0x7fff, 0x8000, 0xffff, 0x10000, 64 * 1024, 64 * 1024 + 13, 1 << 20,
         (1 << 30) - 13, (1 << 30) - 12, 1 << 30, (1 << 30) + 1, int.MaxValue - 1, int.MaxValue, int.MinValue, -1, -12, -13];

    public static Gen<byte[]> Random(int maxLength) => Gen.Byte.Array[0, maxLength];

    /// <summary>Seeds from <paramref name="seeds"/>, each mutated 0 to <paramref name="maxRounds"/> times.</summary>
    public static Gen<byte[]> Of(Gen<byte[]> seeds, int maxRounds = 4) =>
        Gen.Select(seeds, Gen.Int, Gen.Int[0, maxRounds], (seed, s, rounds) => Mutate(seed, new Random(s), rounds));

    public static byte[] Mutate(byte[] seed, Random random, int rounds)
    {
        var bytes = new List<byte>(seed);
        for (var i = 0; i < rounds; i++) MutateOnce(bytes, random);
        return bytes.ToArray();
    }

    private static void MutateOnce(List<byte> bytes, Random random)
    {
        var at = bytes.Count == 0 ? 0 : random.Next(bytes.Count);
        switch (random.Next(10))
        {
            case 0: // cut short
                if (bytes.Count > 0) bytes.RemoveRange(at, bytes.Count - at);
                break;
            case 1: // flip one bit
                if (bytes.Count > 0) bytes[at] ^= (byte)(1 << random.Next(8));
                break;
            case 2: // a byte on an edge
                if (bytes.Count > 0) bytes[at] = (byte)EdgeInts[random.Next(EdgeInts.Length)];
                break;
            case 3: // a little-endian length or count changed
            {
                Span<byte> value = stackalloc byte[4];
                BinaryPrimitives.WriteInt32LittleEndian(value, random.Next(3) == 0 ? random.Next(int.MinValue, int.MaxValue) : EdgeInts[random.Next(EdgeInts.Length)]);
                for (var k = 0; k < 4 && at + k < bytes.Count; k++) bytes[at + k] = value[k];
                break;
            }
            case 4: // a big-endian one (MessagePack headers)
            {
                Span<byte> value = stackalloc byte[4];
                BinaryPrimitives.WriteInt32BigEndian(value, EdgeInts[random.Next(EdgeInts.Length)]);
                for (var k = 0; k < 4 && at + k < bytes.Count; k++) bytes[at + k] = value[k];
                break;
            }
            case 5: // a piece repeated (a field given again, a frame sent twice)
            {
                if (bytes.Count == 0) break;
                var length = random.Next(1, Math.Min(64, bytes.Count - at) + 1);
                var piece = bytes.GetRange(at, length);
                var times = random.Next(1, 4);
                for (var t = 0; t < times; t++) bytes.InsertRange(at, piece);
                break;
            }
            case 6: // a piece dropped
                if (bytes.Count > 0) bytes.RemoveRange(at, random.Next(1, Math.Min(16, bytes.Count - at) + 1));
                break;
            case 7: // garbage inserted
            {
                var garbage = new byte[random.Next(1, 9)];
                random.NextBytes(garbage);
                bytes.InsertRange(at, garbage);
                break;
            }
            case 8: // garbage appended
            {
                var garbage = new byte[random.Next(1, 33)];
                random.NextBytes(garbage);
                bytes.AddRange(garbage);
                break;
            }
            default: // a varint on an edge (protobuf lengths, tags and counts)
            {
                var value = random.Next(4) switch { 0 => (ulong)uint.MaxValue, 1 => ulong.MaxValue, 2 => (ulong)random.Next(), _ => (ulong)EdgeInts[random.Next(EdgeInts.Length)] };
                var varint = new List<byte>();
                do
                {
                    var b = (byte)(value & 0x7f);
                    value >>= 7;
                    varint.Add(value == 0 ? b : (byte)(b | 0x80));
                } while (value != 0);
                if (at < bytes.Count) bytes.RemoveRange(at, Math.Min(varint.Count, bytes.Count - at));
                bytes.InsertRange(at, varint);
                break;
            }
        }
    }

    /// <summary>Cuts points (sorted, distinct, inside the input) at which the bytes arrive in separate reads.</summary>
    public static int[] CutPoints(int length, Random random)
    {
        if (length < 2) return [];
        var count = random.Next(Math.Min(8, length));
        return Enumerable.Range(0, count).Select(_ => random.Next(1, length)).Distinct().Order().ToArray();
    }

    public static List<byte[]> Split(byte[] bytes, int[] cuts)
    {
        var pieces = new List<byte[]>();
        var start = 0;
        foreach (var cut in cuts.Append(bytes.Length))
        {
            pieces.Add(bytes[start..cut]);
            start = cut;
        }
        return pieces;
    }

    /// <summary>A sequence of one segment per piece, as a pipe hands over bytes that arrived in several reads.</summary>
    public static ReadOnlySequence<byte> Sequence(IReadOnlyList<byte[]> pieces)
    {
        if (pieces.Count == 0) return ReadOnlySequence<byte>.Empty;
        var first = new Segment(pieces[0], 0);
        var last = first;
        for (var i = 1; i < pieces.Count; i++) last = last.Append(pieces[i]);
        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}
