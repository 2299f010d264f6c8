using System.Net;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.Extensions.Logging;

namespace RaySharp.Rpc;

/// <summary>
/// The single point where every incoming connection and call of every RaySharp server is authenticated and validated.
/// Services never check credentials or well-formedness themselves: a request that reaches a handler passed here.
/// </summary>
internal sealed class RpcGatekeeper(RpcSecurityOptions security, ILogger<RpcGatekeeper> logger) : Interceptor
{
    public const string AuthorizationHeader = "authorization";

    /// <summary>Called once per accepted TCP connection, before any byte of it is parsed.</summary>
    public bool AcceptConnection(EndPoint? remote)
    {
        if (security.AllowedNetworks.Count == 0 || remote is not IPEndPoint ip) return true;
        var allowed = security.AllowedNetworks.Any(n => n.Contains(ip.Address.IsIPv4MappedToIPv6 ? ip.Address.MapToIPv4() : ip.Address));
        if (!allowed) RpcLog.ConnectionRefused(logger, remote.ToString() ?? "?");
        return allowed;
    }

    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        Admit(request, context);
        return continuation(request, context);
    }

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Admit(request, context);
        return continuation(request, responseStream, context);
    }

    public override Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Authenticate(context);
        return continuation(requestStream, context);
    }

    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Authenticate(context);
        return continuation(requestStream, responseStream, context);
    }

    private void Admit<TRequest>(TRequest request, ServerCallContext context)
    {
        Authenticate(context);
        var method = context.Method[(context.Method.LastIndexOf('/') + 1)..];
        if (Common.FaultInjection.FailRpc(method, out var ordinal, out var total))
        {
            RpcLog.FailureInjected(logger, method, ordinal, total);
            throw new RpcException(new Status(StatusCode.Unavailable, $"failure of {method} injected for a test ({ordinal} of {total})"));
        }
        if (request is IValidatedRequest validated && validated.Validate() is { } problem)
        {
            RpcLog.RequestRejected(logger, context.Method, context.Peer, problem);
            throw new RpcException(new Status(StatusCode.InvalidArgument, problem));
        }
    }

    public const string UnauthenticatedMessage =
        "this RaySharp cluster requires its cluster token; connect with the token printed by `raysharp start --head`";

    /// <summary>True when no token is required, or <paramref name="presentedToken"/> is the cluster's token.</summary>
    public bool IsTokenValid(string? presentedToken) =>
        security.ClusterToken is not { Length: > 0 } token
        || (presentedToken is not null && System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(
            System.Text.Encoding.UTF8.GetBytes(presentedToken), System.Text.Encoding.UTF8.GetBytes(token)));

    /// <summary>Admits a hot-path connection by the token of its Hello frame.</summary>
    public bool AdmitFramedConnection(string? presentedToken, string peer)
    {
        if (IsTokenValid(presentedToken)) return true;
        RpcLog.Unauthenticated(logger, "framed connection", peer);
        return false;
    }

    private void Authenticate(ServerCallContext context)
    {
        if (security.ClusterToken is not { Length: > 0 }) return;
        var header = context.RequestHeaders.GetValue(AuthorizationHeader);
        var presented = header is not null && header.StartsWith("Bearer ", StringComparison.Ordinal) ? header["Bearer ".Length..] : null;
        if (!IsTokenValid(presented))
        {
            RpcLog.Unauthenticated(logger, context.Method, context.Peer);
            throw new RpcException(new Status(StatusCode.Unauthenticated, UnauthenticatedMessage));
        }
    }
}

/// <summary>A request message that can say what is wrong with itself; checked by <see cref="RpcGatekeeper"/>.</summary>
internal interface IValidatedRequest
{
    /// <summary>Null when the request is well-formed, else a message naming the bad field.</summary>
    string? Validate();
}

/// <summary>Who may talk to a RaySharp server. Defaults admit everyone, as today; the cluster-token work tightens them.</summary>
internal sealed class RpcSecurityOptions
{
    /// <summary>Environment variable that carries the cluster token to every process of a node.</summary>
    public const string TokenEnvironmentVariable = "RAYSHARP_CLUSTER_TOKEN";

    /// <summary>When set, every call must carry <c>authorization: Bearer &lt;token&gt;</c>. Default: none (no token required).</summary>
    public string? ClusterToken { get; init; }

    /// <summary>When non-empty, connections from other networks are closed before any byte is read. Default: empty (any network).</summary>
    public IReadOnlyList<IPNetwork> AllowedNetworks { get; init; } = [];

    public static RpcSecurityOptions FromEnvironment() => new()
    {
        ClusterToken = Environment.GetEnvironmentVariable(TokenEnvironmentVariable) is { Length: > 0 } t ? t : null,
    };
}

internal static partial class RpcLog
{
    [LoggerMessage(EventId = 100, Level = LogLevel.Warning, Message = "Refused connection from {Remote}: not in an allowed network")]
    public static partial void ConnectionRefused(ILogger logger, string remote);

    [LoggerMessage(EventId = 101, Level = LogLevel.Warning, Message = "Rejected {Method} from {Peer}: {Problem}")]
    public static partial void RequestRejected(ILogger logger, string method, string peer, string problem);

    [LoggerMessage(EventId = 102, Level = LogLevel.Warning, Message = "Rejected unauthenticated {Method} from {Peer}")]
    public static partial void Unauthenticated(ILogger logger, string method, string peer);

    [LoggerMessage(EventId = 103, Level = LogLevel.Information, Message = "{Name} listening on port {Port}")]
    public static partial void Listening(ILogger logger, string name, int port);

    [LoggerMessage(EventId = 104, Level = LogLevel.Warning, Message = "Injected failure of {Method} ({Ordinal} of {Total}), as RAYSHARP_testing_rpc_failure asks")]
    public static partial void FailureInjected(ILogger logger, string method, int ordinal, int total);
}
