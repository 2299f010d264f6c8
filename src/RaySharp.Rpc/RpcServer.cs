using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace RaySharp.Rpc;

/// <summary>Where a server should listen: one fixed port, any free port (0), or the first free port of a range.</summary>
internal sealed record RpcListenOptions(int Port, int RangeMin = 0, int RangeMax = 0)
{
    public static RpcListenOptions Fixed(int port) => new(port);
    public static RpcListenOptions Range(int min, int max) => new(0, min, max);

    /// <summary>The ports to try in turn: the fixed one, or the range's from a random start (so that many workers starting
    /// at once rarely collide on the same port).</summary>
    public IEnumerable<int> Candidates()
    {
        if (RangeMax <= 0)
        {
            yield return Port;
            yield break;
        }
        var count = RangeMax - RangeMin + 1;
        var start = Random.Shared.Next(count);
        for (var i = 0; i < count; i++) yield return RangeMin + (start + i) % count;
    }
}

/// <summary>
/// Hosts gRPC services on Kestrel (HTTP/2 without TLS) behind the <see cref="RpcGatekeeper"/>. Every RaySharp server
/// (GCS, raylet, core worker) is built here, so authentication and validation cannot be forgotten by one of them.
/// </summary>
internal sealed class RpcServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private RpcServer(WebApplication app, int port)
    {
        _app = app;
        Port = port;
    }

    public int Port { get; }
    public IServiceProvider Services => _app.Services;

    public static async Task<RpcServer> StartAsync(
        string name,
        RpcListenOptions listen,
        ILoggerFactory loggerFactory,
        Action<IServiceCollection> configureServices,
        Action<IEndpointRouteBuilder> mapServices,
        RpcSecurityOptions? security = null,
        CancellationToken cancellationToken = default,
        Transport.IFramedHandler? framedHandler = null)
    {
        security ??= RpcSecurityOptions.Current;
        IOException? lastError = null;
        foreach (var port in listen.Candidates())
        {
            var app = Build(port, loggerFactory, configureServices, mapServices, security, framedHandler);
            try
            {
                await app.StartAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (IOException e)
            {
                // Address in use: in a range, try the next port; for a fixed port, the caller reports it.
                lastError = e;
                await app.DisposeAsync().ConfigureAwait(false);
                if (listen.RangeMax > 0) continue;
                throw;
            }
            var bound = BoundPort(app);
            RpcLog.Listening(loggerFactory.CreateLogger<RpcServer>(), name, bound);
            return new RpcServer(app, bound);
        }
        throw new IOException($"no free port in {listen.RangeMin}-{listen.RangeMax} for {name}; widen --min-worker-port/--max-worker-port", lastError);
    }

    private static WebApplication Build(int port, ILoggerFactory loggerFactory, Action<IServiceCollection> configureServices,
        Action<IEndpointRouteBuilder> mapServices, RpcSecurityOptions security, Transport.IFramedHandler? framedHandler)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(loggerFactory);
        builder.Services.AddSingleton(typeof(ILogger<>), typeof(Logger<>));
        builder.Services.AddSingleton(security);
        var gatekeeper = new RpcGatekeeper(security, loggerFactory.CreateLogger<RpcGatekeeper>());
        builder.Services.AddSingleton(gatekeeper);
        builder.Services.AddGrpc(o =>
        {
            o.Interceptors.Add<RpcGatekeeper>();
            o.MaxReceiveMessageSize = 64 * 1024 * 1024;
            o.EnableDetailedErrors = true;
        });
        configureServices(builder.Services);
        // Kestrel's own hops (socket → I/O queue → application, and back) are three thread-pool wake-ups per framed
        // round trip; inline, the framed read loop runs where the socket read completed (a thread-pool thread: socket
        // completions themselves are not inlined) and a flushed reply is sent by the thread that flushed it. Nothing
        // that reads a connection here blocks: framed handlers hand their work off before it can, and HTTP/2 runs each
        // gRPC call as its own work item.
        builder.WebHost.UseSockets(o => o.UnsafePreferInlineScheduling = true);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.Http2.MaxStreamsPerConnection = 1000;
            k.Listen(IPAddress.Any, port, lo =>
            {
                lo.Protocols = HttpProtocols.Http2;
                lo.Use(next => connection =>
                {
                    if (gatekeeper.AcceptConnection(connection.RemoteEndPoint)) return next(connection);
                    connection.Abort();
                    return Task.CompletedTask;
                });
                // With TLS, both planes run inside it: the framing is told apart from HTTP/2 after the handshake.
                if (security.Tls is { } tls)
                {
                    lo.UseHttps(new Microsoft.AspNetCore.Server.Kestrel.Https.HttpsConnectionAdapterOptions
                    {
                        ServerCertificate = tls.Certificate,
                        ClientCertificateMode = Microsoft.AspNetCore.Server.Kestrel.Https.ClientCertificateMode.RequireCertificate,
                        ClientCertificateValidation = (certificate, _, _) => tls.IsMember(certificate),
                        CheckCertificateRevocation = false,
                        SslProtocols = System.Security.Authentication.SslProtocols.Tls12 | System.Security.Authentication.SslProtocols.Tls13,
                        HandshakeTimeout = Transport.FrameFormat.HandshakeTimeout,
                    });
                }
                lo.Use(next => async connection =>
                {
                    // Until it is admitted, a peer has the handshake's time: for the framing's Hello, or for the
                    // first authenticated request of an HTTP/2 connection.
                    using var handshake = CancellationTokenSource.CreateLinkedTokenSource(connection.ConnectionClosed);
                    handshake.CancelAfter(Transport.FrameFormat.HandshakeTimeout);
                    // One port, two planes: a connection that opens with the framing preface is the hot path,
                    // anything else is HTTP/2 (gRPC).
                    bool framed;
                    try
                    {
                        framed = framedHandler is not null && await Transport.FramedServer.IsFramedAsync(connection.Transport.Input, handshake.Token).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException)
                    {
                        connection.Abort();
                        return;
                    }
                    if (framed)
                    {
                        await Transport.FramedServer.ServeAsync(connection, gatekeeper, framedHandler!, handshake.Token).ConfigureAwait(false);
                        return;
                    }
                    gatekeeper.WatchHttpConnection(connection, handshake.Token);
                    await next(connection).ConfigureAwait(false);
                });
            });
        });
        var app = builder.Build();
        // Authenticated from the request's headers, before its body is read or any handler sees it.
        app.Use(async (http, next) =>
        {
            if (await gatekeeper.AuthenticateHttpAsync(http).ConfigureAwait(false)) await next(http).ConfigureAwait(false);
        });
        mapServices(app);
        return app;
    }

    private static int BoundPort(WebApplication app)
    {
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses;
        foreach (var a in addresses)
        {
            if (Uri.TryCreate(a.Replace("0.0.0.0", "localhost", StringComparison.Ordinal).Replace("[::]", "localhost", StringComparison.Ordinal), UriKind.Absolute, out var uri)) return uri.Port;
        }
        throw new InvalidOperationException("server started without an address");
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            await _app.StopAsync(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) { }
        await _app.DisposeAsync().ConfigureAwait(false);
    }
}
