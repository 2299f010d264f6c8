using System.Globalization;

namespace RaySharp.Node;

/// <summary>
/// The node host's arguments: <c>&lt;component&gt; --name value ... [--detach | --exit-with-parent]</c>. They are written
/// by RaySharp's own launchers, not by people, so a plain parser with strict errors is enough.
/// </summary>
internal sealed class NodeArguments
{
    private readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);
    private readonly HashSet<string> _flags = new(StringComparer.Ordinal);

    public string Component { get; }

    private static readonly HashSet<string> s_flagNames = ["--detach", "--exit-with-parent", "--head"];

    public NodeArguments(string[] args)
    {
        if (args.Length == 0) throw new ArgumentException("usage: raysharp-node <gcs_server|raylet|worker> [--option value]...");
        Component = args[0];
        for (var i = 1; i < args.Length; i++)
        {
            var a = args[i];
            if (!a.StartsWith("--", StringComparison.Ordinal)) throw new ArgumentException($"unexpected argument '{a}'");
            if (s_flagNames.Contains(a)) _flags.Add(a);
            else if (i + 1 < args.Length) _values[a] = args[++i];
            else throw new ArgumentException($"option {a} needs a value");
        }
    }

    public bool Flag(string name) => _flags.Contains(name);

    public string? Optional(string name) => _values.GetValueOrDefault(name);

    public string Required(string name) =>
        _values.TryGetValue(name, out var v) ? v : throw new ArgumentException($"option {name} is required for {Component}");

    public int Int(string name, int fallback) =>
        _values.TryGetValue(name, out var v) ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;
}
