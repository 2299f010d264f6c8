using System.Collections.Concurrent;
using System.Globalization;

namespace RaySharp.Common;

/// <summary>
/// Test hooks that make a failure happen at a chosen point, so failure paths are tested deterministically rather than
/// by luck (Ray's <c>RAY_testing_rpc_failure</c>). Both are read from the environment once per process; node processes
/// pass their environment to the workers they start, so setting them on <c>raysharp start</c> reaches a whole node.
/// Unset (as in production), every check is one null test.
/// </summary>
internal static class FaultInjection
{
    /// <summary>
    /// <c>Method=N[@Status][,Method=N[@Status]]</c>: this process fails the first N calls it serves of each named RPC (a
    /// gRPC method such as <c>KvGet</c>), answered with <c>Unavailable</c> as a GCS that is down would be, or with the
    /// gRPC status named after <c>@</c> (<c>GetActorInfo=3@Internal</c>).
    /// </summary>
    public const string RpcFailureEnv = "RAYSHARP_testing_rpc_failure";

    /// <summary>
    /// <c>task:&lt;name&gt;:&lt;attempt&gt;</c>: a worker SIGKILLs itself as it starts that attempt (1 = the first run) of a
    /// task of that name, as a worker that crashes mid-task.
    /// </summary>
    public const string DieAtEnv = "RAYSHARP_testing_die_at";

    private static readonly Dictionary<string, string> s_rpcFailureStatus = new(StringComparer.Ordinal);
    private static readonly IReadOnlyDictionary<string, int>? s_rpcFailureCounts = ParseRpcFailures(Environment.GetEnvironmentVariable(RpcFailureEnv), s_rpcFailureStatus);
    private static readonly ConcurrentDictionary<string, int>? s_rpcFailuresLeft =
        s_rpcFailureCounts is null ? null : new ConcurrentDictionary<string, int>(s_rpcFailureCounts, StringComparer.Ordinal);
    private static readonly (string Task, int Attempt)? s_dieAtTask = ParseDieAt(Environment.GetEnvironmentVariable(DieAtEnv));

    /// <summary>
    /// True when this call of <paramref name="method"/> must fail: the <paramref name="ordinal"/>th of
    /// <paramref name="total"/>, with the gRPC status named <paramref name="status"/>.
    /// </summary>
    public static bool FailRpc(string method, out int ordinal, out int total, out string status)
    {
        ordinal = total = 0;
        status = s_rpcFailureStatus.GetValueOrDefault(method, "Unavailable");
        if (s_rpcFailuresLeft is null || !s_rpcFailureCounts!.TryGetValue(method, out total)) return false;
        var left = s_rpcFailuresLeft.AddOrUpdate(method, -1, static (_, n) => n - 1);
        ordinal = total - left;
        return left >= 0;
    }

    /// <summary>Kills this process when a test asked it to die at this attempt of this task.</summary>
    public static void AtTaskStart(string taskName, int attempt)
    {
        if (s_dieAtTask is not { } point || point.Task != taskName || point.Attempt != attempt) return;
        Console.Error.WriteLine($"[fault injection] {DieAtEnv}: killing worker pid {Environment.ProcessId} at attempt {attempt} of task {taskName}");
        Console.Error.Flush();
        Posix.Kill(Environment.ProcessId, Posix.SIGKILL);
    }

    private static Dictionary<string, int>? ParseRpcFailures(string? spec, Dictionary<string, string> statuses)
    {
        if (string.IsNullOrWhiteSpace(spec)) return null;
        var map = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var part in spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var kv = part.Split('=', 2);
            var count = kv.Length == 2 ? kv[1] : "1";
            if (count.Split('@', 2) is [var n, var status])
            {
                statuses[kv[0]] = status;
                count = n;
            }
            map[kv[0]] = int.TryParse(count, NumberStyles.None, CultureInfo.InvariantCulture, out var times) ? times : 1;
        }
        return map;
    }

    private static (string, int)? ParseDieAt(string? spec)
    {
        if (string.IsNullOrWhiteSpace(spec)) return null;
        var parts = spec.Split(':');
        return parts.Length == 3 && parts[0] == "task" && int.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out var attempt)
            ? (parts[1], attempt)
            : throw new ArgumentException($"{DieAtEnv}='{spec}' is not task:<name>:<attempt>");
    }
}
