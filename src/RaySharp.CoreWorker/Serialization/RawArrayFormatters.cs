using System.Buffers;
using System.Runtime.InteropServices;
using MessagePack;
using MessagePack.Formatters;
using RaySharp.ObjectStore.Client;

namespace RaySharp.CoreWorker.Serialization;

/// <summary>
/// Primitive arrays and memory travel as their bytes (a MessagePack extension whose payload is the elements as laid
/// out in memory) instead of one MessagePack number per element: a 200 MiB <c>double[]</c> is one copy, not 26 million
/// writes. Read from the object store, a <c>ReadOnlyMemory&lt;T&gt;</c> or <c>Memory&lt;T&gt;</c> is not copied at all: it
/// points into the shared memory, which stays pinned while the memory is reachable.
/// </summary>
internal static class RawArrayFormatters
{
    private static readonly Type[] s_elements =
        [typeof(byte), typeof(sbyte), typeof(short), typeof(ushort), typeof(int), typeof(uint), typeof(long), typeof(ulong), typeof(float), typeof(double), typeof(char)];

    /// <summary>The extension type code of an element type, or null when it is not a raw-copied primitive.</summary>
    public static sbyte? TypeCode(Type element)
    {
        var i = Array.IndexOf(s_elements, element);
        return i < 0 ? null : (sbyte)(40 + i);
    }

    public sealed class Resolver : IFormatterResolver
    {
        public static readonly Resolver Instance = new();

        public IMessagePackFormatter<T>? GetFormatter<T>() => Cache<T>.Formatter;

        private static class Cache<T>
        {
            public static readonly IMessagePackFormatter<T>? Formatter = Create();

            private static IMessagePackFormatter<T>? Create()
            {
                var type = typeof(T);
                Type? formatter = null;
                if (type.IsArray && type.GetArrayRank() == 1 && type.GetElementType() is { } e && e != typeof(byte) && Array.IndexOf(s_elements, e) >= 0)
                    formatter = typeof(ArrayFormatter<>).MakeGenericType(e);
                else if (type.IsGenericType && Array.IndexOf(s_elements, type.GetGenericArguments()[0]) >= 0)
                {
                    var definition = type.GetGenericTypeDefinition();
                    if (definition == typeof(ReadOnlyMemory<>)) formatter = typeof(ReadOnlyMemoryFormatter<>).MakeGenericType(type.GetGenericArguments());
                    else if (definition == typeof(Memory<>)) formatter = typeof(MemoryFormatter<>).MakeGenericType(type.GetGenericArguments());
                }
                return formatter is null ? null : (IMessagePackFormatter<T>)Activator.CreateInstance(formatter)!;
            }
        }
    }

    private static void Write<T>(ref MessagePackWriter writer, ReadOnlySpan<T> elements) where T : unmanaged
    {
        var bytes = MemoryMarshal.AsBytes(elements);
        writer.WriteExtensionFormatHeader(new ExtensionHeader(TypeCode(typeof(T))!.Value, bytes.Length));
        writer.WriteRaw(bytes);
    }

    /// <summary>The element bytes of an extension written by <see cref="Write{T}"/>, as a sequence over the source.</summary>
    private static ReadOnlySequence<byte> ReadBytes<T>(ref MessagePackReader reader) where T : unmanaged
    {
        var header = reader.ReadExtensionFormatHeader();
        if (header.TypeCode != TypeCode(typeof(T)))
            throw new MessagePackSerializationException($"expected raw {typeof(T).Name} elements (extension {TypeCode(typeof(T))}), found extension {header.TypeCode}");
        return reader.ReadRaw(header.Length);
    }

    private static T[] Copy<T>(ReadOnlySequence<byte> bytes) where T : unmanaged
    {
        var result = GC.AllocateUninitializedArray<T>((int)(bytes.Length / Marshal.SizeOf<T>()));
        bytes.CopyTo(MemoryMarshal.AsBytes(result.AsSpan()));
        return result;
    }

    /// <summary>A view straight into shared memory when the bytes come from the object store, else a copy.</summary>
    private static Memory<T> View<T>(ReadOnlySequence<byte> bytes) where T : unmanaged
    {
        if (bytes.IsSingleSegment && MemoryMarshal.TryGetMemoryManager<byte, SharedObjectMemory>(bytes.First, out var shared, out var start, out var length)
            && length % Marshal.SizeOf<T>() == 0)
        {
            return shared.Slice<T>(start, length / Marshal.SizeOf<T>());
        }
        return Copy<T>(bytes);
    }

    private sealed class ArrayFormatter<T> : IMessagePackFormatter<T[]?> where T : unmanaged
    {
        public void Serialize(ref MessagePackWriter writer, T[]? value, MessagePackSerializerOptions options)
        {
            if (value is null) writer.WriteNil();
            else Write<T>(ref writer, value);
        }

        public T[]? Deserialize(ref MessagePackReader reader, MessagePackSerializerOptions options) =>
            reader.TryReadNil() ? null : Copy<T>(ReadBytes<T>(ref reader));
    }

    private sealed class ReadOnlyMemoryFormatter<T> : IMessagePackFormatter<ReadOnlyMemory<T>> where T : unmanaged
    {
        public void Serialize(ref MessagePackWriter writer, ReadOnlyMemory<T> value, MessagePackSerializerOptions options) => Write(ref writer, value.Span);

        public ReadOnlyMemory<T> Deserialize(ref MessagePackReader reader, MessagePackSerializerOptions options) => View<T>(ReadBytes<T>(ref reader));
    }

    private sealed class MemoryFormatter<T> : IMessagePackFormatter<Memory<T>> where T : unmanaged
    {
        public void Serialize(ref MessagePackWriter writer, Memory<T> value, MessagePackSerializerOptions options) => Write<T>(ref writer, value.Span);

        public Memory<T> Deserialize(ref MessagePackReader reader, MessagePackSerializerOptions options) => View<T>(ReadBytes<T>(ref reader));
    }
}
