using System.Diagnostics;

namespace RaySharp.Tests.Infrastructure;

/// <summary>A real redis-server in a test host's namespace, without persistence, killed on dispose.</summary>
internal sealed class RedisServer : IDisposable
{
    private readonly Process _process;

    private RedisServer(Process process, string ip, int port)
    {
        _process = process;
        Ip = ip;
        Port = port;
    }

    public string Ip { get; }
    public int Port { get; }
    public string Address => $"{Ip}:{Port}";

    public static async Task<RedisServer> StartAsync(TestHost host, int port = 6380)
    {
        var psi = new ProcessStartInfo("ip") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "netns", "exec", host.Namespace, "redis-server", "--port", port.ToString(), "--bind", host.Ip,
                     "--protected-mode", "no", "--save", "", "--appendonly", "no" })
            psi.ArgumentList.Add(a);
        var process = Process.Start(psi) ?? throw new InvalidOperationException("could not start redis-server (is it installed?)");
        _ = process.StandardOutput.ReadToEndAsync();
        _ = process.StandardError.ReadToEndAsync();
        var server = new RedisServer(process, host.Ip, port);
        await ClusterAssertions.EventuallyAsync(async () => (await server.CliAsync("ping")).Trim() == "PONG", TimeSpan.FromSeconds(15),
            $"redis-server answering on {server.Address}");
        return server;
    }

    /// <summary>Runs redis-cli against this server and returns what it printed.</summary>
    public async Task<string> CliAsync(params string[] args)
    {
        var psi = new ProcessStartInfo("redis-cli") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "-h", Ip, "-p", Port.ToString() }.Concat(args)) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var output = await p.StandardOutput.ReadToEndAsync();
        await p.WaitForExitAsync();
        return output;
    }

    public void Dispose()
    {
        try { _process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        _process.WaitForExit(5000);
        _process.Dispose();
    }
}
