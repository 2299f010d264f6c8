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
/// runtime context and cluster introspection), <c>Ray.Tasks.cs</c>, <c>Ray.Actors.cs</c>, <c>Ray.Objects.cs</c>. What
/// it speaks for is the process's core worker runtime, <see cref="CoreWorkerProcess.Current"/>: a driver's
/// <see cref="DriverRuntime"/> between Init and Shutdown, or, inside a task, the <see cref="WorkerRuntime"/> of the
/// worker running it. That is the one static the API reads; the core worker reads none.
/// </remarks>
public static partial class Ray
{
    public const string AddressEnvironmentVariable = DriverRuntime.AddressEnvironmentVariable;

    /// <summary>True between <see cref="Init(string?, RayInitOptions?)"/> and <see cref="Shutdown"/>.</summary>
    public static bool IsInitialized => CoreWorkerProcess.Current is DriverRuntime;

    /// <summary>Connects this program to a RaySharp cluster; dispose the result (or call <see cref="Shutdown"/>) to disconnect.</summary>
    public static IDisposable Init(string? address = null, RayInitOptions? options = null) =>
        InitAsync(address, options).GetAwaiter().GetResult();

    public static async Task<IDisposable> InitAsync(string? address = null, RayInitOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new RayInitOptions();
        if (CoreWorkerProcess.Current is not null) throw AlreadyInitialized();
        DriverRuntime runtime;
        try
        {
            runtime = await DriverRuntime.ConnectAsync(address, ToDriverOptions(options), cancellationToken).ConfigureAwait(false);
        }
        catch (DriverStartException e)
        {
            throw new RayException(e.Message, e);
        }
        if (!CoreWorkerProcess.TryInstall(runtime))
        {
            // Two Inits at once: the loser says goodbye.
            await runtime.DisposeAsync().ConfigureAwait(false);
            throw AlreadyInitialized();
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

    /// <summary>Takes the driver's runtime out of the process (at most once); what is done with it (the network goodbye) is the caller's.</summary>
    private static DriverRuntime? TakeRuntime()
    {
        if (CoreWorkerProcess.Current is not DriverRuntime runtime || !CoreWorkerProcess.Uninstall(runtime)) return null;
        AppDomain.CurrentDomain.ProcessExit -= OnProcessExit;
        return runtime;
    }

    private static RayException AlreadyInitialized() => CoreWorkerProcess.Current is WorkerRuntime
        ? new RayException("Ray.Init cannot be called inside a task or actor: it already runs in the cluster, and Ray's API works there as it is.")
        : new RayException("Ray.Init was already called in this process; call Ray.Shutdown() (or dispose the result of Ray.Init) first.");

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

    /// <summary>The process's runtime (a driver's, or inside a task the worker's); throws when there is none.</summary>
    private static CoreWorkerRuntime Runtime => CoreWorkerProcess.Current ?? throw NotInitialized();

    private static RayException NotInitialized() => new("RaySharp is not initialized: call Ray.Init() first.");

    private sealed class Connection : IDisposable
    {
        public void Dispose() => Shutdown();
    }
}
