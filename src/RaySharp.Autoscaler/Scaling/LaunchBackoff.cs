namespace RaySharp.Autoscaler.Scaling;

/// <summary>
/// Per node type: after a failed launch or setup the type waits before it is launched again, the wait doubling with
/// each failure in a row (a provider out of machines, or a setup that always fails, must not be hammered every tick),
/// and the failures are kept for <c>raysharp status</c>. Not thread-safe: the caller holds its lock.
/// </summary>
internal sealed class LaunchBackoff(AutoscalerOptions options)
{
    private readonly Dictionary<string, (int Failures, DateTimeOffset NotBefore, DateTimeOffset Since)> _byType = new(StringComparer.Ordinal);
    private readonly List<AutoscalerFailure> _recent = [];

    public IReadOnlyList<AutoscalerFailure> Recent => [.. _recent];

    /// <summary>
    /// Records the failure; when <paramref name="backOff"/>, the type also waits (a died raylet is not the launch's fault).
    /// A failure of a node launched (<paramref name="launchedAt"/>) no later than the type's last counted failure is one more of a
    /// launch the wait already counts: it is listed but does not double the wait, so 20 nodes of one launch failing
    /// their setups wait 5 s, not 5 s × 2^19 (the cap, 5 min).
    /// </summary>
    public void Failed(AutoscalerFailure failure, bool backOff, DateTimeOffset? launchedAt = null)
    {
        _recent.Add(failure);
        if (_recent.Count > options.MaxRecentFailures) _recent.RemoveRange(0, _recent.Count - options.MaxRecentFailures);
        if (!backOff) return;
        var known = _byType.TryGetValue(failure.NodeType, out var seen);
        if (known && launchedAt <= seen.Since) return;
        var failures = known ? seen.Failures + 1 : 1;
        var wait = options.InitialBackoff * Math.Pow(2, Math.Min(failures - 1, 30));
        if (wait > options.MaxBackoff) wait = options.MaxBackoff;
        _byType[failure.NodeType] = (failures, failure.Time + wait, failure.Time);
    }

    /// <summary>A node of the type joined: its launches work again, so the next failure waits the shortest time.</summary>
    public void Succeeded(string nodeType) => _byType.Remove(nodeType);

    public bool Waiting(string nodeType, DateTimeOffset now) => _byType.TryGetValue(nodeType, out var b) && now < b.NotBefore;

    public DateTimeOffset? NotBefore(string nodeType) => _byType.TryGetValue(nodeType, out var b) ? b.NotBefore : null;
}
