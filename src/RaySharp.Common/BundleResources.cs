namespace RaySharp.Common;

/// <summary>
/// The names a committed placement-group bundle's resources take on its node, Ray's: <c>CPU_group_2_&lt;group&gt;</c>
/// for bundle 2's CPUs, <c>CPU_group_&lt;group&gt;</c> for the group's CPUs on the node whatever the bundle, and the
/// bundle markers <c>bundle_group_2_&lt;group&gt;</c> / <c>bundle_group_&lt;group&gt;</c>. In one place so that the raylet
/// (which creates them), the GCS and core workers (which ask for them) cannot disagree.
/// </summary>
internal static class BundleResources
{
    /// <summary>Ray's marker resource per bundle: a task asks for a sliver of it to target a bundle without resources.</summary>
    public const string Marker = "bundle";

    /// <summary>What each bundle adds of its marker (Ray's 1000, so a task's small share never exhausts it).</summary>
    public const double MarkerQuantity = 1000;

    /// <summary>What a task or actor in a group asks for of the marker (Ray's 0.001): a millionth of one bundle's, so a million fit.</summary>
    public const double MarkerShare = 0.001;

    private const string Infix = "_group_";

    /// <summary><c>R_group_i_G</c>: resource <paramref name="name"/> of bundle <paramref name="index"/> only.</summary>
    public static string Indexed(string name, string groupId, int index) => $"{name}{Infix}{index}_{groupId}";

    /// <summary><c>R_group_G</c>: resource <paramref name="name"/> of any of the group's bundles on the node.</summary>
    public static string Wildcard(string name, string groupId) => $"{name}{Infix}{groupId}";

    /// <summary>
    /// The group resources one committed bundle adds to its node, indexed and wildcard, markers included; the wildcard
    /// quantities are this bundle's share (several bundles of a group on one node add up).
    /// </summary>
    public static Dictionary<string, double> Committed(string groupId, int index, IReadOnlyDictionary<string, double> resources)
    {
        var result = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var (name, quantity) in resources)
        {
            if (quantity <= 0) continue;
            result[Indexed(name, groupId, index)] = quantity;
            result[Wildcard(name, groupId)] = quantity;
        }
        result[Indexed(Marker, groupId, index)] = MarkerQuantity;
        result[Wildcard(Marker, groupId)] = MarkerQuantity;
        return result;
    }

    /// <summary>True when <paramref name="name"/> is one of group <paramref name="groupId"/>'s resources (any bundle).</summary>
    public static bool BelongsTo(string name, string groupId) =>
        name.EndsWith(groupId, StringComparison.Ordinal) && name.Contains(Infix, StringComparison.Ordinal)
        && name.Length > groupId.Length && name[name.Length - groupId.Length - 1] == '_';

    /// <summary>True when <paramref name="name"/> is some placement group's resource (a group id after <c>_group_</c>).</summary>
    public static bool IsGroupResource(string name)
    {
        var at = name.LastIndexOf('_');
        return at > 0 && UniqueId.IsValid(name[(at + 1)..]) && name.Contains(Infix, StringComparison.Ordinal);
    }
}
