namespace RaySharp.CoreWorker;

/// <summary>
/// What <see cref="DriverRuntime.ConnectAsync"/> is told: the API's <c>RayInitOptions</c>, field for field (see
/// there for each default).
/// </summary>
internal sealed record DriverOptions
{
    public int? NumCpus { get; init; }
    public double? NumGpus { get; init; }
    public IReadOnlyDictionary<string, double>? Resources { get; init; }
    public string? TempDir { get; init; }
    public string? Namespace { get; init; }
    public string? Token { get; init; }
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(10);
    public TimeSpan? GcsReconnectTimeout { get; init; }
}

/// <summary>
/// A driver could not connect (no cluster, a bad address or token, an embedded cluster that would not start). The
/// message names the problem and the fix; the API rethrows it as a <c>RayException</c>.
/// </summary>
internal sealed class DriverStartException : Exception
{
    public DriverStartException(string message) : base(message) { }
    public DriverStartException(string message, Exception inner) : base(message, inner) { }
}
