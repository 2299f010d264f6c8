using Google.Protobuf;
using RaySharp.Common;
using RaySharp.CoreWorker.CodeShipping;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;

namespace RaySharp.CoreWorker;

/// <summary>How a driver connects: which cluster (discovery, or an embedded one), then its job, code and registration.</summary>
internal sealed partial class DriverRuntime
{
    /// <summary>
    /// Connects this process to a cluster: <paramref name="address"/> null (the local cluster if one answers, else an
    /// embedded one), "auto" (the local cluster, required) or "ip:port"; <see cref="AddressEnvironmentVariable"/>
    /// stands in for a null or "auto" one.
    /// </summary>
    /// <exception cref="DriverStartException">No cluster to join, or one that refused or would not start; the message says what to do.</exception>
    public static async Task<DriverRuntime> ConnectAsync(string? address, DriverOptions options, CancellationToken cancellationToken)
    {
        var root = SessionDirectory.ResolveRoot(options.TempDir);
        if (string.IsNullOrWhiteSpace(address) || address == "auto")
        {
            if (Environment.GetEnvironmentVariable(AddressEnvironmentVariable) is { Length: > 0 } env && env != "auto") address = env;
        }
        RpcChannelPool? channels = null;
        EmbeddedCluster? embedded = null;
        try
        {
            string gcsAddress;
            if (address == "auto")
            {
                gcsAddress = SessionDirectory.ReadCurrentClusterAddress(root)
                    ?? throw new DriverStartException($"Ray.Init(\"auto\") found no RaySharp cluster on this machine ({SessionDirectory.CurrentClusterFile(root)} does not exist). " +
                                                      "Start one with `raysharp start --head`, or call Ray.Init() to start an embedded cluster.");
            }
            else if (!string.IsNullOrWhiteSpace(address))
            {
                if (!NodeAddress.TryParse(address, out var host, out var port, out var error))
                    throw new DriverStartException($"Ray.Init(\"{address}\"): {error}. Give the head's address as \"<ip>:<port>\", or \"auto\".");
                gcsAddress = NodeAddress.Format(host, port);
            }
            else if (SessionDirectory.ReadCurrentClusterAddress(root) is { } local && await AnswersAsync(local, SecurityFor(options.Token, root, local), cancellationToken).ConfigureAwait(false))
            {
                gcsAddress = local;
            }
            else
            {
                embedded = await EmbeddedCluster.StartAsync(options, cancellationToken).ConfigureAwait(false);
                gcsAddress = embedded.GcsAddress;
            }

            // Every connection this driver opens (gRPC, framed, object transfer) presents the cluster's token.
            var security = SecurityFor(embedded?.Token ?? options.Token, root, gcsAddress);
            RpcSecurityOptions.Current = security;
            channels = new RpcChannelPool(security, connectTimeout: TimeSpan.FromSeconds(3));
            var gcs = new GcsClient(channels, gcsAddress, ReconnectTimeout(options));
            try
            {
                await gcs.WaitReachableAsync(options.ConnectTimeout, cancellationToken).ConfigureAwait(false);
            }
            catch (ClusterTokenRefusedException e)
            {
                throw new DriverStartException($"Ray.Init: {e.Message}");
            }
            catch (GcsUnreachableException e)
            {
                throw new DriverStartException($"Could not reach the RaySharp head (GCS) at {gcsAddress} within {options.ConnectTimeout.TotalSeconds:0} s: {e.Message}. " +
                                               "Check that the cluster is running (`raysharp status` on the head), that the address is the one `raysharp start --head` printed, and that no firewall blocks the port.");
            }
            NodeAddress.TryParse(gcsAddress, out var gcsHost, out _, out _);
            var nodeIp = embedded?.NodeIpAddress ?? NodeAddress.DetectNodeIp(gcsHost);
            var jobId = (await gcs.Jobs.GetNextJobIdAsync(new GetNextJobIdRequest(), cancellationToken: cancellationToken).ConfigureAwait(false)).JobId;
            await gcs.Jobs.AddJobAsync(new AddJobRequest
            {
                JobInfo = new JobInfo
                {
                    JobId = jobId,
                    DriverIpAddress = nodeIp,
                    DriverPid = Environment.ProcessId,
                    Entrypoint = Environment.CommandLine,
                    Namespace = options.Namespace ?? Submission.ActorCallerContext.AnonymousNamespace(jobId),
                },
            }, cancellationToken: cancellationToken).ConfigureAwait(false);
            // Ship the application's code once per job, so workers anywhere can run its functions.
            await CodePackage.UploadAsync(gcs, jobId, AppContext.BaseDirectory, System.Reflection.Assembly.GetEntryAssembly()?.GetName().Name, cancellationToken).ConfigureAwait(false);
            // The GCS learns of this driver's exit (even by SIGKILL) when this connection closes, and ends the job.
            var driverConnection = await RegisterDriverAsync(gcsAddress, jobId, cancellationToken).ConfigureAwait(false);
            return new DriverRuntime(channels, gcs, jobId, nodeIp, embedded, options.Namespace, driverConnection, ReconnectTimeout(options),
                new LocalRayletFinder(gcs, nodeIp, embedded?.SessionDir));
        }
        catch
        {
            if (embedded is not null) await embedded.DisposeAsync().ConfigureAwait(false);
            channels?.Dispose();
            throw;
        }
    }

    /// <summary>What to present to the cluster at <paramref name="gcsAddress"/>: the token given, else this machine's token and TLS files (environment, node session).</summary>
    private static RpcSecurityOptions SecurityFor(string? token, string root, string gcsAddress)
    {
        try
        {
            return RpcSecurityOptions.ForCluster(root, gcsAddress, token);
        }
        catch (InvalidOperationException e)
        {
            throw new DriverStartException("Ray.Init: " + e.Message);
        }
    }

    private static TimeSpan ReconnectTimeout(DriverOptions options) => options.GcsReconnectTimeout ?? GcsClient.ReconnectTimeoutFromEnvironment();

    /// <summary>Opens the connection whose closing tells the GCS this driver is gone, and names the job on it.</summary>
    private static async Task<Rpc.Transport.FramedConnection> RegisterDriverAsync(string gcsAddress, string jobId, CancellationToken cancellationToken)
    {
        NodeAddress.TryParse(gcsAddress, out var gcsIp, out var gcsPort, out _);
        var connection = await Rpc.Transport.FramedClient.ConnectAsync(gcsIp, gcsPort, cancellationToken: cancellationToken).ConfigureAwait(false);
        try
        {
            await connection.CallAsync(Rpc.Transport.FramedMethods.RegisterDriver, new RegisterDriverRequest { JobId = jobId }.ToByteArray(), cancellationToken).ConfigureAwait(false);
            return connection;
        }
        catch
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private static async Task<bool> AnswersAsync(string address, RpcSecurityOptions security, CancellationToken cancellationToken)
    {
        using var channels = new RpcChannelPool(security, connectTimeout: TimeSpan.FromSeconds(3));
        try
        {
            await new GcsClient(channels, address).WaitReachableAsync(TimeSpan.FromSeconds(2), cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (GcsUnreachableException)
        {
            return false; // a stale pointer left by a cluster that is gone: start an embedded one instead
        }
    }
}
