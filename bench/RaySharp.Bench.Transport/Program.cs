using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Logging.Abstractions;
using RaySharp.Bench.Transport;
using RaySharp.Rpc;
using RaySharp.Rpc.Transport;

// Usage: dotnet run -c Release --project bench/RaySharp.Bench.Transport -- [--quick]
// Starts an echo server in a second process, then measures small request/response round trips over each transport:
// one call at a time, and pipelined with 1000 in flight.
if (args.Contains("server")) return await Server.RunAsync();

var quick = args.Contains("--quick");
var duration = TimeSpan.FromSeconds(quick ? 1 : 3);
var warmup = TimeSpan.FromSeconds(quick ? 0.3 : 1);
const int InFlight = 1000;
var costs = "";
var payload = ByteString.CopyFrom(new byte[16]);

using var server = StartServer(out var grpcPort, out var tcpPort);
try
{
    using var channels = new RpcChannelPool();
    var client = new EchoService.EchoServiceClient(channels.Get("127.0.0.1", grpcPort));
    if (args.Contains("--framed"))
    {
        // Only the framed rows, several times: for comparing changes to the hot-path transport on a noisy machine.
        await using var only = await FramedClient.ConnectAsync("127.0.0.1", grpcPort, new RpcSecurityOptions());
        var data = payload.ToByteArray();
        for (var i = 0; i < 3; i++)
        {
            Report("RaySharp framed, one at a time", await Measure(async () => { await only.CallAsync(1, data); return 1; }));
            Report("RaySharp framed, one at a time, blocking caller", await Measure(() => Task.FromResult(BlockingCall(only, data))));
            Report($"RaySharp framed, {InFlight} in flight", await MeasureConcurrent(() => only.CallAsync(1, data)));
        }
        return 0;
    }
    Console.WriteLine($"Transport round trips between two processes on loopback ({Environment.ProcessorCount} cores), {duration.TotalSeconds:0} s each after {warmup.TotalSeconds:0.#} s warm-up, 16-byte payload");
    Console.WriteLine($"{"transport",-44} {"calls/s",12}");
    Report("gRPC unary, one at a time", await Measure(async () => { await client.EchoAsync(new EchoMessage { Payload = payload }); return 1; }));
    Report("gRPC unary, 1000 in flight", await MeasureConcurrent(async () => await client.EchoAsync(new EchoMessage { Payload = payload })));
    Report("gRPC bidi stream, one at a time", await MeasureStream(client, payload, 1));
    Report($"gRPC bidi stream, {InFlight} in flight", await MeasureStream(client, payload, InFlight));
    await using (var framed = await FramedClient.ConnectAsync("127.0.0.1", grpcPort, new RpcSecurityOptions()))
    {
        var bytes = payload.ToByteArray();
        Report("RaySharp framed (RpcServer port), one at a time", await Measure(async () => { await framed.CallAsync(1, bytes); return 1; }));
        Report($"RaySharp framed (RpcServer port), {InFlight} in flight", await MeasureConcurrent(() => framed.CallAsync(1, bytes)));
    }
    Report("TCP length-prefixed (Pipelines), one at a time", await MeasureTcp(tcpPort, 1));
    Report($"TCP length-prefixed (Pipelines), {InFlight} in flight", await MeasureTcp(tcpPort, InFlight));
}
finally
{
    server.Kill();
}
return 0;

static int BlockingCall(FramedConnection connection, byte[] data)
{
    connection.CallAsync(1, data).GetAwaiter().GetResult();
    return 1;
}

void Report(string name, double rate) => Console.WriteLine($"{name,-44} {rate,12:N0}   {costs}");

async Task<double> Measure(Func<Task<int>> op)
{
    var end = DateTime.UtcNow + warmup;
    while (DateTime.UtcNow < end) await op();
    long n = 0;
    var before = ProcStat();
    var sw = Stopwatch.StartNew();
    while (sw.Elapsed < duration) n += await op();
    var rate = n / sw.Elapsed.TotalSeconds;
    var after = ProcStat();
    costs = $"{(after.Switches - before.Switches) / (double)n,5:F1} cs/call {(after.Busy - before.Busy) * 1e6 / n,6:F1} us cpu/call";
    return rate;
}

// Machine-wide context switches and busy CPU seconds (the machine is otherwise idle), from /proc/stat.
static (long Switches, double Busy) ProcStat()
{
    long switches = 0;
    double busy = 0;
    foreach (var line in File.ReadLines("/proc/stat"))
    {
        var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (f[0] == "ctxt") switches = long.Parse(f[1]);
        else if (f[0] == "cpu") busy = f.Skip(1).Take(8).Select((v, i) => i is 3 or 4 ? 0 : long.Parse(v)).Sum() / 100.0;
    }
    return (switches, busy);
}

// InFlight concurrent callers, each issuing calls back to back: calls per second over the run.
async Task<double> MeasureConcurrent(Func<Task> call)
{
    async Task<long> Run(TimeSpan span)
    {
        long n = 0;
        var sw = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, InFlight).Select(async _ =>
        {
            while (sw.Elapsed < span)
            {
                await call();
                Interlocked.Increment(ref n);
            }
        }));
        return n;
    }
    await Run(warmup);
    var timer = Stopwatch.StartNew();
    var before = ProcStat();
    var count = await Run(duration);
    var rate = count / timer.Elapsed.TotalSeconds;
    var after = ProcStat();
    costs = $"{(after.Switches - before.Switches) / (double)count,5:F1} cs/call {(after.Busy - before.Busy) * 1e6 / count,6:F1} us cpu/call";
    return rate;
}

// Sends while the window has room (a reader releases it per reply); replies per second after the warm-up.
async Task<double> MeasureWindow(SemaphoreSlim window, Func<Task> send, Func<long> received)
{
    var sw = Stopwatch.StartNew();
    long startCount = 0;
    var measuring = false;
    while (true)
    {
        if (!measuring && sw.Elapsed >= warmup)
        {
            measuring = true;
            startCount = received();
            sw.Restart();
        }
        if (measuring && sw.Elapsed >= duration) break;
        await window.WaitAsync();
        await send();
    }
    return (received() - startCount) / sw.Elapsed.TotalSeconds;
}

async Task<double> MeasureStream(EchoService.EchoServiceClient c, ByteString p, int inFlight)
{
    using var call = c.EchoStream();
    using var window = new SemaphoreSlim(inFlight);
    long received = 0;
    var reader = Task.Run(async () =>
    {
        while (await call.ResponseStream.MoveNext(CancellationToken.None))
        {
            Interlocked.Increment(ref received);
            window.Release();
        }
    });
    var rate = await MeasureWindow(window, () => call.RequestStream.WriteAsync(new EchoMessage { Payload = p }), () => Interlocked.Read(ref received));
    await call.RequestStream.CompleteAsync();
    await reader;
    return rate;
}

async Task<double> MeasureTcp(int port, int inFlight)
{
    using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
    await socket.ConnectAsync(IPAddress.Loopback, port);
    await using var stream = new NetworkStream(socket, ownsSocket: false);
    var writer = PipeWriter.Create(stream);
    var pipeReader = PipeReader.Create(stream);
    using var window = new SemaphoreSlim(inFlight);
    long received = 0;
    var done = false;
    var reader = Task.Run(async () =>
    {
        while (true)
        {
            var result = await pipeReader.ReadAsync();
            var buffer = result.Buffer;
            while (Framing.TryReadFrame(ref buffer, out _))
            {
                Interlocked.Increment(ref received);
                window.Release();
            }
            pipeReader.AdvanceTo(buffer.Start, buffer.End);
            if (result.IsCompleted || Volatile.Read(ref done)) break;
        }
    });
    var frame = new byte[4 + 16];
    BinaryPrimitives.WriteInt32LittleEndian(frame, 16);
    var rate = await MeasureWindow(window, async () =>
    {
        writer.Write(frame);
        // Coalesce: flush only when no further send is immediately possible.
        if (window.CurrentCount == 0 || inFlight == 1) await writer.FlushAsync();
    }, () => Interlocked.Read(ref received));
    await writer.FlushAsync();
    Volatile.Write(ref done, true);
    socket.Shutdown(SocketShutdown.Both);
    try { await reader; } catch (IOException) { }
    return rate;
}

static Process StartServer(out int grpcPort, out int tcpPort)
{
    // Under `dotnet run` the process is the app host, which takes no assembly path; under `dotnet x.dll`, it is dotnet.
    var host = Environment.ProcessPath!;
    string[] arguments = Path.GetFileNameWithoutExtension(host) == "dotnet" ? [typeof(Server).Assembly.Location, "server"] : ["server"];
    // Standard input stays open as long as this process lives: the server exits when it closes, even after a crash here.
    var psi = new ProcessStartInfo(host, arguments) { RedirectStandardOutput = true, RedirectStandardInput = true, UseShellExecute = false };
    var p = Process.Start(psi)!;
    var line = p.StandardOutput.ReadLine() ?? throw new InvalidOperationException("echo server did not start");
    var parts = line.Split(' ');
    grpcPort = int.Parse(parts[1]);
    tcpPort = int.Parse(parts[2]);
    return p;
}

internal static class Framing
{
    /// <summary>A frame is a little-endian int32 length followed by that many bytes.</summary>
    public static bool TryReadFrame(ref ReadOnlySequence<byte> buffer, out ReadOnlySequence<byte> frame)
    {
        frame = default;
        if (buffer.Length < 4) return false;
        Span<byte> header = stackalloc byte[4];
        buffer.Slice(0, 4).CopyTo(header);
        var length = BinaryPrimitives.ReadInt32LittleEndian(header);
        if (buffer.Length < 4 + length) return false;
        frame = buffer.Slice(0, 4 + length);
        buffer = buffer.Slice(4 + length);
        return true;
    }
}

internal sealed class EchoServiceImpl : EchoService.EchoServiceBase
{
    public override Task<EchoMessage> Echo(EchoMessage request, ServerCallContext context) => Task.FromResult(request);

    public override async Task EchoStream(IAsyncStreamReader<EchoMessage> requestStream, IServerStreamWriter<EchoMessage> responseStream, ServerCallContext context)
    {
        await foreach (var m in requestStream.ReadAllAsync()) await responseStream.WriteAsync(m);
    }
}

internal sealed class EchoFramedHandler : IFramedHandler
{
    // Echoes any method: not the cluster's methods.
    public bool CheckedAtDispatch => false;

    public ValueTask<ReadOnlyMemory<byte>> HandleAsync(int method, byte[] payload, CancellationToken cancellationToken) => new(payload);
}

internal static class Server
{
    public static async Task<int> RunAsync()
    {
        await using var rpc = await RpcServer.StartAsync("bench", RpcListenOptions.Fixed(0), NullLoggerFactory.Instance,
            _ => { }, endpoints => endpoints.MapGrpcService<EchoServiceImpl>(), new RpcSecurityOptions(), framedHandler: new EchoFramedHandler());
        var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(16);
        Console.WriteLine($"PORTS {rpc.Port} {((IPEndPoint)listener.LocalEndPoint!).Port}");
        _ = Task.Run(() =>
        {
            Console.In.ReadToEnd();
            Environment.Exit(0);
        });
        while (true)
        {
            var socket = await listener.AcceptAsync();
            socket.NoDelay = true;
            _ = Task.Run(() => EchoTcpAsync(socket));
        }
    }

    private static async Task EchoTcpAsync(Socket socket)
    {
        await using var stream = new NetworkStream(socket, ownsSocket: true);
        var reader = PipeReader.Create(stream);
        var writer = PipeWriter.Create(stream);
        try
        {
            while (true)
            {
                var result = await reader.ReadAsync();
                var buffer = result.Buffer;
                while (Framing.TryReadFrame(ref buffer, out var frame))
                {
                    foreach (var segment in frame) writer.Write(segment.Span);
                }
                reader.AdvanceTo(buffer.Start, buffer.End);
                // One flush per batch read: replies to pipelined requests share a write.
                await writer.FlushAsync();
                if (result.IsCompleted) break;
            }
        }
        catch (IOException) { }
    }
}
