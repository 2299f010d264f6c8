using System.Buffers.Binary;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Logging.Abstractions;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

namespace RaySharp.Tests;

/// <summary>The hot-path framing, served on the same port as gRPC by a real <see cref="RpcServer"/> over TCP.</summary>
public sealed class FramedTransportTests
{
    private sealed class TestHandler : IFramedHandler
    {
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
                    await Task.Delay(Timeout.Infinite, cancellationToken);
                    return payload;
                default: throw new NotSupportedException($"method {method}");
            }
        }
    }

    private sealed class PingService : CoreWorkerService.CoreWorkerServiceBase
    {
        public override Task<PingReply> Ping(PingRequest request, ServerCallContext context) => Task.FromResult(new PingReply { WorkerId = "pong" });
    }

    private static Task<RpcServer> StartServer(RpcSecurityOptions security) =>
        RpcServer.StartAsync("test", RpcListenOptions.Fixed(0), NullLoggerFactory.Instance, _ => { },
            e => e.MapGrpcService<PingService>(), security, framedHandler: new TestHandler());

    [Fact]
    public async Task ManyCallsInFlightAreEachAnsweredWithTheirOwnReply()
    {
        await using var server = await StartServer(new RpcSecurityOptions());
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

    [Fact]
    public async Task HandlerErrorsComeBackAsRemoteErrorsAndTheConnectionLivesOn()
    {
        await using var server = await StartServer(new RpcSecurityOptions());
        await using var connection = await FramedClient.ConnectAsync("127.0.0.1", server.Port, new RpcSecurityOptions());
        var error = await Assert.ThrowsAsync<RemoteCallException>(() => connection.CallAsync(2, new byte[3]));
        Assert.Equal("InvalidOperationException: the handler refused 3 bytes", error.Message);
        Assert.Equal(new byte[] { 7 }, await connection.CallAsync(1, new byte[] { 7 }));
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
        var ping = await new CoreWorkerService.CoreWorkerServiceClient(channels.Get("127.0.0.1", server.Port)).PingAsync(new PingRequest());
        Assert.Equal("pong", ping.WorkerId);
    }

    [Fact]
    public async Task CallsInFlightFailWhenTheServerGoesAway()
    {
        var server = await StartServer(new RpcSecurityOptions());
        var connection = await FramedClient.ConnectAsync("127.0.0.1", server.Port, new RpcSecurityOptions());
        var hanging = connection.CallAsync(4, new byte[1]);
        await Task.Delay(100);
        await server.DisposeAsync();
        await Assert.ThrowsAsync<IOException>(() => hanging.WaitAsync(TimeSpan.FromSeconds(10)));
        await Assert.ThrowsAsync<IOException>(() => connection.CallAsync(1, new byte[1]));
        await connection.DisposeAsync();
    }
}
