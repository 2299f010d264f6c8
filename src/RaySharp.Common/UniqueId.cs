using System.Security.Cryptography;

namespace RaySharp.Common;

/// <summary>Random identifiers for nodes, workers, leases and clusters, printed as lowercase hex.</summary>
internal static class UniqueId
{
    /// <summary>Bytes of randomness in a node, worker or cluster id (Ray uses 28; 16 is ample for uniqueness).</summary>
    public const int Length = 16;

    // Half random once per process, half a counter that starts at a random value: unique across processes like 16
    // random bytes, without a call into the system's random generator per id. Task and object ids are made per call
    // on the hot path, and that call (OpenSSL, with a getpid per use) showed in its profile. Ids are names, not secrets.
    private static readonly ulong s_process = BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(8));
    private static long s_counter = BitConverter.ToInt64(RandomNumberGenerator.GetBytes(8));

    public static string New()
    {
        Span<byte> bytes = stackalloc byte[Length];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(bytes, s_process);
        System.Buffers.Binary.BinaryPrimitives.WriteInt64BigEndian(bytes[8..], Interlocked.Increment(ref s_counter));
        return Convert.ToHexStringLower(bytes);
    }

    public static bool IsValid(string? id) =>
        id is { Length: Length * 2 } && id.All(c => c is >= '0' and <= '9' or >= 'a' and <= 'f');

    /// <summary>The short prefix shown in tables and logs.</summary>
    public static string Short(string id) => id.Length > 8 ? id[..8] : id;
}
