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

    // Streaming calls were authenticated by AuthenticateHttpAsync before their first message was read; the interceptor
    // validates what it can see of a request (a whole message), and there is none here.

    private void Admit<TRequest>(TRequest request, ServerCallContext context)
    {
        var method = context.Method[(context.Method.LastIndexOf('/') + 1)..];
        if (Common.FaultInjection.FailRpc(method, out var ordinal, out var total, out var status))
        {
            RpcLog.FailureInjected(logger, method, ordinal, total);
            var code = Enum.TryParse<StatusCode>(status, out var named) ? named : StatusCode.Unavailable;
            throw new RpcException(new Status(code, $"failure of {method} injected for a test ({ordinal} of {total})"));
        }
        if (request is IValidatedRequest validated && validated.Validate() is { } problem)
        {
            RpcLog.RequestRejected(logger, context.Method, context.Peer, problem);
            throw new RpcException(new Status(StatusCode.InvalidArgument, problem));
        }
    }

    /// <summary>What a refused peer is told: what was wrong, and where the token is.</summary>
    public static string RefusalMessage(bool presented) =>
        (presented ? "the cluster token presented is not this RaySharp cluster's" : "this RaySharp cluster requires its cluster token, and none was presented") +
        ". Processes on a node of the cluster find it by themselves; elsewhere set " + Common.ClusterToken.EnvironmentVariable +
        " (or RayInitOptions.Token for a driver, --token-file for `raysharp start`) to the token in the head's session directory " +
        "(<session>/" + Common.ClusterToken.FileName + ", as `raysharp start --head` printed).";

    /// <summary>True when no token is required, or <paramref name="presentedToken"/> is the cluster's token.</summary>
    public bool IsTokenValid(string? presentedToken)
    {
        if (_expected is null) return true;
        if (presentedToken is null) return false;
        // Digests compared in constant time: a refused guess tells nothing of how close it came, nor of the token's length.
        var presented = System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(presentedToken));
        return System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(presented, _expected);
    }

    private readonly byte[]? _expected = security.ClusterToken is { Length: > 0 } t ? System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(t)) : null;

    /// <summary>Whether this server requires the cluster token (false after <c>--auth none</c>).</summary>
    public bool RequiresToken => _expected is not null;

    /// <summary>
    /// Admits a hot-path connection by its first frame, which must be a Hello carrying the cluster token, and writes
    /// the answer: HelloAck, or an Error frame with <see cref="RefusalMessage"/> (the server then closes).
    /// </summary>
    public bool AdmitFramedConnection(Transport.Frame hello, EndPoint? peer, System.Buffers.IBufferWriter<byte> answer)
    {
        var presented = hello.Payload.Length == 0 ? null : System.Text.Encoding.UTF8.GetString(hello.Payload);
        if (hello.Type == Transport.FrameType.Hello && IsTokenValid(presented))
        {
            Transport.FrameFormat.Write(answer, Transport.FrameType.HelloAck, hello.Id, 0, default);
            return true;
        }
        Refused("framed connection", peer, presented is not null);
        Transport.FrameFormat.Write(answer, Transport.FrameType.Error, hello.Id, 0, System.Text.Encoding.UTF8.GetBytes(RefusalMessage(presented is not null)));
        return false;
    }

    /// <summary>
    /// Admits an HTTP request (every gRPC call, and the HTTP endpoints to come) by its headers, before any byte of its
    /// body is read: <c>Authorization: Bearer &lt;token&gt;</c>, or <c>X-RaySharp-Authorization</c> with the same value
    /// behind proxies that take the first for themselves. A refused gRPC call ends with status Unauthenticated, any
    /// other request with 401; either way with <see cref="RefusalMessage"/>.
    /// </summary>
    public async Task<bool> AuthenticateHttpAsync(Microsoft.AspNetCore.Http.HttpContext http)
    {
        if (_expected is null) return true;
        var presented = BearerToken(http.Request.Headers.Authorization) ?? BearerToken(http.Request.Headers[ProxyAuthorizationHeader]);
        if (IsTokenValid(presented))
        {
            if (http.Features.Get<Microsoft.AspNetCore.Connections.Features.IConnectionItemsFeature>()?.Items.TryGetValue(typeof(HttpConnectionAdmission), out var admission) == true)
                ((HttpConnectionAdmission)admission!).Admitted = true;
            return true;
        }
        Refused(http.Request.Path.Value ?? "?", http.Connection.RemoteIpAddress is { } ip ? new IPEndPoint(ip, http.Connection.RemotePort) : null, presented is not null);
        // Answered, then disconnected: once this response is out, the connection closes (HTTP/2 GOAWAY).
        if (http.Features.Get<Microsoft.AspNetCore.Connections.Features.IConnectionLifetimeNotificationFeature>() is { } lifetime)
        {
            http.Response.OnCompleted(() =>
            {
                lifetime.RequestClose();
                return Task.CompletedTask;
            });
        }
        var message = RefusalMessage(presented is not null);
        if (http.Request.ContentType?.StartsWith("application/grpc", StringComparison.Ordinal) == true)
        {
            // A trailers-only gRPC response: the client sees RpcException(Unauthenticated) with the message.
            http.Response.StatusCode = 200;
            http.Response.ContentType = "application/grpc";
            http.Response.Headers["grpc-status"] = ((int)StatusCode.Unauthenticated).ToString(System.Globalization.CultureInfo.InvariantCulture);
            http.Response.Headers["grpc-message"] = Uri.EscapeDataString(message);
            return false;
        }
        http.Response.StatusCode = 401;
        http.Response.Headers.WWWAuthenticate = "Bearer";
        http.Response.ContentType = "text/plain; charset=utf-8";
        await Microsoft.AspNetCore.Http.HttpResponseWritingExtensions.WriteAsync(http.Response, message + "\n").ConfigureAwait(false);
        return false;
    }

    public const string ProxyAuthorizationHeader = "X-RaySharp-Authorization";

    /// <summary>Whether an HTTP/2 connection has had a request admitted; set once, read by its watch.</summary>
    private sealed class HttpConnectionAdmission
    {
        public volatile bool Admitted;
    }

    /// <summary>
    /// Closes an HTTP/2 connection that has not had a request admitted when <paramref name="handshake"/> ends, so an
    /// unauthenticated peer holds a connection for the handshake's time at most, as on the framed plane.
    /// </summary>
    public void WatchHttpConnection(Microsoft.AspNetCore.Connections.ConnectionContext connection, CancellationToken handshake)
    {
        if (_expected is null) return;
        var admission = new HttpConnectionAdmission();
        // Written before the connection's first request can run; only read afterwards.
        connection.Items[typeof(HttpConnectionAdmission)] = admission;
        handshake.UnsafeRegister(_ =>
        {
            if (admission.Admitted || connection.ConnectionClosed.IsCancellationRequested) return;
            Refused("HTTP/2 connection without an authenticated request", connection.RemoteEndPoint, presented: false);
            connection.Abort(new Microsoft.AspNetCore.Connections.ConnectionAbortedException("no authenticated request within the handshake's time"));
        }, null);
    }

    private static string? BearerToken(Microsoft.Extensions.Primitives.StringValues header) =>
        header.Count == 1 && header[0] is { } value && value.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? value["Bearer ".Length..].Trim() : null;

    /// <summary>Peers refused so far, by address: each is logged once, so a scanner cannot fill the log.</summary>
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, bool> _refusedPeers = new(StringComparer.Ordinal);

    /// <summary>How many refused addresses are remembered; past that, refusals are no longer logged.</summary>
    private const int MaxRefusedPeersLogged = 4096;

    private void Refused(string what, EndPoint? peer, bool presented)
    {
        var address = peer is IPEndPoint ip ? (ip.Address.IsIPv4MappedToIPv6 ? ip.Address.MapToIPv4() : ip.Address).ToString() : peer?.ToString() ?? "?";
        if (_refusedPeers.Count >= MaxRefusedPeersLogged || !_refusedPeers.TryAdd(address, true)) return;
        RpcLog.Unauthenticated(logger, what, address, presented ? "a wrong cluster token" : "no cluster token");
    }
}

/// <summary>A request message that can say what is wrong with itself; checked by <see cref="RpcGatekeeper"/>.</summary>
internal interface IValidatedRequest
{
    /// <summary>Null when the request is well-formed, else a message naming the bad field.</summary>
    string? Validate();
}

/// <summary>Who may talk to a RaySharp server, and what a client presents.</summary>
internal sealed class RpcSecurityOptions
{
    /// <summary>Environment variable that carries the cluster token to every process of a node.</summary>
    public const string TokenEnvironmentVariable = Common.ClusterToken.EnvironmentVariable;

    /// <summary>
    /// When set, servers require it on every connection and clients present it (<c>authorization: Bearer &lt;token&gt;</c>
    /// over HTTP/gRPC, the Hello frame on the framed plane). Unset only in a cluster started with <c>--auth none</c>.
    /// </summary>
    public string? ClusterToken { get; init; }

    /// <summary>
    /// When set, every connection is mutual TLS: servers present this node's certificate and require one of the
    /// cluster's CA from every client; clients do the same the other way. Default: none (plain TCP).
    /// </summary>
    public ClusterTls? Tls { get; init; }

    /// <summary>When non-empty, connections from other networks are closed before any byte is read. Default: empty (any network).</summary>
    public IReadOnlyList<IPNetwork> AllowedNetworks { get; init; } = [];

    public static RpcSecurityOptions FromEnvironment() => new()
    {
        ClusterToken = Environment.GetEnvironmentVariable(TokenEnvironmentVariable) is { Length: > 0 } t ? t : null,
        Tls = ClusterTls.FromEnvironment(),
    };

    /// <summary>
    /// What this machine presents to the cluster at <paramref name="gcsAddress"/>: <paramref name="token"/>, else the
    /// token and TLS files of the environment, else those of this machine's node of that cluster (its session directory).
    /// </summary>
    /// <exception cref="InvalidOperationException">A token or TLS file cannot be read; the message names it.</exception>
    public static RpcSecurityOptions ForCluster(string root, string gcsAddress, string? token = null)
    {
        var session = Common.SessionDirectory.ReadCurrentCluster(root) is { Address: var local, Session: { } s } && local == gcsAddress ? s : null;
        return new RpcSecurityOptions
        {
            ClusterToken = token
                ?? (Environment.GetEnvironmentVariable(TokenEnvironmentVariable) is { Length: > 0 } env ? env : null)
                ?? (session is null ? null : Common.ClusterToken.ReadFrom(session)),
            Tls = ClusterTls.FromEnvironment() ?? (session is null ? null : ClusterTls.ReadFrom(session)),
        };
    }

    private static RpcSecurityOptions? s_current;

    /// <summary>
    /// This process's own, used by every server and client that is not given others: a node process's come from the
    /// environment its launcher set; a driver's are set by <c>Ray.Init</c> once it knows the cluster's token.
    /// </summary>
    public static RpcSecurityOptions Current
    {
        get => Volatile.Read(ref s_current) ?? Interlocked.CompareExchange(ref s_current, FromEnvironment(), null) ?? s_current!;
        set => Volatile.Write(ref s_current, value);
    }

    /// <summary>Forgets what a driver set: the next use reads the environment again.</summary>
    public static void ResetCurrent() => Volatile.Write(ref s_current, null);
}

internal static partial class RpcLog
{
    [LoggerMessage(EventId = 100, Level = LogLevel.Warning, Message = "Refused connection from {Remote}: not in an allowed network")]
    public static partial void ConnectionRefused(ILogger logger, string remote);

    [LoggerMessage(EventId = 101, Level = LogLevel.Warning, Message = "Rejected {Method} from {Peer}: {Problem}")]
    public static partial void RequestRejected(ILogger logger, string method, string peer, string problem);

    [LoggerMessage(EventId = 102, Level = LogLevel.Warning, Message = "Refused {What} from {Peer}: {Presented} (further refusals of that address are not logged)")]
    public static partial void Unauthenticated(ILogger logger, string what, string peer, string presented);

    [LoggerMessage(EventId = 103, Level = LogLevel.Information, Message = "{Name} listening on port {Port}")]
    public static partial void Listening(ILogger logger, string name, int port);

    [LoggerMessage(EventId = 104, Level = LogLevel.Warning, Message = "Injected failure of {Method} ({Ordinal} of {Total}), as RAYSHARP_testing_rpc_failure asks")]
    public static partial void FailureInjected(ILogger logger, string method, int ordinal, int total);
}
