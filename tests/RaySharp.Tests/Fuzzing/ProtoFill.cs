using System.Collections;
using System.Reflection;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Tests.Fuzzing;

/// <summary>
/// Well-formed protocol messages with random contents, made from their descriptors (so a field added to a .proto is
/// filled with no change here). Ids come from a small pool, so that requests drawn one after another name the same
/// objects, actors and jobs, and reach the code past "not found"; quantities are mostly plausible, sometimes on an edge.
/// </summary>
internal static class ProtoFill
{
    public static readonly string[] Ids = Enumerable.Range(0, 6).Select(i =>
    {
        var bytes = new byte[Common.UniqueId.Length];
        new Random(i).NextBytes(bytes);
        return Convert.ToHexStringLower(bytes);
    }).ToArray();

    /// <summary>Every message type of the protocol: what its servers and clients parse.</summary>
    public static readonly Type[] MessageTypes = typeof(RegisterNodeRequest).Assembly.GetTypes()
        .Where(t => t.Namespace == typeof(RegisterNodeRequest).Namespace && !t.IsAbstract && typeof(IMessage).IsAssignableFrom(t)
            && t.GetProperty("Parser", BindingFlags.Public | BindingFlags.Static) is not null)
        .OrderBy(t => t.FullName, StringComparer.Ordinal)
        .ToArray();

    public static MessageParser Parser(Type type) => (MessageParser)type.GetProperty("Parser", BindingFlags.Public | BindingFlags.Static)!.GetValue(null)!;

    public static MessageDescriptor Descriptor(Type type) => (MessageDescriptor)type.GetProperty("Descriptor", BindingFlags.Public | BindingFlags.Static)!.GetValue(null)!;

    public static IMessage Fill(Type type, Random random) => Fill(Descriptor(type), random, 0);

    public static IMessage Fill(MessageDescriptor descriptor, Random random, int depth)
    {
        var message = (IMessage)Activator.CreateInstance(descriptor.ClrType)!;
        foreach (var field in descriptor.Fields.InFieldNumberOrder())
        {
            if (random.Next(5) == 0) continue;
            if (field.IsMap)
            {
                var map = (IDictionary)field.Accessor.GetValue(message);
                var key = field.MessageType.FindFieldByNumber(1);
                var value = field.MessageType.FindFieldByNumber(2);
                for (var n = random.Next(4); n > 0; n--) map[Value(key, random, depth)] = Value(value, random, depth);
            }
            else if (field.IsRepeated)
            {
                var list = (IList)field.Accessor.GetValue(message);
                for (var n = random.Next(4); n > 0; n--) list.Add(Value(field, random, depth));
            }
            else
            {
                field.Accessor.SetValue(message, Value(field, random, depth));
            }
        }
        return message;
    }

    private static object Value(FieldDescriptor field, Random random, int depth)
    {
        var name = field.Name;
        return field.FieldType switch
        {
            FieldType.String => Text(name, random),
            FieldType.Bytes => ByteString.CopyFrom(Bytes(random)),
            FieldType.Bool => random.Next(2) == 0,
            FieldType.Int32 or FieldType.SInt32 or FieldType.SFixed32 => Int(name, random),
            FieldType.UInt32 or FieldType.Fixed32 => (uint)Int(name, random),
            FieldType.Int64 or FieldType.SInt64 or FieldType.SFixed64 => Long(name, random),
            FieldType.UInt64 or FieldType.Fixed64 => (ulong)Long(name, random),
            FieldType.Double => Double(random),
            FieldType.Float => (float)Double(random),
            FieldType.Enum => Enum.ToObject(field.EnumType.ClrType, random.Next(4) == 0 ? random.Next(-2, 100) : field.EnumType.Values[random.Next(field.EnumType.Values.Count)].Number),
            FieldType.Message => depth < 4 ? Fill(field.MessageType, random, depth + 1) : Activator.CreateInstance(field.MessageType.ClrType)!,
            _ => throw new NotSupportedException($"field {field.FullName} of type {field.FieldType}"),
        };
    }

    private static string Text(string name, Random random)
    {
        if (random.Next(8) == 0) return RandomText(random);
        if (name.EndsWith("id", StringComparison.Ordinal) || name.EndsWith("ids", StringComparison.Ordinal)) return Ids[random.Next(Ids.Length)];
        if (name.Contains("ip", StringComparison.Ordinal) || name.Contains("address", StringComparison.Ordinal))
            return random.Next(3) == 0 ? "::1" : "127.0.0.1";
        return random.Next(3) switch { 0 => "CPU", 1 => "GPU", _ => RandomText(random) };
    }

    private static string RandomText(Random random)
    {
        var chars = new char[random.Next(0, 20)];
        for (var i = 0; i < chars.Length; i++) chars[i] = random.Next(6) == 0 ? (char)random.Next(0x80, 0xd7ff) : (char)random.Next(0x20, 0x7f);
        return new string(chars);
    }

    private static byte[] Bytes(Random random)
    {
        var bytes = new byte[random.Next(0, 24)];
        random.NextBytes(bytes);
        return bytes;
    }

    private static int Int(string name, Random random)
    {
        if (random.Next(6) == 0) return Mutations.EdgeInts[random.Next(Mutations.EdgeInts.Length)];
        if (name.Contains("port", StringComparison.Ordinal)) return random.Next(1, 65536);
        return random.Next(0, 64);
    }

    private static long Long(string name, Random random)
    {
        if (random.Next(6) == 0) return random.Next(4) switch { 0 => long.MaxValue, 1 => long.MinValue, 2 => -1, _ => Mutations.EdgeInts[random.Next(Mutations.EdgeInts.Length)] };
        if (name.Contains("size", StringComparison.Ordinal) || name.Contains("offset", StringComparison.Ordinal) || name.Contains("length", StringComparison.Ordinal))
            return random.Next(0, 256 * 1024);
        return random.Next(0, 2000);
    }

    private static double Double(Random random) => random.Next(8) switch
    {
        0 => double.NaN,
        1 => double.PositiveInfinity,
        2 => -1,
        3 => double.MaxValue,
        _ => random.Next(0, 8) / 2.0,
    };
}
