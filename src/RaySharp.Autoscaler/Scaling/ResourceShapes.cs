using System.Globalization;
using System.Text;

namespace RaySharp.Autoscaler.Scaling;

/// <summary>
/// One resource shape and how many of it are wanted: <c>{CPU: 1} × 40</c> is forty tasks that each need one CPU.
/// </summary>
internal sealed record ResourceDemand(IReadOnlyDictionary<string, double> Shape, int Count)
{
    public override string ToString() => $"{ResourceShapes.Format(Shape)} × {Count}";
}

/// <summary>
/// Arithmetic on resource maps as the autoscaler plans with them: doubles (fractional CPUs and GPUs are legal), compared
/// with an epsilon so that 0.1 + 0.2 of a GPU still fits into 0.3.
/// </summary>
internal static class ResourceShapes
{
    public const double Epsilon = 1e-6;

    public static bool Fits(IReadOnlyDictionary<string, double> node, IReadOnlyDictionary<string, double> shape)
    {
        foreach (var (name, quantity) in shape)
        {
            if (quantity <= Epsilon) continue;
            if (node.GetValueOrDefault(name) + Epsilon < quantity) return false;
        }
        return true;
    }

    public static void Subtract(Dictionary<string, double> node, IReadOnlyDictionary<string, double> shape)
    {
        foreach (var (name, quantity) in shape)
            if (quantity > Epsilon) node[name] = node.GetValueOrDefault(name) - quantity;
    }

    /// <summary>True when nothing of <paramref name="total"/> is in use (what an idle node looks like).</summary>
    public static bool AllAvailable(IReadOnlyDictionary<string, double> total, IReadOnlyDictionary<string, double> available) =>
        total.All(t => available.GetValueOrDefault(t.Key) + Epsilon >= t.Value);

    public static Dictionary<string, double> Copy(IReadOnlyDictionary<string, double> resources) =>
        new(resources.Where(r => r.Value > Epsilon), StringComparer.Ordinal);

    /// <summary>A key equal for equal shapes (zero entries and order do not matter), to group demand by shape.</summary>
    public static string Key(IReadOnlyDictionary<string, double> shape) =>
        string.Join(",", shape.Where(r => r.Value > Epsilon).OrderBy(r => r.Key, StringComparer.Ordinal)
            .Select(r => r.Key + "=" + r.Value.ToString("R", CultureInfo.InvariantCulture)));

    /// <summary>As Ray prints a shape in <c>ray status</c>: <c>{'CPU': 1.0, 'GPU': 1.0}</c>.</summary>
    public static string Format(IReadOnlyDictionary<string, double> shape)
    {
        var sb = new StringBuilder("{");
        foreach (var (name, quantity) in shape.Where(r => r.Value > Epsilon).OrderBy(r => r.Key, StringComparer.Ordinal))
        {
            if (sb.Length > 1) sb.Append(", ");
            sb.Append('\'').Append(name).Append("': ").Append(Number(quantity));
        }
        return sb.Append('}').ToString();
    }

    /// <summary>Ray's way with quantities: always one decimal at least (<c>1.0</c>, <c>0.5</c>).</summary>
    public static string Number(double value) =>
        value == Math.Floor(value) && Math.Abs(value) < 1e15
            ? value.ToString("0.0", CultureInfo.InvariantCulture)
            : value.ToString("0.0###", CultureInfo.InvariantCulture);

    /// <summary>Adds up shapes that are equal, keeping the order in which each shape was first seen.</summary>
    public static IReadOnlyList<ResourceDemand> Group(IEnumerable<ResourceDemand> demands)
    {
        var byKey = new Dictionary<string, (IReadOnlyDictionary<string, double> Shape, int Count, int Order)>(StringComparer.Ordinal);
        foreach (var d in demands)
        {
            if (d.Count <= 0) continue;
            var key = Key(d.Shape);
            byKey[key] = byKey.TryGetValue(key, out var seen) ? (seen.Shape, seen.Count + d.Count, seen.Order) : (d.Shape, d.Count, byKey.Count);
        }
        return [.. byKey.Values.OrderBy(v => v.Order).Select(v => new ResourceDemand(v.Shape, v.Count))];
    }
}
