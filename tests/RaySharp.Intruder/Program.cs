// Usage: RaySharp.Intruder [--token <token>] <ip:port>...
// Prints one line per attempt: "<kind> <target> <what it tried> <what came back>"; the tests decide what is allowed.
using System.Buffers;
using System.Net.Sockets;
using System.Text;
using Google.Protobuf;
using Grpc.Core;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

string? token = null;
var targets = new List<string>();
for (var i = 0; i < args.Length; i++)
{
    if (args[i] == "--token") token = args[++i];
    else targets.Add(args[i]);
}

using var channels = new RpcChannelPool(new RpcSecurityOptions { ClusterToken = token }, connectTimeout: TimeSpan.FromSeconds(3));
foreach (var target in targets)
{
    var colon = target.LastIndexOf(':');
    var (host, port) = (target[..colon], int.Parse(target[(colon + 1)..], System.Globalization.CultureInfo.InvariantCulture));
    await GrpcAsync(target);
    Framed(host, port, target);
    Http1(host, port, target);
}
return 0;

// Every kind of control-plane call an attacker would want: read the cluster, write the KV store (code packages live
// there), place an actor, lease a worker.
async Task GrpcAsync(string target)
{
    var invoker = channels.Get(target);
    var deadline = () => DateTime.UtcNow.AddSeconds(5);
    var calls = new (string Name, Func<Task> Call)[]
    {
        ("GetAllNodeInfo", async () => await new NodeInfoGcsService.NodeInfoGcsServiceClient(invoker).GetAllNodeInfoAsync(new GetAllNodeInfoRequest(), deadline: deadline())),
        ("KvPut", async () => await new InternalKvGcsService.InternalKvGcsServiceClient(invoker).KvPutAsync(new KvPutRequest
        {
            Namespace = "intruder", Key = Google.Protobuf.ByteString.CopyFromUtf8("owned"), Value = Google.Protobuf.ByteString.CopyFromUtf8("yes"), Overwrite = true,
        }, deadline: deadline())),
        ("KvKeys", async () => await new InternalKvGcsService.InternalKvGcsServiceClient(invoker).KvKeysAsync(new KvKeysRequest { Namespace = "" }, deadline: deadline())),
        ("ListActors", async () => await new ActorInfoGcsService.ActorInfoGcsServiceClient(invoker).ListActorsAsync(new ListActorsRequest(), deadline: deadline())),
        ("RequestWorkerLease", async () => await new NodeManagerService.NodeManagerServiceClient(invoker).RequestWorkerLeaseAsync(new RequestWorkerLeaseRequest
        {
            LeaseRequestId = "intruder", Resources = { ["CPU"] = 1 },
        }, deadline: deadline())),
        ("GetNodeStats", async () => await new NodeManagerService.NodeManagerServiceClient(invoker).GetNodeStatsAsync(new GetNodeStatsRequest(), deadline: deadline())),
    };
    foreach (var (name, call) in calls)
    {
        string outcome;
        try
        {
            await call();
            outcome = "OK";
        }
        catch (RpcException e)
        {
            outcome = e.StatusCode.ToString();
        }
        Console.WriteLine($"grpc {target} {name} {outcome}");
    }
}

// The framing: a Hello with the token this intruder has (none, or a wrong one), and right behind it, without waiting
// for the answer, requests of every kind a worker, raylet or object manager serves.
void Framed(string host, int port, string target)
{
    using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 5000 };
    try
    {
        socket.Connect(host, port);
    }
    catch (SocketException e)
    {
        Console.WriteLine($"framed {target} connect {e.SocketErrorCode}");
        return;
    }
    var output = new ArrayBufferWriter<byte>();
    output.Write(FrameFormat.Preface);
    FrameFormat.Write(output, FrameType.Hello, 0, 0, Encoding.UTF8.GetBytes(token ?? ""));
    int[] methods = [FramedMethods.PushTask, FramedMethods.ActorCreate, FramedMethods.ActorCall, FramedMethods.GetObject, FramedMethods.ObjectChunk,
        FramedMethods.ObjectGet, FramedMethods.ObjectStoreStats, FramedMethods.WorkerPing, FramedMethods.RegisterDriver];
    for (var i = 0; i < methods.Length; i++) FrameFormat.Write(output, FrameType.Request, i + 1, methods[i], new PushTaskRequest { TaskId = "intruder" }.ToByteArray());
    var answers = new List<string>();
    var closed = false;
    string message = "";
    try
    {
        socket.Send(output.WrittenSpan);
        var received = new ArrayBufferWriter<byte>();
        var chunk = new byte[65536];
        while (true)
        {
            var n = socket.Receive(chunk);
            if (n == 0)
            {
                closed = true;
                break;
            }
            received.Write(chunk.AsSpan(0, n));
            var buffer = new ReadOnlySequence<byte>(received.WrittenMemory);
            while (FrameFormat.TryRead(ref buffer, out var frame))
            {
                answers.Add($"{frame.Type}#{frame.Id}");
                if (frame.Type == FrameType.Error && message.Length == 0) message = Encoding.UTF8.GetString(frame.Payload);
            }
        }
    }
    catch (SocketException e)
    {
        closed = e.SocketErrorCode is SocketError.ConnectionReset or SocketError.ConnectionAborted;
        if (!closed) answers.Add("timeout");
    }
    Console.WriteLine($"framed {target} answers={string.Join(',', answers)} closed={closed} message={message.Replace('\n', ' ')}");
}

// Plain HTTP, as ShadowRay's POST /api/jobs/ was sent.
void Http1(string host, int port, string target)
{
    using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 5000 };
    try
    {
        socket.Connect(host, port);
        const string body = "{\"entrypoint\": \"touch /tmp/owned\"}";
        socket.Send(Encoding.ASCII.GetBytes($"POST /api/jobs/ HTTP/1.1\r\nHost: {target}\r\nContent-Type: application/json\r\nContent-Length: {body.Length}\r\n\r\n{body}"));
        var reply = new byte[4096];
        var n = socket.Receive(reply);
        var text = Encoding.ASCII.GetString(reply, 0, n);
        Console.WriteLine($"http1 {target} {(n == 0 ? "closed" : text.Split('\n')[0].Trim().Replace(' ', '_'))}");
    }
    catch (SocketException e)
    {
        Console.WriteLine($"http1 {target} {e.SocketErrorCode}");
    }
}
