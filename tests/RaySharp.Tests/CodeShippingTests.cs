using System.Security.Cryptography;
using Google.Protobuf;
using RaySharp.CoreWorker.CodeShipping;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>A driver's code reaches the cluster through the GCS: content-addressed, once per content, loadable by job.</summary>
public sealed class CodeShippingTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(1);
    private RpcChannelPool? _channels;

    public void Dispose()
    {
        _channels?.Dispose();
        _net.Dispose();
    }

    [Fact]
    public async Task DriversUploadTheirApplicationAssembliesOnceAndWorkersCanLoadThemByJob()
    {
        var head = _net[0];
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=0")).ExitCode);
        _channels = new RpcChannelPool(Cli.MemberOf($"{head.Ip}:6379"));
        var gcs = new GcsClient(_channels, $"{head.Ip}:6379");

        var first = await Cli.RunProgramAsync(head, "ClusterInfo", "auto");
        Assert.True(first.ExitCode == 0, first.ToString());
        var manifest = await CodePackage.ReadManifestAsync(gcs, "00000001");
        Assert.NotNull(manifest);
        Assert.Equal("ClusterInfo", manifest.EntryAssembly);
        // The application travels with the API it was built against; the runtime (what the node host has: RaySharp.Common,
        // .Rpc, .CoreWorker, gRPC, ...) is on every node already.
        Assert.Equal(["ClusterInfo.dll", "RaySharp.dll"], manifest.Assemblies.Select(a => a.File).Order().ToArray());
        var example = manifest.Assemblies.Single(a => a.File == "ClusterInfo.dll");
        var local = await File.ReadAllBytesAsync(Cli.ProgramDll("ClusterInfo"));
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(local)), example.Sha256);
        var stored = await gcs.Kv.KvGetAsync(new KvGetRequest { Namespace = CodePackage.BlobNamespace, Key = ByteString.CopyFromUtf8(example.Sha256) });
        Assert.Equal(local, stored.Value.ToByteArray());

        // A second run of the same program stores nothing new: same content, same key.
        var blobsBefore = (await gcs.Kv.KvKeysAsync(new KvKeysRequest { Namespace = CodePackage.BlobNamespace })).Keys.Count;
        Assert.Equal(0, (await Cli.RunProgramAsync(head, "ClusterInfo", "auto")).ExitCode);
        Assert.Equal(manifest.Assemblies.Select(a => a.Sha256).Order(), (await CodePackage.ReadManifestAsync(gcs, "00000002"))!.Assemblies.Select(a => a.Sha256).Order());
        Assert.Equal(blobsBefore, (await gcs.Kv.KvKeysAsync(new KvKeysRequest { Namespace = CodePackage.BlobNamespace })).Keys.Count);

        // What a worker does for a job: fetch into its cache, verify, load into the job's own context.
        var cache = Path.Combine(head.TempDir, "code-cache");
        var context = await CodePackage.LoadAsync(gcs, "00000002", cache);
        var entry = context.EntryAssembly;
        Assert.NotNull(entry);
        Assert.Equal("ClusterInfo", entry.GetName().Name);
        Assert.StartsWith(cache, entry.Location);
        Assert.NotNull(entry.EntryPoint);
        Assert.NotSame(System.Runtime.Loader.AssemblyLoadContext.Default, System.Runtime.Loader.AssemblyLoadContext.GetLoadContext(entry));
        // The job's API copy is its own; the runtime beneath it is the node's, shared by every job of the worker.
        var api = context.LoadFromAssemblyName(entry.GetReferencedAssemblies().Single(a => a.Name == "RaySharp"));
        Assert.StartsWith(cache, api.Location);
        Assert.Same(typeof(RaySharp.Common.UniqueId).Assembly, context.LoadFromAssemblyName(new System.Reflection.AssemblyName("RaySharp.Common")));

        var missing = await Assert.ThrowsAsync<InvalidOperationException>(() => CodePackage.LoadAsync(gcs, "000000ff", cache));
        Assert.Contains("no code package", missing.Message);
        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }
}
