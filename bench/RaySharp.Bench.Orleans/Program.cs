// Usage: dotnet run -c Release --project bench/RaySharp.Bench.Orleans -- [filter] [--quick] [--json PATH]
// Orleans grain calls from a client process to a silo in a child process, over loopback TCP, in the row shapes of
// RaySharp's benchmarks (README.md beside this file). `silo` is the child's mode.
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans;
using Orleans.Hosting;
using RaySharp.Bench.Peers;

if (args is ["silo", ..]) return await SiloProcess.RunAsync();

const int InFlight = 1000;
// N clients on N grains. With 2 cores, N = 2 clients in this process, each with its own gateway connection, grain and
// 1000 calls in flight: client processes of their own would only add a third and fourth process on two cores.
const int Clients = 2;

var options = BenchOptions.Parse(args);
using var silo = ChildServer.Start("silo", TimeSpan.FromSeconds(90));
var runner = new BenchRunner(options, "Orleans 10.4 grain calls", silo);
var gatewayPort = int.Parse(silo.ReadyLine);
var hosts = new List<IHost>();
try
{
    var client = await ConnectAsync();
    runner.PrintHeader("silo in a child process, Task<int> Ping() returning 0");
    var grain = client.GetGrain<IPingGrain>(0);
    await runner.RunAsync("1_1_sync", async span =>
    {
        long n = 0;
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < span)
        {
            await grain.Ping();
            n++;
        }
        return n;
    });
    await runner.RunAsync("1_1_pipelined", span => Pipelined(grain, span));
    if (options.Selects("n_n"))
    {
        var grains = new List<IPingGrain>();
        for (var i = 0; i < Clients; i++) grains.Add((await ConnectAsync()).GetGrain<IPingGrain>(1 + i));
        await runner.RunAsync("n_n", async span =>
        {
            var counts = await Task.WhenAll(grains.Select(g => Task.Run(() => Pipelined(g, span))));
            return counts.Sum();
        });
    }
    runner.WriteJson();
}
catch (Exception e)
{
    Console.Error.WriteLine($"benchmark failed: {e}");
    return 1;
}
finally
{
    foreach (var host in hosts)
    {
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        try { await host.StopAsync(stop.Token); } catch (OperationCanceledException) { }
        host.Dispose();
    }
}
return 0;

async Task<IClusterClient> ConnectAsync()
{
    var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
    SiloProcess.Configure(builder);
    builder.UseOrleansClient(c => c.UseLocalhostClustering(gatewayPort));
    var host = builder.Build();
    hosts.Add(host);
    await host.StartAsync();
    return host.Services.GetRequiredService<IClusterClient>();
}

// Ray's async rows: issue a batch of calls, wait for all of them, repeat.
static async Task<long> Pipelined(IPingGrain grain, TimeSpan span)
{
    var calls = new Task<int>[InFlight];
    long n = 0;
    var sw = Stopwatch.StartNew();
    do
    {
        for (var i = 0; i < calls.Length; i++) calls[i] = grain.Ping();
        await Task.WhenAll(calls);
        n += calls.Length;
    } while (sw.Elapsed < span);
    return n;
}

namespace RaySharp.Bench.Peers
{
    public interface IPingGrain : IGrainWithIntegerKey
    {
        Task<int> Ping();
    }

    public sealed class PingGrain : Grain, IPingGrain
    {
        public Task<int> Ping() => Task.FromResult(0);
    }

    internal static class SiloProcess
    {
        public static async Task<int> RunAsync()
        {
            var (siloPort, gatewayPort) = FreePorts();
            var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
            Configure(builder);
            // Localhost clustering: a single silo on 127.0.0.1, its own membership, no storage.
            builder.UseOrleans(s => s.UseLocalhostClustering(siloPort, gatewayPort));
            using var host = builder.Build();
            await host.StartAsync();
            Console.WriteLine($"READY {gatewayPort}");
            await ChildServer.ParentGone();
            return 0;
        }

        public static void Configure(HostApplicationBuilder builder)
        {
            // stdout carries only the READY line and the results; warnings go to stderr.
            builder.Logging.ClearProviders()
                .SetMinimumLevel(LogLevel.Warning)
                .AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
            // The console lifetime would turn SIGTERM and Ctrl+C into a stop request that nothing here waits for, and
            // the process would run on; without it they end the process, and the parent's exit handler kills the silo.
            builder.Services.AddSingleton<IHostLifetime, NoConsoleLifetime>();
        }

        // Both sockets held open together, so the two ports differ; the window before the silo binds them is small.
        private static (int, int) FreePorts()
        {
            using var a = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            using var b = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            a.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            b.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            return (((IPEndPoint)a.LocalEndPoint!).Port, ((IPEndPoint)b.LocalEndPoint!).Port);
        }
    }

    internal sealed class NoConsoleLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
