using System.Text.Json;

namespace RaySharp.Common;

/// <summary>Resource names and arithmetic on resource maps (<c>{"CPU": 4, "GPU": 1, "custom": 2}</c>).</summary>
internal static class ResourceSet
{
    public const string Cpu = "CPU";
    public const string Gpu = "GPU";
    public const string Memory = "memory";
    public const string ObjectStoreMemory = "object_store_memory";

    /// <summary>Ray's per-node resource, <c>node:&lt;ip&gt;</c>, that pins work to a node by IP.</summary>
    public static string NodeIpResource(string ip) => "node:" + ip;

    private const double Epsilon = 1e-9;

    /// <summary>Parses the <c>--resources</c> JSON object; the error names the problem and the fix.</summary>
    public static bool TryParseJson(string? json, out Dictionary<string, double> resources, out string error)
    {
        resources = new Dictionary<string, double>(StringComparer.Ordinal);
        error = "";
        if (string.IsNullOrWhiteSpace(json)) return true;
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json);
        }
        catch (JsonException e)
        {
            error = $"--resources is not valid JSON ({e.Message}). Pass a JSON object of names to quantities, for example --resources '{{\"accelerator\": 2, \"ssd\": 1}}'";
            return false;
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                error = $"--resources must be a JSON object of names to quantities, not a {doc.RootElement.ValueKind.ToString().ToLowerInvariant()}; for example --resources '{{\"accelerator\": 2}}'";
                return false;
            }
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name is Cpu or Gpu)
                {
                    error = $"--resources must not set \"{prop.Name}\"; use --num-{prop.Name.ToLowerInvariant()}s instead";
                    return false;
                }
                if (!IsValidName(prop.Name))
                {
                    error = $"resource name \"{prop.Name}\" in --resources is not allowed: use letters, digits, '_', '-', '.', ':' or '/' (at most 128 characters)";
                    return false;
                }
                if (prop.Value.ValueKind != JsonValueKind.Number || !prop.Value.TryGetDouble(out var quantity) || !double.IsFinite(quantity))
                {
                    error = $"resource \"{prop.Name}\" in --resources must be a number, got {prop.Value.GetRawText()}";
                    return false;
                }
                if (quantity < 0)
                {
                    error = $"resource \"{prop.Name}\" in --resources must not be negative, got {quantity}";
                    return false;
                }
                resources[prop.Name] = quantity;
            }
        }
        return true;
    }

    public static bool IsValidName(string name) =>
        name.Length is > 0 and <= 128 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.' or ':' or '/');

    /// <summary>True when every quantity in <paramref name="demand"/> is available in <paramref name="pool"/>.</summary>
    public static bool Fits(IReadOnlyDictionary<string, double> demand, IReadOnlyDictionary<string, double> pool)
    {
        foreach (var (name, quantity) in demand)
        {
            if (quantity <= 0) continue;
            if (!pool.TryGetValue(name, out var have) || have + Epsilon < quantity) return false;
        }
        return true;
    }

    public static void Subtract(IDictionary<string, double> pool, IReadOnlyDictionary<string, double> demand)
    {
        foreach (var (name, quantity) in demand)
        {
            if (quantity <= 0) continue;
            pool[name] = Math.Max(0, pool.TryGetValue(name, out var have) ? have - quantity : -quantity);
        }
    }

    public static void Add(IDictionary<string, double> pool, IReadOnlyDictionary<string, double> demand, IReadOnlyDictionary<string, double> cap)
    {
        foreach (var (name, quantity) in demand)
        {
            if (quantity <= 0) continue;
            var next = (pool.TryGetValue(name, out var have) ? have : 0) + quantity;
            pool[name] = cap.TryGetValue(name, out var max) ? Math.Min(max, next) : next;
        }
    }

    /// <summary>A stable text form of a shape, for logs and for grouping demands.</summary>
    public static string Describe(IReadOnlyDictionary<string, double> shape) =>
        shape.Count == 0 ? "{}" : "{" + string.Join(", ", shape.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}: {kv.Value:0.###}")) + "}";
}
