using System.Diagnostics;

namespace RaySharp.Cli.Commands;

/// <summary>
/// <c>raysharp microbenchmark</c>: runs the benchmark program (<c>bench/RaySharp.Bench.Core</c>, shipped in the
/// CLI's <c>microbenchmark/</c> folder) in its own process, with its output streamed, as <c>ray microbenchmark</c> runs <c>ray_perf</c>.
/// </summary>
internal static class MicrobenchmarkCommand
{
    public const string ProgramDll = "RaySharp.Bench.Core.dll";

    public static async Task<int> RunAsync(string? filter, bool quick, CancellationToken cancellationToken)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "microbenchmark", ProgramDll);
        if (!File.Exists(dll))
            throw new CliException($"the benchmark program is missing ({dll}); reinstall the raysharp tool, or build the repository (dotnet build RaySharp.slnx -c Release).");
        var psi = new ProcessStartInfo(Environment.ProcessPath ?? "dotnet") { UseShellExecute = false };
        // Run under the same host as this CLI: `dotnet RaySharp.Cli.dll` or the tool's apphost.
        if (Path.GetFileNameWithoutExtension(psi.FileName) != "dotnet") psi.FileName = "dotnet";
        psi.ArgumentList.Add(dll);
        if (filter is not null) psi.ArgumentList.Add(filter);
        if (quick) psi.ArgumentList.Add("--quick");
        using var process = Process.Start(psi) ?? throw new CliException("could not start the benchmark program");
        try
        {
            await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Ctrl-C: the benchmark's embedded cluster stops with it.
            process.Kill(entireProcessTree: false);
            await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
        }
        return process.ExitCode;
    }
}
