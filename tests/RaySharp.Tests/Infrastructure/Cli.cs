using System.Diagnostics;
using System.Text;

namespace RaySharp.Tests.Infrastructure;

internal sealed record CliResult(int ExitCode, string Stdout, string Stderr, TimeSpan Elapsed)
{
    public string Output => Stdout + Stderr;
    public override string ToString() => $"exit {ExitCode} after {Elapsed.TotalSeconds:0.0} s\n--- stdout ---\n{Stdout}\n--- stderr ---\n{Stderr}";
}

/// <summary>Runs the real <c>raysharp</c> CLI from the build, optionally inside a test host's network namespace.</summary>
internal static class Cli
{
    public static string RepoRoot { get; } = FindRepoRoot();

    /// <summary>The build configuration the tests were built in (debug or release), so the CLI of the same build runs.</summary>
    private static string Configuration => new DirectoryInfo(AppContext.BaseDirectory.TrimEnd('/')).Name;

    public static string CliDll => Path.Combine(RepoRoot, "artifacts", "bin", "RaySharp.Cli", Configuration, "RaySharp.Cli.dll");

    /// <summary>A program of the build (examples), by project name.</summary>
    public static string ProgramDll(string project) => Path.Combine(RepoRoot, "artifacts", "bin", project, Configuration, project + ".dll");

    public static async Task<CliResult> RunAsync(TestHost host, params string[] args)
    {
        var result = await RunDllAsync(CliDll, host.Namespace, host.TempDir, JoinEnvironment(host, args), TimeSpan.FromSeconds(60), args);
        if (result.ExitCode == 0 && args is ["start", ..] && args.Contains("--head")) RememberHeadToken(host);
        return result;
    }

    /// <summary>The cluster tokens of the heads the tests started, by GCS address.</summary>
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, string> s_headTokens = new(StringComparer.Ordinal);

    /// <summary>Reads the token a head just made from its session, as an operator would to join nodes to it.</summary>
    public static void RememberHeadToken(TestHost head)
    {
        var current = File.ReadAllLines(Path.Combine(head.TempDir, "current_cluster"));
        var tokenFile = Path.Combine(current[1], "cluster_token");
        if (File.Exists(tokenFile)) s_headTokens[current[0]] = File.ReadAllText(tokenFile).Trim();
        else s_headTokens.TryRemove(current[0], out _);
    }

    /// <summary>The head's token of a cluster, as `raysharp start --head` made it.</summary>
    public static string HeadToken(string gcsAddress) => s_headTokens[gcsAddress];

    /// <summary>What the test process presents when it talks to a cluster's servers itself, as one of its processes would.</summary>
    public static Rpc.RpcSecurityOptions MemberOf(string gcsAddress) => new() { ClusterToken = HeadToken(gcsAddress) };

    /// <summary>
    /// Joining a cluster whose head a test started, the operator's part: the head's token in RAYSHARP_CLUSTER_TOKEN
    /// (as its `start --head` printed), unless the test gives a token of its own (environment, --token, --token-file).
    /// </summary>
    private static IReadOnlyDictionary<string, string> JoinEnvironment(TestHost host, string[] args)
    {
        if (args is not ["start", ..] || host.Environment.ContainsKey("RAYSHARP_CLUSTER_TOKEN") || args.Any(a => a.StartsWith("--token", StringComparison.Ordinal)))
            return host.Environment;
        var address = args.Select((a, i) => a.StartsWith("--address=", StringComparison.Ordinal) ? a["--address=".Length..] : a == "--address" && i + 1 < args.Length ? args[i + 1] : null)
            .FirstOrDefault(a => a is not null);
        if (address is null || !s_headTokens.TryGetValue(address, out var token)) return host.Environment;
        return new Dictionary<string, string>(host.Environment, StringComparer.Ordinal) { ["RAYSHARP_CLUSTER_TOKEN"] = token };
    }

    public static async Task<CliResult> RunProgramAsync(TestHost host, string project, params string[] args) =>
        await RunDllAsync(ProgramDll(project), host.Namespace, host.TempDir, host.Environment, TimeSpan.FromSeconds(60), args);

    public static async Task<CliResult> RunDllAsync(string dll, string? netns, string tempDir, IReadOnlyDictionary<string, string>? env, TimeSpan timeout, params string[] args)
    {
        var psi = new ProcessStartInfo { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        if (netns is not null)
        {
            psi.FileName = "ip";
            foreach (var a in new[] { "netns", "exec", netns, "dotnet", dll }) psi.ArgumentList.Add(a);
        }
        else
        {
            psi.FileName = "dotnet";
            psi.ArgumentList.Add(dll);
        }
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["RAYSHARP_TEMP_DIR"] = tempDir;
        psi.Environment.Remove("RAYSHARP_ADDRESS");
        if (env is not null) foreach (var (k, v) in env) psi.Environment[k] = v;

        var sw = Stopwatch.StartNew();
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            // What it printed before it hung says where it hung.
            var printed = await Task.WhenAll(stdout, stderr).WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
            static string Tail(string text) => text.Length <= 4000 ? text : "..." + text[^4000..];
            throw new TimeoutException($"{Path.GetFileName(dll)} {string.Join(' ', args)} did not finish within {timeout.TotalSeconds} s; " +
                                       $"stdout:\n{Tail(printed[0])}\nstderr:\n{Tail(printed[1])}");
        }
        return new CliResult(p.ExitCode, await stdout, await stderr, sw.Elapsed);
    }

    /// <summary>Starts the CLI without waiting for it (for --block).</summary>
    public static Process StartBackground(TestHost host, params string[] args) => StartDllBackground(CliDll, host, args);

    public static Process StartDllBackground(string dll, TestHost host, params string[] args)
    {
        var psi = new ProcessStartInfo("ip") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        // SIGINT back to its default first: a suite started from a background job inherits it ignored, and .NET keeps
        // ignored signals ignored, so a Ctrl-C test would otherwise test nothing.
        foreach (var a in new[] { "netns", "exec", host.Namespace, "env", "--default-signal=INT", "dotnet", dll }) psi.ArgumentList.Add(a);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["RAYSHARP_TEMP_DIR"] = host.TempDir;
        foreach (var (k, v) in host.Environment) psi.Environment[k] = v;
        return Process.Start(psi)!;
    }

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "RaySharp.slnx"))) return dir.FullName;
        }
        throw new InvalidOperationException("cannot find the repository root (RaySharp.slnx) above " + AppContext.BaseDirectory);
    }
}
