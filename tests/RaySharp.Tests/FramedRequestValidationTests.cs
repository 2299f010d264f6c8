using System.IO.Pipelines;
using Google.Protobuf;
using Microsoft.Extensions.Logging.Abstractions;
using RaySharp.Common;
using RaySharp.CoreWorker;
using RaySharp.CoreWorker.Execution;
using RaySharp.ObjectStore;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

namespace RaySharp.Tests;

/// <summary>
/// Framed requests are checked where they arrive, before a handler sees them (FramedRequests): ids that could name
/// paths, addresses the store would pull from, payloads over their method's limit and messages of too many repeated
/// elements are answered with an error naming the problem, the handler is never called, and the connection goes on.
/// The raylet's object store and object manager and a worker's executor are served as their servers serve them, over
/// in-memory pipes.
/// </summary>
public sealed class FramedRequestValidationTests : IAsyncDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);
    private readonly DirectoryInfo _root = Directory.CreateTempSubdirectory("raysharp-framed-checks-");
    private readonly string _nodeId = UniqueId.New();
    private readonly PlasmaArena _arena;
    private readonly PlasmaStore _store;
    private readonly ObjectManager _objectManager;
    private readonly List<FramedConnection> _connections = [];

    public FramedRequestValidationTests()
    {
        _arena = PlasmaArena.Create(Path.Combine(_root.FullName, "shm"), "checks", _nodeId, 16L << 20);
        var options = new ObjectStoreOptions { Capacity = 16L << 20, SpillDirectory = SpillDirectory };
        _store = new PlasmaStore(_arena, options, SpillDirectory, TimeProvider.System, NullLogger.Instance);
        _objectManager = new ObjectManager(_store, options, _nodeId, NullLogger.Instance);
    }

    private string SpillDirectory => Path.Combine(_root.FullName, "session", "spill");

    public async ValueTask DisposeAsync()
    {
        foreach (var connection in _connections) await connection.DisposeAsync();
        _store.Dispose();
        _arena.Dispose();
        _root.Delete(recursive: true);
    }

    /// <summary>A client connection to <paramref name="handler"/>, served over in-memory pipes.</summary>
    private FramedConnection Connect(IFramedHandler handler)
    {
        var toServer = new Pipe();
        var toClient = new Pipe();
        var server = new FramedConnection(new Duplex(toServer.Reader, toClient.Writer), handler);
        server.Start();
        var client = new FramedConnection(new Duplex(toClient.Reader, toServer.Writer), null);
        client.Start();
        _connections.Add(client);
        _connections.Add(server);
        return client;
    }

    private StoredObject Stored(string id) => new()
    {
        ObjectId = id, Size = 1 << 20, NodeId = _nodeId, NodeIpAddress = "127.0.0.1", ObjectManagerPort = 1, JobId = "00000001",
    };

    private static async Task<string> RefusedAsync(FramedConnection connection, int method, byte[] payload)
    {
        var error = await Assert.ThrowsAsync<RemoteCallException>(() => connection.CallAsync(method, payload).WaitAsync(Deadline));
        return error.Message;
    }

    public static TheoryData<string> BadIds() =>
    [
        "../../x",
        "../../0123456789abcdef0123456789",
        "0123456789abcdef0123456789abcde",
        "0123456789abcdef0123456789abcdef0",
        "0123456789ABCDEF0123456789ABCDEF",
    ];

    [Theory]
    [MemberData(nameof(BadIds))]
    public async Task StoreRequestsNamingAnIdThatIsNotAnObjectIdAreRefusedBeforeTheStoreAndTouchNoFile(string id)
    {
        // A file where the traversal would lead from the spill directory: it must stay as it is.
        var target = Path.GetFullPath(Path.Combine(SpillDirectory, id));
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        await File.WriteAllTextAsync(target, "keep");
        var before = Directory.GetFiles(_root.FullName, "*", SearchOption.AllDirectories).Order().ToArray();

        var store = Connect(new ObjectStoreService(_store, _objectManager, "127.0.0.1", () => 1));
        await store.CallAsync(FramedMethods.ObjectStoreConnect, new ObjectStoreClientInfo { Pid = 1 }.ToByteArray()).WaitAsync(Deadline);
        var create = await RefusedAsync(store, FramedMethods.ObjectCreate, new ObjectCreateRequest { ObjectId = id, Size = 1 << 20, JobId = "00000001" }.ToByteArray());
        Assert.StartsWith("InvalidDataException: invalid ObjectCreate request: object_id", create);
        Assert.Contains("is not a 32-character hex id", create);
        var get = await RefusedAsync(store, FramedMethods.ObjectGet, new ObjectGetRequest { Object = Stored(id), TimeoutMs = 1000 }.ToByteArray());
        Assert.StartsWith("InvalidDataException: invalid ObjectGet request: object_id", get);
        var chunk = await RefusedAsync(Connect(_objectManager), FramedMethods.ObjectChunk, new ObjectChunkRequest { ObjectId = id, Length = 10 }.ToByteArray());
        Assert.StartsWith("InvalidDataException: invalid ObjectChunk request: object_id", chunk);

        Assert.Equal(0, _store.Stats(10).NumObjects);
        Assert.Equal("keep", await File.ReadAllTextAsync(target));
        Assert.Equal(before, Directory.GetFiles(_root.FullName, "*", SearchOption.AllDirectories).Order());
        // The connection goes on serving well-formed requests.
        var good = ObjectCreateReply.Parser.ParseFrom(await store.CallAsync(FramedMethods.ObjectCreate,
            new ObjectCreateRequest { ObjectId = UniqueId.New(), Size = 1 << 20, JobId = "00000001" }.ToByteArray()).WaitAsync(Deadline));
        Assert.True(good.Offset >= 0, good.Error);
    }

    [Fact]
    public async Task AGetNamingANodeOrAddressThatIsNotOneIsRefusedRatherThanPulledFrom()
    {
        var store = Connect(new ObjectStoreService(_store, _objectManager, "127.0.0.1", () => 1));
        var id = UniqueId.New();
        var badNode = Stored(id);
        badNode.NodeId = "../../x";
        Assert.Contains("node_id '../../x' is not a", await RefusedAsync(store, FramedMethods.ObjectGet, new ObjectGetRequest { Object = badNode }.ToByteArray()));
        var badIp = Stored(id);
        badIp.NodeId = UniqueId.New();
        badIp.NodeIpAddress = "evil.example";
        Assert.Contains("node_ip_address 'evil.example' is not an IP address", await RefusedAsync(store, FramedMethods.ObjectGet, new ObjectGetRequest { Object = badIp }.ToByteArray()));
        var badPort = Stored(id);
        badPort.NodeId = UniqueId.New();
        badPort.ObjectManagerPort = 70000;
        Assert.Contains("object_manager_port 70000 is out of range", await RefusedAsync(store, FramedMethods.ObjectGet, new ObjectGetRequest { Object = badPort }.ToByteArray()));
        // Nothing was made for a pull.
        Assert.Equal(0, _store.Stats(10).NumObjects);
        Assert.Equal((0L, 0), _objectManager.PullTotals);
    }

    [Fact]
    public async Task APayloadOverItsMethodsLimitIsRefusedUnreadAndTheConnectionGoesOn()
    {
        var store = Connect(new ObjectStoreService(_store, _objectManager, "127.0.0.1", () => 1));
        // A well-formed create, padded with an unknown field to 1 MiB: a control message has no use for that.
        var padded = new ObjectCreateRequest { ObjectId = UniqueId.New(), Size = 1 << 20, JobId = "00000001" }.ToByteArray()
            .Concat(Padding(1 << 20)).ToArray();
        var refused = await RefusedAsync(store, FramedMethods.ObjectCreate, padded);
        Assert.Contains($"the ObjectCreate payload of {padded.Length} bytes is over that method's limit of {FramedRequests.SmallPayload} bytes", refused);
        Assert.Equal(0, _store.Stats(10).NumObjects);
        var good = ObjectCreateReply.Parser.ParseFrom(await store.CallAsync(FramedMethods.ObjectCreate,
            new ObjectCreateRequest { ObjectId = UniqueId.New(), Size = 1 << 20, JobId = "00000001" }.ToByteArray()).WaitAsync(Deadline));
        Assert.True(good.Offset >= 0, good.Error);
    }

    [Fact]
    public async Task ATaskOfMoreRepeatedElementsThanItsMethodAllowsIsRefusedBeforeItIsParsed()
    {
        using var channels = new RpcChannelPool(connectTimeout: TimeSpan.FromSeconds(1));
        var options = new CoreWorkerOptions
        {
            WorkerId = UniqueId.New(), NodeId = _nodeId, RayletAddress = "127.0.0.1:1", GcsAddress = "127.0.0.1:1",
            NodeIpAddress = "127.0.0.1", SessionDir = _root.FullName,
        };
        var worker = Connect(new WorkerHandler(options, new TaskExecutor(options, new GcsClient(channels, "127.0.0.1:1"),
            new CoreWorker.Objects.LocalObjectStore(() => Task.FromResult(options.RayletAddress), options.WorkerId), new CoreWorker.Objects.ObjectDirectory(), NullLogger<TaskExecutor>.Instance)));
        var task = new PushTaskRequest { JobId = "00000001", TaskId = UniqueId.New() };
        // Empty arguments: two bytes each on the wire, a ByteString each once parsed.
        for (var i = 0; i < FramedRequests.TaskFields + 1; i++) task.Args.Add(ByteString.Empty);
        var refused = await RefusedAsync(worker, FramedMethods.PushTask, task.ToByteArray());
        Assert.Contains($"the PushTask message has more than {FramedRequests.TaskFields} fields", refused);
        var noActor = await RefusedAsync(worker, FramedMethods.ActorCall, new PushTaskRequest { JobId = "00000001", TaskId = UniqueId.New() }.ToByteArray());
        Assert.Contains("invalid ActorCall request: actor_id is missing", noActor);
        var badTask = await RefusedAsync(worker, FramedMethods.PushTask, new PushTaskRequest { JobId = "00000001", TaskId = "../x" }.ToByteArray());
        Assert.Contains("invalid PushTask request: task_id '../x'", badTask);
        Assert.Contains("is not a 32-character hex id", await RefusedAsync(worker, FramedMethods.GetObject, "../../x"u8.ToArray()));
    }

    /// <summary>An unknown length-delimited field (number 100) of about <paramref name="size"/> bytes.</summary>
    private static byte[] Padding(int size)
    {
        var output = new MemoryStream();
        var coded = new CodedOutputStream(output);
        coded.WriteTag(100, WireFormat.WireType.LengthDelimited);
        coded.WriteBytes(ByteString.CopyFrom(new byte[size]));
        coded.Flush();
        return output.ToArray();
    }

    private sealed class Duplex(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input => input;
        public PipeWriter Output => output;
    }
}
