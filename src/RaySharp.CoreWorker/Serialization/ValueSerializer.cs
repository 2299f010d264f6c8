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
    /// <remarks>
    /// Untrusted-data mode: values are read from other processes, so nesting is bounded (500 levels; deeper would
    /// overflow the reading thread's stack, which ends the process rather than the call) and the keys of dictionaries
    /// and sets are hashed so that keys chosen to collide cannot make reading quadratic.
    /// </remarks>
    public static readonly MessagePackSerializerOptions Options =
        MessagePackSerializerOptions.Standard.WithResolver(CompositeResolver.Create(
            GenericAttributeFormatterResolver.Instance, RawArrayFormatters.Resolver.Instance, ContractlessStandardResolverAllowPrivate.Instance))
            .WithSecurity(MessagePackSecurity.UntrustedData);

    /// <summary>
    /// The formatter a generic type names with MessagePack's own <see cref="MessagePackFormatterAttribute"/>, as an
    /// open generic closed over the type's arguments: how the API's <c>ObjectRef&lt;T&gt;</c> and
    /// <c>ActorHandle&lt;T&gt;</c> say that they travel inside values as references. The runtime knows no API type.
    /// </summary>
    private sealed class GenericAttributeFormatterResolver : IFormatterResolver
    {
        public static readonly GenericAttributeFormatterResolver Instance = new();

        public IMessagePackFormatter<T>? GetFormatter<T>() => Cache<T>.Formatter;

        private static class Cache<T>
        {
            public static readonly IMessagePackFormatter<T>? Formatter = Create();

            private static IMessagePackFormatter<T>? Create()
            {
                var type = typeof(T);
                if (!type.IsConstructedGenericType) return null;
                if (System.Reflection.CustomAttributeExtensions.GetCustomAttribute<MessagePackFormatterAttribute>(type.GetGenericTypeDefinition()) is not { FormatterType: { IsGenericTypeDefinition: true } open })
                    return null;
                return (IMessagePackFormatter<T>?)Activator.CreateInstance(open.MakeGenericType(type.GetGenericArguments()));
            }
        }
    }

    public static byte[] Serialize<T>(T value) => MessagePackSerializer.Serialize(value, Options);

    public static byte[] Serialize(Type type, object? value) => MessagePackSerializer.Serialize(type, value, Options);

    public static T Deserialize<T>(ReadOnlyMemory<byte> bytes) => MessagePackSerializer.Deserialize<T>(bytes, Options);

    public static object? Deserialize(Type type, ReadOnlyMemory<byte> bytes) => MessagePackSerializer.Deserialize(type, bytes, Options);
}
