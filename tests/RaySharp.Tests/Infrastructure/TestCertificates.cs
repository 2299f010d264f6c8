using RaySharp.Rpc;

namespace RaySharp.Tests.Infrastructure;

/// <summary>Certificates made once per test run by the real `raysharp tls generate`, for in-process TLS tests.</summary>
internal static class TestCertificates
{
    private static readonly Lazy<Task<string>> s_dir = new(async () =>
    {
        var dir = Directory.CreateTempSubdirectory("raysharp-test-tls-").FullName;
        var made = await Cli.RunDllAsync(Cli.CliDll, null, dir, null, TimeSpan.FromSeconds(60), "tls", "generate", "--out", dir, "--name", "node");
        if (made.ExitCode != 0) throw new InvalidOperationException("raysharp tls generate failed: " + made);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => Directory.Delete(dir, recursive: true);
        return dir;
    });

    public static async Task<ClusterTls> LoadAsync(string name)
    {
        var dir = await s_dir.Value;
        return ClusterTls.Load(Path.Combine(dir, name + ".crt"), Path.Combine(dir, name + ".key"), Path.Combine(dir, "ca.crt"));
    }
}
