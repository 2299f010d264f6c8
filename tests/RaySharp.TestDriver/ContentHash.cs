using System.Runtime.InteropServices;
using System.Security.Cryptography;

/// <summary>
/// SHA-256 of a value's bytes, in hex: what scenarios compare large values by. A sum would not change if two chunks
/// of a transfer or a spill file swapped places.
/// </summary>
internal static class ContentHash
{
    public static string Of<T>(ReadOnlySpan<T> values) where T : unmanaged => Convert.ToHexString(SHA256.HashData(MemoryMarshal.AsBytes(values)));

    public static string Of<T>(T[] values) where T : unmanaged => Of((ReadOnlySpan<T>)values);
}
