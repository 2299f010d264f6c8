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
            ObjectRefResolver.Instance, RawArrayFormatters.Resolver.Instance, ContractlessStandardResolverAllowPrivate.Instance))
            .WithSecurity(MessagePackSecurity.UntrustedData);

    /// <summary>
    /// Finds the formatters of the API's <c>ObjectRef&lt;T&gt;</c> and <c>ActorHandle&lt;T&gt;</c> (refs and handles inside values travel as references). The API assembly is
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
                if (!type.IsGenericType) return null;
                var formatterName = type.GetGenericTypeDefinition().FullName switch
                {
                    "RaySharp.ObjectRef`1" => "RaySharp.ObjectRefFormatter`1",
                    "RaySharp.ActorHandle`1" => "RaySharp.ActorHandleFormatter`1",
                    _ => null,
                };
                if (formatterName is null) return null;
                var formatter = type.Assembly.GetType(formatterName)?.MakeGenericType(type.GetGenericArguments());
                return formatter is null ? null : (IMessagePackFormatter<T>?)Activator.CreateInstance(formatter);
            }
        }
    }

    public static byte[] Serialize<T>(T value) => MessagePackSerializer.Serialize(value, Options);

    public static byte[] Serialize(Type type, object? value) => MessagePackSerializer.Serialize(type, value, Options);

    public static T Deserialize<T>(ReadOnlyMemory<byte> bytes) => MessagePackSerializer.Deserialize<T>(bytes, Options);

    public static object? Deserialize(Type type, ReadOnlyMemory<byte> bytes) => MessagePackSerializer.Deserialize(type, bytes, Options);
}
