using RaySharp.Common;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Cli;

/// <summary>Finds and reaches the GCS of the cluster a command is about.</summary>
internal static class GcsConnection
{
    public const string AddressEnvironmentVariable = "RAYSHARP_ADDRESS";

    /// <summary>--address, else RAYSHARP_ADDRESS, else the local cluster's <c>current_cluster</c> file.</summary>
    public static string ResolveAddress(string? addressOption, string root)
    {
        if (!string.IsNullOrWhiteSpace(addressOption) && addressOption != "auto") return Normalize(addressOption);
        if (Environment.GetEnvironmentVariable(AddressEnvironmentVariable) is { Length: > 0 } env && env != "auto") return Normalize(env);
        return SessionDirectory.ReadCurrentClusterAddress(root)
            ?? throw new CliException($"No RaySharp cluster found on this machine ({SessionDirectory.CurrentClusterFile(root)} does not exist). " +
                                      "Start one with `raysharp start --head`, or pass --address=<head-ip>:<port>.");
    }

    /// <summary>
    /// Channels to the cluster at <paramref name="gcsAddress"/> that present this machine's token and TLS certificate for
    /// it (the environment's, else the local node's), which also become this process's for framed connections.
    /// </summary>
    public static RpcChannelPool Channels(string root, string gcsAddress)
    {
        try
        {
            RpcSecurityOptions.Current = RpcSecurityOptions.ForCluster(root, gcsAddress);
        }
        catch (InvalidOperationException e)
        {
            throw new CliException(e.Message);
        }
        return new RpcChannelPool(RpcSecurityOptions.Current, connectTimeout: TimeSpan.FromSeconds(3));
    }

    /// <summary>The error of a command whose GCS did not answer, or refused it.</summary>
    public static CliException Unreachable(string address, Grpc.Core.RpcException e) =>
        e.StatusCode == Grpc.Core.StatusCode.Unauthenticated
            ? new($"The RaySharp GCS at {address} refused this command: {e.Status.Detail}")
            : new($"Could not reach the RaySharp GCS at {address} ({e.Status.Detail}). Is the cluster running? " +
                  "Start it with `raysharp start --head`, or pass the right --address.");

    public static string Normalize(string address)
    {
        if (!NodeAddress.TryParse(address, out var host, out var port, out var error))
            throw new CliException($"Invalid address '{address}': {error}.");
        return NodeAddress.Format(host, port);
    }

    /// <summary>Asks the GCS who it is, retrying refused connections until <paramref name="budget"/> runs out.</summary>
    public static async Task<GetClusterInfoReply> CheckReachableAsync(RpcChannelPool channels, string address, TimeSpan budget, CancellationToken cancellationToken)
    {
        try
        {
            return await new GcsClient(channels, address).WaitReachableAsync(budget, cancellationToken).ConfigureAwait(false);
        }
        catch (GcsUnreachableException e)
        {
            NodeAddress.TryParse(address, out _, out var port, out _);
            throw new CliException(
                $"Could not reach the RaySharp head (GCS) at {address} within {budget.TotalSeconds:0} s: {e.Message}.\n" +
                $"Check that:\n" +
                $"  - the head node is running (`raysharp start --head` on it; `raysharp status` there shows it),\n" +
                $"  - {address} is the address that `raysharp start --head` printed (IP and port),\n" +
                $"  - no firewall blocks TCP port {port} between this machine and the head,\n" +
                $"  - both sides use TLS or neither: a cluster started with --tls-cert needs --tls-cert, --tls-key and --tls-ca (of its CA) here too.");
        }
    }
}
