// Usage: dotnet run -c Release --project bench/RaySharp.Bench.Akka -- [filter] [--quick] [--json PATH]
// Akka.NET Ask round trips from client actor systems to a server actor system in a child process, over Akka.Remote
// (DotNetty TCP) on loopback, in the row shapes of RaySharp's benchmarks (README.md beside this file). `server` is the
// child's mode.
using System.Diagnostics;
using Akka.Actor;
using Akka.Configuration;
using RaySharp.Bench.Peers;

if (args is ["server", ..]) return await EchoServer.RunAsync();

const int InFlight = 1000;

var options = BenchOptions.Parse(args);
using var server = ChildServer.Start("server", TimeSpan.FromSeconds(60));
var runner = new BenchRunner(options, "Akka.NET 1.5 Ask over Akka.Remote", server);
var port = int.Parse(server.ReadyLine);
var systems = new List<ActorSystem>();
try
{
    var echo = await ConnectAsync(0);
    runner.PrintHeader("server actor system in a child process, an echo actor replying 0");
    await runner.RunAsync("1_1_sync", async span =>
    {
        long n = 0;
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < span)
        {
            await echo.Ask<int>(EchoServer.Zero);
            n++;
        }
        return n;
    });
    await runner.RunAsync("1_1_pipelined", span => Pipelined(echo, span));
    if (options.Selects("n_n"))
    {
        var actors = new List<IActorRef>();
        for (var i = 0; i < EchoServer.Clients; i++) actors.Add(await ConnectAsync(1 + i));
        await runner.RunAsync("n_n", async span =>
        {
            var counts = await Task.WhenAll(actors.Select(a => Task.Run(() => Pipelined(a, span))));
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
    // Client systems leave before the server is killed, so that no client logs a failed association; the server
    // logs one per client as they leave, which is not worth showing.
    server.Silence();
    foreach (var system in systems)
    {
        try { await system.Terminate().WaitAsync(TimeSpan.FromSeconds(5)); } catch (TimeoutException) { }
    }
}
return 0;

// Each client is an actor system of its own: its own remoting, so its own association with the server.
async Task<IActorRef> ConnectAsync(int actor)
{
    var system = ActorSystem.Create($"client{systems.Count}", EchoServer.Config);
    systems.Add(system);
    return await system.ActorSelection($"akka.tcp://server@127.0.0.1:{port}/user/echo-{actor}").ResolveOne(TimeSpan.FromSeconds(30));
}

// Ray's async rows: issue a batch of calls, wait for all of them, repeat.
static async Task<long> Pipelined(IActorRef echo, TimeSpan span)
{
    var calls = new Task<int>[InFlight];
    long n = 0;
    var sw = Stopwatch.StartNew();
    do
    {
        for (var i = 0; i < calls.Length; i++) calls[i] = echo.Ask<int>(EchoServer.Zero);
        await Task.WhenAll(calls);
        n += calls.Length;
    } while (sw.Elapsed < span);
    return n;
}

namespace RaySharp.Bench.Peers
{
    internal sealed class Echo : UntypedActor
    {
        protected override void OnReceive(object message) => Sender.Tell(EchoServer.Zero);
    }

    internal static class EchoServer
    {
        // Boxed once: the message and the reply are a small value, as in Ray's rows; int goes through Akka.Remote's
        // primitive serializer.
        public static readonly object Zero = 0;

        // N clients on N actors. With 2 cores, N = 2 client actor systems in the measuring process, each with its own
        // association (TCP connection) to the server, its own echo actor and 1000 asks in flight: client processes of
        // their own would only add a third and fourth process on two cores.
        public const int Clients = 2;

        // Default remoting (DotNetty TCP, batching on) on 127.0.0.1; port 0 picks a free one. Log output goes to stdout,
        // which the parent drains to its stderr, so only warnings are let through.
        public static readonly Config Config = ConfigurationFactory.ParseString("""
            akka {
              loglevel = WARNING
              stdout-loglevel = WARNING
              actor.provider = remote
              remote.dot-netty.tcp {
                hostname = 127.0.0.1
                port = 0
              }
            }
            """);

        public static async Task<int> RunAsync()
        {
            using var system = ActorSystem.Create("server", Config);
            // echo-0 for the 1:1 rows, echo-1.. for the n:n clients.
            for (var i = 0; i <= Clients; i++) system.ActorOf(Props.Create<Echo>(), $"echo-{i}");
            var port = ((ExtendedActorSystem)system).Provider.DefaultAddress.Port;
            Console.WriteLine($"READY {port}");
            await ChildServer.ParentGone();
            return 0;
        }
    }
}
