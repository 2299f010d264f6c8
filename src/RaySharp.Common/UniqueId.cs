using System.Security.Cryptography;

namespace RaySharp.Common;

/// <summary>Random identifiers for nodes, workers, leases and clusters, printed as lowercase hex.</summary>
internal static class UniqueId
{
    /// <summary>Bytes of randomness in a node, worker or cluster id (Ray uses 28; 16 is ample for uniqueness).</summary>
    public const int Length = 16;

    public static string New() => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(Length));

    public static bool IsValid(string? id) =>
        id is { Length: Length * 2 } && id.All(c => c is >= '0' and <= '9' or >= 'a' and <= 'f');

    /// <summary>The short prefix shown in tables and logs.</summary>
    public static string Short(string id) => id.Length > 8 ? id[..8] : id;
}
