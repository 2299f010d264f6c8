using System.Buffers.Binary;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Logging.Abstractions;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>
/// The hot-path framing over TCP, served on the same port as gRPC by a real <see cref="RpcServer"/>, or alone by a
/// <see cref="FramedListener"/> (a worker's port): the theories run against both.
/// </summary>
public sealed class FramedTransportTests
{
    private sealed class TestHandler : IFramedHandler
    {
        /// <summary>Completed when a call that is never answered (4, 8) reached the server.</summary>
        public TaskCompletionSource Unanswered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        // Methods of its own (echo, fail, hang), not the cluster's.
        public bool CheckedAtDispatch => false;

        public async ValueTask<ReadOnlyMemory<byte>> HandleAsync(int method, byte[] payload, CancellationToken cancellationToken)
        {
            switch (method)
            {
                case 1: return payload;
                case 2: throw new InvalidOperationException("the handler refused " + payload.Length + " bytes");
                case 3:
                    await Task.Delay(20, cancellationToken);
                    return payload;
                case 4:
                    Unanswered.TrySetResult();
                    await Task.Delay(Timeout.Infinite, cancellationToken);
                    return payload;
                case 5:
                    // Calls the caller back with the payload, on the same connection, before answering with it.
                    var back = await FramedConnection.Current!.CallAsync(1, payload, cancellationToken);
                    return back;
                case 9:
                    // Holds up the read loop (this part runs on it, before any await): the server stops reading.
                    ReadingStopped.TrySetResult();
                    ResumeReading.Wait(TimeSpan.FromMinutes(2));
                    return payload;
                default: throw new NotSupportedException($"method {method}");
            }
        }

        /// <summary>Completed when a call 9 stopped the server's read loop; it reads again once <see cref="ResumeReading"/> is set.</summary>
        public TaskCompletionSource ReadingStopped { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public ManualResetEventSlim ResumeReading { get; } = new();

        // Taken without an async handler, as workers take tasks and actor calls: 6 echoes from a pool thread, 7 fails,
        // 8 is never answered.
        public bool TryHandle(int method, byte[] payload, FramedRequest request)
        {
            switch (method)
            {
                case 6:
                    ThreadPool.QueueUserWorkItem(_ => request.Reply(payload));
                    return true;
                case 7:
                    request.Fail(new InvalidOperationException($"refused {payload.Length} bytes"));
                    return true;
                case 8:
                    Unanswered.TrySetResult();
                    return true;
                default:
                    return false;
            }
        }
    }

    /// <summary>Collects what reaches it, as the submitters' pending calls do.</summary>
    private sealed class CollectingSink : IReplySink
    {
        public TaskCompletionSource<byte[]> Outcome { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public int Calls;

        public void OnReply(byte[] payload)
        {
            Interlocked.Increment(ref Calls);
            Outcome.TrySetResult(payload);
        }

        public void OnFailure(Exception error)
        {
            Interlocked.Increment(ref Calls);
            Outcome.TrySetException(error);
        }
    }

    private sealed class PingService : NodeManagerService.NodeManagerServiceBase
    {
        public override Task<HealthCheckReply> HealthCheck(HealthCheckRequest request, ServerCallContext context) => Task.FromResult(new HealthCheckReply { NodeId = "pong" });
    }

    private sealed class Served(int port, IAsyncDisposable server) : IAsyncDisposable
    {
        public int Port => port;
        public ValueTask DisposeAsync() => server.DisposeAsync();
    }

    private static async Task<Served> StartServer(RpcSecurityOptions security, bool framedOnly = false, TestHandler? handler = null)
    {
        if (framedOnly)
        {
            var listener = FramedListener.Start("test", RpcListenOptions.Fixed(0), handler ?? new TestHandler(), NullLoggerFactory.Instance, security);
            return new Served(listener.Port, listener);
        }
        var server = await RpcServer.StartAsync("test", RpcListenOptions.Fixed(0), NullLoggerFactory.Instance, _ => { },
            e => e.MapGrpcService<PingService>(), security, framedHandler: handler ?? new TestHandler());
        return new Served(server.Port, server);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ManyCallsInFlightAreEachAnsweredWithTheirOwnReply(bool framedOnly)
    {
        await using var server = await StartServer(new RpcSecurityOptions(), framedOnly);
        await using var connection = await FramedClient.ConnectAsync("127.0.0.1", server.Port, new RpcSecurityOptions());

        var calls = Enumerable.Range(0, 10_000).Select(async i =>
        {
            var payload = new byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(payload, i);
            var reply = await connection.CallAsync(i % 2 == 0 ? 1 : 3, payload);
            return (i, BinaryPrimitives.ReadInt32LittleEndian(reply));
        }).ToList();
        foreach (var (sent, received) in await Task.WhenAll(calls)) Assert.Equal(sent, received);

        var big = new byte[8 * 1024 * 1024];
        Random.Shared.NextBytes(big);
        Assert.Equal(big, await connection.CallAsync(1, big));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task HandlerErrorsComeBackAsRemoteErrorsAndTheConnectionLivesOn(bool framedOnly)
    {
        await using var server = await StartServer(new RpcSecurityOptions(), framedOnly);
        await using var connection = await FramedClient.ConnectAsync("127.0.0.1", server.Port, new RpcSecurityOptions());
        var error = await Assert.ThrowsAsync<RemoteCallException>(() => connection.CallAsync(2, new byte[3]));
        Assert.Equal("InvalidOperationException: the handler refused 3 bytes", error.Message);
        Assert.Equal(new byte[] { 7 }, await connection.CallAsync(1, new byte[] { 7 }));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task RequestsTakenWithoutAnAsyncHandlerAreAnsweredOnceFromAnyThreadIntoReplySinks(bool framedOnly)
    {
        var handler = new TestHandler();
        var server = await StartServer(new RpcSecurityOptions(), framedOnly, handler);
        await using var connection = await FramedClient.ConnectAsync("127.0.0.1", server.Port, new RpcSecurityOptions());

        var echoes = Enumerable.Range(0, 2_000).Select(i =>
        {
            var sink = new CollectingSink();
            var payload = new byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(payload, i);
            Assert.True(connection.Call(6, payload, sink));
            return (i, sink);
        }).ToList();
        foreach (var (sent, sink) in echoes) Assert.Equal(sent, BinaryPrimitives.ReadInt32LittleEndian(await sink.Outcome.Task.WaitAsync(TimeSpan.FromSeconds(30))));

        var refused = new CollectingSink();
        Assert.True(connection.Call(7, new byte[5], refused));
        var error = await Assert.ThrowsAsync<RemoteCallException>(() => refused.Outcome.Task.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal("InvalidOperationException: refused 5 bytes", error.Message);

        // A request the server never answers: its sink hears of the connection's end instead.
        var unanswered = new CollectingSink();
        Assert.True(connection.Call(8, new byte[1], unanswered));
        await handler.Unanswered.Task.WaitAsync(TimeSpan.FromSeconds(30));
        await server.DisposeAsync();
        await Assert.ThrowsAsync<IOException>(() => unanswered.Outcome.Task.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.False(connection.Call(1, new byte[1], new CollectingSink()));
        Assert.All(echoes, e => Assert.Equal(1, e.sink.Calls));
        Assert.Equal(1, refused.Calls);
        Assert.Equal(1, unanswered.Calls);
    }

    [Fact]
    public async Task TheClusterTokenIsCheckedAndGrpcSharesThePort()
    {
        var security = new RpcSecurityOptions { ClusterToken = "s3cret" };
        await using var server = await StartServer(security);

        var refused = await Assert.ThrowsAsync<RemoteCallException>(() => FramedClient.ConnectAsync("127.0.0.1", server.Port, new RpcSecurityOptions()));
        Assert.Contains("cluster token", refused.Message);
        await Assert.ThrowsAsync<RemoteCallException>(() => FramedClient.ConnectAsync("127.0.0.1", server.Port, new RpcSecurityOptions { ClusterToken = "guess" }));

        await using var connection = await FramedClient.ConnectAsync("127.0.0.1", server.Port, security);
        Assert.Equal(new byte[] { 1, 2 }, await connection.CallAsync(1, new byte[] { 1, 2 }));

        using var channels = new RpcChannelPool(security);
        var ping = await new NodeManagerService.NodeManagerServiceClient(channels.Get("127.0.0.1", server.Port)).HealthCheckAsync(new HealthCheckRequest());
        Assert.Equal("pong", ping.NodeId);
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public async Task BulkBothWaysOnOneConnectionDoesNotStall(bool framedOnly, bool tls)
    {
        // Each call sends 4 MiB, is called back with the same 4 MiB and answered with it: both directions full at once,
        // far beyond the sockets' buffers. A side whose reading waited on its own writing would stop both. Inside TLS,
        // the receiving thread reads the session while the writer writes it.
        var security = new RpcSecurityOptions { Tls = tls ? await TestCertificates.LoadAsync("node") : null };
        await using var server = await StartServer(security, framedOnly);
        await using var connection = await FramedClient.ConnectAsync("127.0.0.1", server.Port, security, handler: new TestHandler());
        var payloads = Enumerable.Range(0, 24).Select(i => Enumerable.Repeat((byte)i, 4 * 1024 * 1024).ToArray()).ToList();
        var replies = await Task.WhenAll(payloads.Select(p => connection.CallAsync(5, p))).WaitAsync(TimeSpan.FromSeconds(60));
        for (var i = 0; i < payloads.Count; i++) Assert.Equal(payloads[i], replies[i]);
    }

    [Fact]
    public async Task HttpRequestsBringTheTokenInAuthorizationOrTheProxysHeader()
    {
        var security = new RpcSecurityOptions { ClusterToken = "s3cret" };
        await using var server = await StartServer(security);
        using var http = new HttpClient(new SocketsHttpHandler { UseProxy = false });
        async Task<(int Status, string Body)> GetAsync(string? header, string? value)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, $"http://127.0.0.1:{server.Port}/api/jobs/")
            {
                Version = System.Net.HttpVersion.Version20,
                VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            };
            if (header is not null) request.Headers.TryAddWithoutValidation(header, value);
            using var response = await http.SendAsync(request);
            return ((int)response.StatusCode, await response.Content.ReadAsStringAsync());
        }
        var none = await GetAsync(null, null);
        Assert.True(none.Status == 401, none.ToString());
        Assert.Contains("none was presented", none.Body);
        var wrong = await GetAsync("Authorization", "Bearer guess");
        Assert.Equal(401, wrong.Status);
        Assert.Contains("is not this RaySharp cluster's", wrong.Body);
        Assert.DoesNotContain("s3cret", wrong.Body);
        // Past the gate (nothing is served at that path).
        Assert.Equal(404, (await GetAsync("Authorization", "Bearer s3cret")).Status);
        Assert.Equal(404, (await GetAsync(RpcGatekeeper.ProxyAuthorizationHeader, "Bearer s3cret")).Status);

        // gRPC the same way: the proxy's header is honoured too.
        using var anonymous = new RpcChannelPool(new RpcSecurityOptions());
        var client = new NodeManagerService.NodeManagerServiceClient(anonymous.Get("127.0.0.1", server.Port));
        Assert.Equal(StatusCode.Unauthenticated, (await Assert.ThrowsAsync<RpcException>(async () => await client.HealthCheckAsync(new HealthCheckRequest()))).StatusCode);
        var viaProxy = await client.HealthCheckAsync(new HealthCheckRequest(), new Metadata { { RpcGatekeeper.ProxyAuthorizationHeader, "Bearer s3cret" } });
        Assert.Equal("pong", viaProxy.NodeId);
    }

    [Fact]
    public async Task AConnectionWithoutAnAdmittedRequestIsClosedAfterTheHandshakesTimeAndAnAdmittedOneKept()
    {
        var security = new RpcSecurityOptions { ClusterToken = "s3cret" };
        await using var server = await StartServer(security);
        // Three peers that never present the token: one sends nothing, one only HTTP/2's preface, one half a Hello.
        var idle = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        var http2 = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        var framed = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        foreach (var s in new[] { idle, http2, framed }) await s.ConnectAsync("127.0.0.1", server.Port);
        await http2.SendAsync("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray().Concat(new byte[] { 0, 0, 0, 4, 0, 0, 0, 0, 0 }).ToArray());
        await framed.SendAsync("RSF1"u8.ToArray().Concat(new byte[] { 100, 0, 0, 0, 1 }).ToArray());
        // A member's channel, whose first call is admitted at once: it keeps its one connection past that time.
        var connects = 0;
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (context, cancellationToken) =>
            {
                Interlocked.Increment(ref connects);
                var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp) { NoDelay = true };
                await socket.ConnectAsync(context.DnsEndPoint, cancellationToken);
                return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
            },
        };
        using var channel = Grpc.Net.Client.GrpcChannel.ForAddress($"http://127.0.0.1:{server.Port}", new Grpc.Net.Client.GrpcChannelOptions { HttpHandler = handler });
        var member = new NodeManagerService.NodeManagerServiceClient(channel);
        var headers = new Metadata { { "authorization", "Bearer s3cret" } };
        Assert.Equal("pong", (await member.HealthCheckAsync(new HealthCheckRequest(), headers)).NodeId);

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var buffer = new byte[4096];
        foreach (var s in new[] { idle, http2, framed })
        {
            // Read until the server closes or resets the connection (HTTP/2 may first send its SETTINGS).
            try
            {
                while (await s.ReceiveAsync(buffer.AsMemory()).AsTask().WaitAsync(TimeSpan.FromSeconds(30)) > 0) { }
            }
            catch (System.Net.Sockets.SocketException e) when (e.SocketErrorCode == System.Net.Sockets.SocketError.ConnectionReset) { }
            s.Dispose();
        }
        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(20));
        await Task.Delay(TimeSpan.FromSeconds(1));
        Assert.Equal("pong", (await member.HealthCheckAsync(new HealthCheckRequest(), headers)).NodeId);
        Assert.Equal(1, connects);
    }

    [Fact]
    public async Task AFloodOfUnauthenticatedConnectionsHoldsABoundedNumberOfThreads()
    {
        var security = new RpcSecurityOptions { ClusterToken = "s3cret" };
        await using var server = await StartServer(security, framedOnly: true);
        var silent = new List<System.Net.Sockets.Socket>();
        for (var i = 0; i < FramedListener.MaxConcurrentHandshakes; i++)
        {
            var s = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
            await s.ConnectAsync("127.0.0.1", server.Port);
            silent.Add(s);
        }
        await Task.Delay(500);
        // One more in its handshake is one too many: closed at once, not held.
        using (var extra = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp))
        {
            await extra.ConnectAsync("127.0.0.1", server.Port);
            var read = await extra.ReceiveAsync(new byte[16].AsMemory()).AsTask().WaitAsync(TimeSpan.FromSeconds(5));
            Assert.Equal(0, read);
        }
        // Once they are gone, members connect as before.
        foreach (var s in silent) s.Dispose();
        await ClusterAssertions.EventuallyAsync(async () =>
        {
            try
            {
                await using var member = await FramedClient.ConnectAsync("127.0.0.1", server.Port, security);
                return (await member.CallAsync(1, new byte[] { 7 })).SequenceEqual(new byte[] { 7 });
            }
            catch (IOException)
            {
                return false;
            }
        }, TimeSpan.FromSeconds(15), "a member connecting after the flood");
    }

    [Fact]
    public async Task AFramedOnlyPortChecksTheClusterTokenAndClosesOnOtherProtocols()
    {
        var security = new RpcSecurityOptions { ClusterToken = "s3cret" };
        await using var server = await StartServer(security, framedOnly: true);
        var refused = await Assert.ThrowsAsync<RemoteCallException>(() => FramedClient.ConnectAsync("127.0.0.1", server.Port, new RpcSecurityOptions { ClusterToken = "guess" }));
        Assert.Contains("cluster token", refused.Message);

        // An HTTP/2 (gRPC) client gets the connection closed, and the port keeps serving.
        using var channels = new RpcChannelPool(security);
        var grpc = await Assert.ThrowsAsync<RpcException>(async () =>
            await new NodeManagerService.NodeManagerServiceClient(channels.Get("127.0.0.1", server.Port)).HealthCheckAsync(new HealthCheckRequest(), deadline: DateTime.UtcNow.AddSeconds(10)));
        // Closed after its first bytes, with the rest of its preface unread: the client sees a reset or an end.
        Assert.Contains(grpc.StatusCode, new[] { StatusCode.Unavailable, StatusCode.Internal });
        await using var connection = await FramedClient.ConnectAsync("127.0.0.1", server.Port, security);
        Assert.Equal(new byte[] { 9 }, await connection.CallAsync(1, new byte[] { 9 }));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task CallsInFlightFailWhenTheServerGoesAway(bool framedOnly)
    {
        var handler = new TestHandler();
        var server = await StartServer(new RpcSecurityOptions(), framedOnly, handler);
        var connection = await FramedClient.ConnectAsync("127.0.0.1", server.Port, new RpcSecurityOptions());
        var hanging = connection.CallAsync(4, new byte[1]);
        await handler.Unanswered.Task.WaitAsync(TimeSpan.FromSeconds(30));
        await server.DisposeAsync();
        await Assert.ThrowsAsync<IOException>(() => hanging.WaitAsync(TimeSpan.FromSeconds(10)));
        await Assert.ThrowsAsync<IOException>(() => connection.CallAsync(1, new byte[1]));
        await connection.DisposeAsync();
    }

    /// <summary>
    /// A peer that stops reading (a hung process, or one behind a partition) fills the socket's buffers, and the write
    /// loop blocks in send. Closing the connection must not wait for that send (it would wait as long as TCP does),
    /// and the calls waiting for replies must fail rather than hang.
    /// </summary>
    [Fact]
    public async Task DisposingAConnectionWhoseSendIsBlockedByAPeerThatStoppedReadingReturnsAndFailsItsCalls()
    {
        var handler = new TestHandler();
        var server = await StartServer(new RpcSecurityOptions(), framedOnly: true, handler);
        try
        {
            var connection = await FramedClient.ConnectAsync("127.0.0.1", server.Port, new RpcSecurityOptions());
            var stopper = connection.CallAsync(9, new byte[1]);
            await handler.ReadingStopped.Task.WaitAsync(TimeSpan.FromSeconds(30));
            // Far more than loopback's socket buffers hold: the writer is left blocked in send.
            var calls = Enumerable.Range(0, 8).Select(_ => connection.CallAsync(1, new byte[16 * 1024 * 1024])).ToList();
            var disposing = connection.DisposeAsync().AsTask();
            await disposing.WaitAsync(TimeSpan.FromSeconds(20));
            foreach (var call in calls.Append(stopper)) await Assert.ThrowsAsync<IOException>(() => call.WaitAsync(TimeSpan.FromSeconds(5)));
        }
        finally
        {
            handler.ResumeReading.Set();
            await server.DisposeAsync();
        }
    }

    private sealed class Duplex(System.IO.Pipelines.PipeReader input, System.IO.Pipelines.PipeWriter output) : System.IO.Pipelines.IDuplexPipe
    {
        public System.IO.Pipelines.PipeReader Input => input;
        public System.IO.Pipelines.PipeWriter Output => output;
    }

    /// <summary>
    /// A peer that never reads lets frames pile up in the sender's queue: past the bound (512 MiB) the connection is
    /// closed, and the calls waiting on it fail with that reason, rather than the queue growing without end.
    /// </summary>
    [Fact]
    public async Task AConnectionWhosePeerReadsNothingIsClosedOnceItsQueueHoldsMoreThanTheBound()
    {
        var toPeer = new System.IO.Pipelines.Pipe();
        var fromPeer = new System.IO.Pipelines.Pipe();
        await using var connection = new FramedConnection(new Duplex(fromPeer.Reader, toPeer.Writer), null);
        connection.Start();
        // The same 64 MiB array each time: queued frames hold their payload, they do not copy it.
        var payload = new byte[64 * 1024 * 1024];
        var calls = Enumerable.Range(0, 10).Select(_ => connection.CallAsync(1, payload)).ToList();
        var failures = new List<string>();
        foreach (var call in calls) failures.Add((await Assert.ThrowsAsync<IOException>(() => call.WaitAsync(TimeSpan.FromSeconds(30)))).Message);
        // Those queued when the bound was passed say why; the ones made after it find the connection closed.
        Assert.True(failures.Count(f => f.Contains("waited to be written to a peer that did not read them", StringComparison.Ordinal)) >= 7, string.Join("\n", failures));
        Assert.All(failures, f => Assert.True(f.Contains("did not read them", StringComparison.Ordinal) || f.Contains("the connection is closed", StringComparison.Ordinal), f));
        await connection.Completion.WaitAsync(TimeSpan.FromSeconds(10));
    }
}
