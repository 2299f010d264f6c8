using System.Collections.Concurrent;
using System.Net;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Net.Client;

namespace RaySharp.Rpc;

/// <summary>
/// One HTTP/2 channel per remote address, shared by all clients of this process. Adds the cluster token to every call.
/// </summary>
internal sealed class RpcChannelPool : IDisposable
{
    private readonly ConcurrentDictionary<string, (GrpcChannel Channel, CallInvoker Invoker)> _channels = new(StringComparer.Ordinal);
    private readonly RpcSecurityOptions _security;
    private readonly TimeSpan _connectTimeout;

    public RpcChannelPool(RpcSecurityOptions? security = null, TimeSpan? connectTimeout = null)
    {
        _security = security ?? RpcSecurityOptions.Current;
        _connectTimeout = connectTimeout ?? TimeSpan.FromSeconds(5);
    }

    /// <summary>A call invoker for <c>host:port</c>.</summary>
    public CallInvoker Get(string address) => _channels.GetOrAdd(address, Create).Invoker;

    public CallInvoker Get(string host, int port) => Get(Common.NodeAddress.Format(host, port));

    private (GrpcChannel, CallInvoker) Create(string address)
    {
        var handler = new SocketsHttpHandler
        {
            ConnectTimeout = _connectTimeout,
            EnableMultipleHttp2Connections = true,
            PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
            KeepAlivePingDelay = TimeSpan.FromSeconds(30),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(10),
            UseProxy = false,
        };
        if (_security.Tls is { } tls)
        {
            var colon = address.LastIndexOf(':');
            handler.SslOptions = tls.ClientOptions(address[..colon].Trim('[', ']'), http2: true);
        }
        var channel = GrpcChannel.ForAddress((_security.Tls is null ? "http://" : "https://") + address, new GrpcChannelOptions
        {
            HttpHandler = handler,
            HttpVersion = HttpVersion.Version20,
            MaxReceiveMessageSize = 64 * 1024 * 1024,
            // A peer that went away and came back (a GCS restarted on Redis) is reconnected to within a second, not
            // after the default backoff of up to two minutes.
            InitialReconnectBackoff = TimeSpan.FromMilliseconds(200),
            MaxReconnectBackoff = TimeSpan.FromSeconds(1),
        });
        CallInvoker invoker = channel.CreateCallInvoker();
        if (_security.ClusterToken is { Length: > 0 } token)
        {
            var header = "Bearer " + token;
            invoker = invoker.Intercept(metadata =>
            {
                metadata.Add(RpcGatekeeper.AuthorizationHeader, header);
                return metadata;
            });
        }
        return (channel, invoker);
    }

    public void Dispose()
    {
        foreach (var (channel, _) in _channels.Values) channel.Dispose();
        _channels.Clear();
    }
}
