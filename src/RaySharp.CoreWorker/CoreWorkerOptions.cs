namespace RaySharp.CoreWorker;

/// <summary>What a worker process is told by the raylet that starts it.</summary>
internal sealed class CoreWorkerOptions
{
    public required string WorkerId { get; init; }
    public required string NodeId { get; init; }

    /// <summary>The raylet that started this worker, <c>ip:port</c>.</summary>
    public required string RayletAddress { get; init; }

    public required string GcsAddress { get; init; }
    public required string NodeIpAddress { get; init; }

    /// <summary>The node's session directory; job code is cached under <c>code/</c> there.</summary>
    public required string SessionDir { get; init; }

    /// <summary>The worker listens on the first free port of this range (Ray's 10002-19999 by default).</summary>
    public int MinWorkerPort { get; init; } = 10002;
    public int MaxWorkerPort { get; init; } = 19999;

    /// <summary>How long registration with the raylet may take before the worker gives up and exits. Default 30 s.</summary>
    public TimeSpan RegisterTimeout { get; init; } = TimeSpan.FromSeconds(30);
}
