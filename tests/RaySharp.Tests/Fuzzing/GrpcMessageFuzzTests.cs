using System.Buffers;
using CsCheck;
using Google.Protobuf;
using RaySharp.Rpc;
using Xunit.Abstractions;

namespace RaySharp.Tests.Fuzzing;

/// <summary>
/// Every message type of the protocol (found by reflection, so new ones are covered), parsed from random and mutated
/// bytes as gRPC hands them over (one array, or a sequence of segments), then validated where it is an
/// <see cref="IValidatedRequest"/>. The contract: parsing fails with <see cref="InvalidProtocolBufferException"/> and
/// nothing else, whole or split; what parses writes back and parses to an equal message; <c>Validate</c> never throws
/// (it names the problem, or returns null).
/// </summary>
public sealed class GrpcMessageFuzzTests(ITestOutputHelper output)
{
    public sealed record Input(int Type, byte[] Bytes, int[] Cuts)
    {
        public override string ToString() => $"{ProtoFill.MessageTypes[Type].Name}, cuts [{string.Join(",", Cuts)}], bytes {FuzzHarness.Hex(Bytes)}";
    }

    private static Gen<Input> Inputs()
    {
        var types = ProtoFill.MessageTypes.Length;
        return Gen.Select(Gen.Int[0, types - 1], Gen.Int, Gen.Int[0, 4], Gen.Int[0, 9], (type, seed, rounds, mode) =>
        {
            var random = new Random(seed);
            var bytes = mode switch
            {
                0 => RandomBytes(random),
                1 => Nested(ProtoFill.MessageTypes[type], random),
                _ => ProtoFill.Fill(ProtoFill.MessageTypes[type], random).ToByteArray(),
            };
            if (mode != 1) bytes = Mutations.Mutate(bytes, random, rounds);
            return new Input(type, bytes, Mutations.CutPoints(bytes.Length, random));
        });
    }

    private static byte[] RandomBytes(Random random)
    {
        var bytes = new byte[random.Next(0, 200)];
        random.NextBytes(bytes);
        return bytes;
    }

    /// <summary>Nesting far past the parser's recursion limit: a message field inside itself, or unknown groups.</summary>
    private static byte[] Nested(Type type, Random random)
    {
        var depth = random.Next(2) == 0 ? random.Next(90, 130) : random.Next(1000, 100_000);
        if (random.Next(2) == 0)
        {
            // Start-group tags of an unknown field, never ended: skipping them is recursive too.
            var groups = new List<byte>();
            for (var i = 0; i < depth; i++) groups.AddRange(Varint(WireFormat.MakeTag(1000 + random.Next(3), WireFormat.WireType.StartGroup)));
            return groups.ToArray();
        }
        var field = ProtoFill.Descriptor(type).Fields.InFieldNumberOrder().FirstOrDefault(f => f.FieldType == Google.Protobuf.Reflection.FieldType.Message);
        var number = field?.FieldNumber ?? 1;
        // Length-delimited fields, each holding the next level: lengths are worked out from the inside first.
        var tag = Varint(WireFormat.MakeTag(number, WireFormat.WireType.LengthDelimited));
        var levels = Math.Min(depth, 20_000);
        var lengths = new long[levels];
        long inner = 0;
        for (var i = 0; i < levels; i++)
        {
            lengths[i] = inner;
            inner += tag.Length + Varint((ulong)inner).Length;
        }
        var bytes = new List<byte>((int)inner);
        for (var i = levels - 1; i >= 0; i--)
        {
            bytes.AddRange(tag);
            bytes.AddRange(Varint((ulong)lengths[i]));
        }
        return bytes.ToArray();
    }

    private static byte[] Varint(ulong value)
    {
        var bytes = new List<byte>();
        do
        {
            var b = (byte)(value & 0x7f);
            value >>= 7;
            bytes.Add(value == 0 ? b : (byte)(b | 0x80));
        } while (value != 0);
        return bytes.ToArray();
    }

    [Fact]
    public void Every_message_parses_or_fails_with_InvalidProtocolBufferException_and_validation_never_throws()
    {
        Assert.True(ProtoFill.MessageTypes.Length > 50, $"only {ProtoFill.MessageTypes.Length} message types found");
        new FuzzHarness("grpc-messages", output, TimeSpan.FromSeconds(5)).Run(Inputs(), input =>
        {
            var parser = ProtoFill.Parser(ProtoFill.MessageTypes[input.Type]);
            var whole = Parse(() => parser.ParseFrom(input.Bytes));
            var split = Parse(() => parser.ParseFrom(Mutations.Sequence(Mutations.Split(input.Bytes, input.Cuts))));
            if ((whole is null) != (split is null) || whole is not null && !whole.Equals(split))
                throw new InvalidOperationException("the message parsed differently from a split buffer");
            if (whole is null) return;
            var again = parser.ParseFrom(whole.ToByteArray());
            if (!again.Equals(whole)) throw new InvalidOperationException("the parsed message does not survive writing and parsing again");
            if (whole is IValidatedRequest validated) _ = validated.Validate();
        }, i => i.ToString());
    }

    private static IMessage? Parse(Func<IMessage> parse)
    {
        try
        {
            return parse();
        }
        catch (InvalidProtocolBufferException)
        {
            return null;
        }
    }
}
