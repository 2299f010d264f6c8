using MessagePack;
using MessagePack.Formatters;
using MessagePack.Resolvers;

namespace RaySharp.CoreWorker.Serialization;

/// <summary>
/// How task arguments and results travel: MessagePack, contractless (no attributes needed on user types; records,
/// collections and non-public types included). Each value is written with its static type, read with the parameter's.
/// </summary>
internal static class ValueSerializer
{
    public static readonly MessagePackSerializerOptions Options =
        MessagePackSerializerOptions.Standard.WithResolver(CompositeResolver.Create(
            ObjectRefResolver.Instance, ContractlessStandardResolverAllowPrivate.Instance));

    /// <summary>
    /// Finds the formatter of the API's <c>ObjectRef&lt;T&gt;</c> (refs inside values travel as refs). The API assembly is
    /// per job on a worker, so the formatter is looked up next to whichever <c>ObjectRef</c> type is being written.
    /// </summary>
    private sealed class ObjectRefResolver : IFormatterResolver
    {
        public static readonly ObjectRefResolver Instance = new();

        public IMessagePackFormatter<T>? GetFormatter<T>() => Cache<T>.Formatter;

        private static class Cache<T>
        {
            public static readonly IMessagePackFormatter<T>? Formatter = Create();

            private static IMessagePackFormatter<T>? Create()
            {
                var type = typeof(T);
                if (!type.IsGenericType || type.GetGenericTypeDefinition().FullName != "RaySharp.ObjectRef`1") return null;
                var formatter = type.Assembly.GetType("RaySharp.ObjectRefFormatter`1")?.MakeGenericType(type.GetGenericArguments());
                return formatter is null ? null : (IMessagePackFormatter<T>?)Activator.CreateInstance(formatter);
            }
        }
    }

    public static byte[] Serialize<T>(T value) => MessagePackSerializer.Serialize(value, Options);

    public static byte[] Serialize(Type type, object? value) => MessagePackSerializer.Serialize(type, value, Options);

    public static T Deserialize<T>(ReadOnlyMemory<byte> bytes) => MessagePackSerializer.Deserialize<T>(bytes, Options);

    public static object? Deserialize(Type type, ReadOnlyMemory<byte> bytes) => MessagePackSerializer.Deserialize(type, bytes, Options);
}
