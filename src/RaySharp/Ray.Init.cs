using RaySharp.CoreWorker;

namespace RaySharp;

/// <summary>
/// The entry point of a RaySharp program (a driver). <c>using var ray = Ray.Init();</c> connects to the cluster started
/// on this machine, or starts an embedded one; <c>Ray.Init("auto")</c> requires the local cluster;
/// <c>Ray.Init("10.0.0.1:6379")</c> joins the head at that address. <c>RAYSHARP_ADDRESS</c> stands in for a missing
/// or "auto" address.
/// </summary>
/// <remarks>
/// A thin facade, split by concern: <c>Ray.Init.cs</c> (connect, disconnect), <c>Ray.Context.cs</c> (who is asking:
/// runtime context and cluster introspection), <c>Ray.Tasks.cs</c>, <c>Ray.Actors.cs</c>, <c>Ray.Objects.cs</c>. The
/// driver's runtime is a <see cref="DriverRuntime"/> in the core worker; <see cref="s_runtime"/> is the only static
/// of this class (inside a task, the worker's context answers instead).
/// </remarks>
public static partial class Ray
{
    public const string AddressEnvironmentVariable = DriverRuntime.AddressEnvironmentVariable;

    /// <summary>Serializes Init and Shutdown's swaps of <see cref="s_runtime"/>; never held across network work.</summary>
    private static readonly Lock s_gate = new();

    /// <summary>This process's driver runtime, between Init and Shutdown.</summary>
    private static DriverRuntime? s_runtime;

    /// <summary>True between <see cref="Init(string?, RayInitOptions?)"/> and <see cref="Shutdown"/>.</summary>
    public static bool IsInitialized => Volatile.Read(ref s_runtime) is not null;

    /// <summary>Connects this program to a RaySharp cluster; dispose the result (or call <see cref="Shutdown"/>) to disconnect.</summary>
    public static IDisposable Init(string? address = null, RayInitOptions? options = null) =>
        InitAsync(address, options).GetAwaiter().GetResult();

    public static async Task<IDisposable> InitAsync(string? address = null, RayInitOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new RayInitOptions();
        lock (s_gate)
        {
            if (s_runtime is not null)
                throw new RayException("Ray.Init was already called in this process; call Ray.Shutdown() (or dispose the result of Ray.Init) first.");
        }
        DriverRuntime runtime;
        try
        {
            runtime = await DriverRuntime.ConnectAsync(address, ToDriverOptions(options), cancellationToken).ConfigureAwait(false);
        }
        catch (DriverStartException e)
        {
            throw new RayException(e.Message, e);
        }
        bool raced;
        lock (s_gate)
        {
            raced = s_runtime is not null;
            if (!raced) s_runtime = runtime;
        }
        if (raced)
        {
            // The loser's goodbye happens here, outside the lock.
            await runtime.DisposeAsync().ConfigureAwait(false);
            throw new RayException("Ray.Init was called twice at once in this process.");
        }
        AppDomain.CurrentDomain.ProcessExit += OnProcessExit;
        return new Connection();
    }

    /// <summary>Disconnects: the job is marked finished, and an embedded cluster is stopped. Safe to call twice.</summary>
    public static void Shutdown() => ShutdownAsync().GetAwaiter().GetResult();

    /// <summary>As <see cref="Shutdown"/>, awaited.</summary>
    public static async Task ShutdownAsync()
    {
        if (TakeRuntime() is { } runtime) await runtime.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>Takes the runtime out under the lock; what is done with it (the network goodbye) is done outside.</summary>
    private static DriverRuntime? TakeRuntime()
    {
        DriverRuntime? runtime;
        lock (s_gate)
        {
            runtime = s_runtime;
            s_runtime = null;
        }
        if (runtime is not null) AppDomain.CurrentDomain.ProcessExit -= OnProcessExit;
        return runtime;
    }

    /// <summary>
    /// A process that exits without <see cref="Shutdown"/>: only the bounded local cleanup (an embedded cluster's
    /// processes stopped by pid). The GCS sees the registration close with the process and ends the job itself.
    /// </summary>
    private static void OnProcessExit(object? sender, EventArgs e) => TakeRuntime()?.StopLocal();

    private static DriverOptions ToDriverOptions(RayInitOptions options) => new()
    {
        NumCpus = options.NumCpus,
        NumGpus = options.NumGpus,
        Resources = options.Resources,
        TempDir = options.TempDir,
        Namespace = options.Namespace,
        Token = options.Token,
        ConnectTimeout = options.ConnectTimeout,
        GcsReconnectTimeout = options.GcsReconnectTimeout,
    };

    /// <summary>The driver's runtime; throws when there is none.</summary>
    private static DriverRuntime Runtime =>
        Volatile.Read(ref s_runtime) ?? throw NotInitialized();

    private static RayException NotInitialized() => new("RaySharp is not initialized: call Ray.Init() first.");

    private sealed class Connection : IDisposable
    {
        public void Dispose() => Shutdown();
    }
}
