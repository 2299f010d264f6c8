using MessagePack;
using MessagePack.Resolvers;

namespace RaySharp.CoreWorker.Serialization;

/// <summary>
/// How task arguments and results travel: MessagePack, contractless (no attributes needed on user types; records,
/// collections and non-public types included). Each value is written with its static type, read with the parameter's.
/// </summary>
internal static class ValueSerializer
{
    public static readonly MessagePackSerializerOptions Options =
        MessagePackSerializerOptions.Standard.WithResolver(ContractlessStandardResolverAllowPrivate.Instance);

    public static byte[] Serialize<T>(T value) => MessagePackSerializer.Serialize(value, Options);

    public static byte[] Serialize(Type type, object? value) => MessagePackSerializer.Serialize(type, value, Options);

    public static T Deserialize<T>(ReadOnlyMemory<byte> bytes) => MessagePackSerializer.Deserialize<T>(bytes, Options);

    public static object? Deserialize(Type type, ReadOnlyMemory<byte> bytes) => MessagePackSerializer.Deserialize(type, bytes, Options);
}
