using Microsoft.Extensions.Logging.Abstractions;
using RaySharp.Common;
using RaySharp.ObjectStore;
using RaySharp.ObjectStore.Client;
using RaySharp.Rpc;
using RaySharp.Rpc.Transport;

namespace RaySharp.Tests;

/// <summary>A core worker's client of its node's object store, against a real object manager on a framed port.</summary>
public sealed class PlasmaClientTests : IAsyncDisposable
{
    private readonly DirectoryInfo _root = Directory.CreateTempSubdirectory("raysharp-plasma-client-");
    private readonly PlasmaArena _arena;
    private readonly PlasmaStore _store;
    private readonly FramedListener _listener;
    private readonly string _nodeId;
    private readonly ObjectManager _objectManager;

    public PlasmaClientTests()
    {
        _nodeId = UniqueId.New();
        var nodeId = _nodeId;
        var spill = Path.Combine(_root.FullName, "spill");
        _arena = PlasmaArena.Create(Path.Combine(_root.FullName, "shm"), "client", nodeId, 4L << 20);
        var options = new ObjectStoreOptions { Capacity = 4L << 20, SpillDirectory = spill };
        _store = new PlasmaStore(_arena, options, spill, TimeProvider.System, NullLogger.Instance);
        _objectManager = new ObjectManager(_store, options, nodeId, NullLogger.Instance);
        // The object store's side of a raylet's port (the one core workers connect to).
        var service = new ObjectStoreService(_store, _objectManager, "127.0.0.1", () => 1);
        _listener = FramedListener.Start("store", RpcListenOptions.Fixed(0), service, NullLoggerFactory.Instance, new RpcSecurityOptions());
    }

    public async ValueTask DisposeAsync()
    {
        await _listener.DisposeAsync();
        await _objectManager.DisposeAsync();
        _store.Dispose();
        _arena.Dispose();
        _root.Delete(recursive: true);
    }

    /// <summary>Mappings of the arena file in this process, as the kernel lists them.</summary>
    private int Mappings() => File.ReadLines("/proc/self/maps").Count(l => l.EndsWith(_arena.Path, StringComparison.Ordinal));

    [Fact]
    public async Task AClientMadeAgainForTheSameRayletReusesItsMappingOfTheArena()
    {
        var before = Mappings();
        for (var i = 0; i < 4; i++)
        {
            // As after each reconnect to the raylet: a new client, the old one closed.
            await using var client = await PlasmaClient.ConnectAsync($"127.0.0.1:{_listener.Port}", null, CancellationToken.None);
            Assert.Equal(_nodeId, client.NodeId);
        }
        // One mapping more than the store's own, however many times the client was made.
        Assert.Equal(before + 1, Mappings());
    }
}
