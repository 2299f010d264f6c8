using RaySharp.Common;

namespace RaySharp;

/// <summary>How long an actor lives.</summary>
public enum ActorLifetime
{
    /// <summary>Until it is killed, or the job (driver) that created it ends. The default.</summary>
    Owned,

    /// <summary>Until it is killed (<see cref="Ray.Kill{TActor}(ActorHandle{TActor}, bool)"/>): it outlives the driver that created it.</summary>
    Detached,
}

/// <summary>Options of an actor, given when it is created. Each default is the value used when unset.</summary>
public sealed record ActorOptions
{
    /// <summary>
    /// CPUs the actor holds while it lives. Default: unset, which places the actor where 1 CPU is free but holds none
    /// while it runs, as Ray does (so many idle actors fit one node).
    /// </summary>
    public double? NumCpus { get; init; }

    /// <summary>GPUs the actor holds for its whole life (its process gets <c>CUDA_VISIBLE_DEVICES</c>). Default 0.</summary>
    public double NumGpus { get; init; }

    /// <summary>Custom resources the actor holds for its whole life. Default none.</summary>
    public IReadOnlyDictionary<string, double>? Resources { get; init; }

    /// <summary>A name unique in <see cref="Namespace"/>, to find the actor from anywhere with <see cref="Ray.GetActor{TActor}(string, string?)"/>. Default none.</summary>
    public string? Name { get; init; }

    /// <summary>Namespace of <see cref="Name"/>. Default: the driver's (<see cref="RayInitOptions.Namespace"/>).</summary>
    public string? Namespace { get; init; }

    /// <summary>With a <see cref="Name"/> that is taken: return the existing actor instead of failing. Default false.</summary>
    public bool GetIfExists { get; init; }

    /// <summary>Default <see cref="ActorLifetime.Owned"/>.</summary>
    public ActorLifetime Lifetime { get; init; }

    /// <summary>
    /// Calls that run at once. Default: 1 for a class whose methods are all synchronous (calls run one by one, in
    /// order); 1000 for a class with methods returning <c>Task</c>/<c>ValueTask</c> (they interleave at their awaits
    /// but never run in parallel). Above 1 on a synchronous class, calls run in parallel on that many threads.
    /// </summary>
    public int? MaxConcurrency { get; init; }

    /// <summary>Times the actor is rebuilt (its constructor run again) after its process or node dies; -1: no limit. Default 0.</summary>
    public int MaxRestarts { get; init; }

    /// <summary>Times a call interrupted by the actor's death is sent again to the restarted actor; -1: no limit. Default 0 (it fails).</summary>
    public int MaxTaskRetries { get; init; }

    /// <summary>Most calls from one caller not yet answered; one more throws <see cref="PendingCallsLimitExceededException"/>. Default -1 (no limit).</summary>
    public int MaxPendingCalls { get; init; } = -1;

    /// <summary>Where the actor goes. Default <see cref="SchedulingStrategy.Default"/>.</summary>
    public SchedulingStrategy Strategy { get; init; } = SchedulingStrategy.Default;

    /// <summary>
    /// Share a worker process with other lightweight actors instead of taking one of its own. Only for actors that
    /// ask for no CPU, GPU or custom resource. A node then holds tens of thousands of actors where one process per
    /// actor stops at hundreds; the price is isolation: a crash of the process takes all its actors. Each actor still
    /// runs its calls one at a time unless it asks for more with <see cref="MaxConcurrency"/>. Default false.
    /// </summary>
    public bool Lightweight { get; init; }

    internal (Dictionary<string, double> Held, Dictionary<string, double> Placement) Shapes()
    {
        if (MaxRestarts < -1) throw new ArgumentException($"ActorOptions.MaxRestarts must be -1 (no limit) or more, got {MaxRestarts}");
        if (MaxTaskRetries < -1) throw new ArgumentException($"ActorOptions.MaxTaskRetries must be -1 (no limit) or more, got {MaxTaskRetries}");
        if (MaxConcurrency is < 1) throw new ArgumentException($"ActorOptions.MaxConcurrency must be 1 or more, got {MaxConcurrency}");
        if (NumCpus is < 0 || NumGpus < 0) throw new ArgumentException("ActorOptions.NumCpus and NumGpus cannot be negative");
        var held = new TaskOptions { NumCpus = NumCpus ?? 0, NumGpus = NumGpus, Resources = Resources }.Shape();
        if (Lightweight && Strategy.Group is not null)
            throw new ArgumentException("a lightweight actor shares a process outside any placement group; drop Lightweight to run it in a group's bundle");
        if (Lightweight)
        {
            if (held.Count > 0)
                throw new ArgumentException($"a lightweight actor shares a process and holds no resources, but these options ask for {ResourceSet.Describe(held)}; drop Lightweight or the resources");
            return (held, held);
        }
        var placement = new Dictionary<string, double>(held, StringComparer.Ordinal);
        // In a group the bundle's marker already picks the node, and a bundle may hold no CPU (a GPU-only one).
        if (NumCpus is null && Strategy.Group is null) placement[ResourceSet.Cpu] = 1;
        return (held, placement);
    }
}
