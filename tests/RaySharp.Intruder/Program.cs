// Usage: RaySharp.Intruder [--token <token>] [--tls-cert <pem> --tls-key <pem>] <ip:port>...
// Prints one line per attempt: "<kind> <target> <what it tried> <what came back>"; the tests decide what is allowed.
// With a certificate, every attempt runs inside TLS presenting it, and the servers' certificates are taken whatever
// they are: what is tested is whether the server admits this client.
using System.Buffers;
using System.Net.Sockets;
using System.Text;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using Google.Protobuf;
using Grpc.Core.Interceptors;
using Grpc.Core;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

string? token = null;
string? certFile = null, keyFile = null;
var targets = new List<string>();
for (var i = 0; i < args.Length; i++)
{
    if (args[i] == "--token") token = args[++i];
    else if (args[i] == "--tls-cert") certFile = args[++i];
    else if (args[i] == "--tls-key") keyFile = args[++i];
    else targets.Add(args[i]);
}
var certificate = certFile is null ? null : X509Certificate2.CreateFromPemFile(certFile, keyFile!);

using var channels = new RpcChannelPool(new RpcSecurityOptions { ClusterToken = token }, connectTimeout: TimeSpan.FromSeconds(3));
foreach (var target in targets)
{
    var colon = target.LastIndexOf(':');
    var (host, port) = (target[..colon], int.Parse(target[(colon + 1)..], System.Globalization.CultureInfo.InvariantCulture));
    await GrpcAsync(target);
    Framed(host, port, target);
    if (certificate is null) Http1(host, port, target);
}
return 0;

CallInvoker Invoker(string target)
{
    if (certificate is null) return channels.Get(target);
    var handler = new SocketsHttpHandler
    {
        ConnectTimeout = TimeSpan.FromSeconds(3),
        SslOptions = new SslClientAuthenticationOptions
        {
            ClientCertificates = new X509CertificateCollection { certificate },
            RemoteCertificateValidationCallback = (_, _, _, _) => true,
        },
    };
    var channel = Grpc.Net.Client.GrpcChannel.ForAddress("https://" + target, new Grpc.Net.Client.GrpcChannelOptions { HttpHandler = handler });
    var invoker = channel.CreateCallInvoker();
    return token is null ? invoker : invoker.Intercept(m => { m.Add("authorization", "Bearer " + token); return m; });
}

// Every kind of control-plane call an attacker would want: read the cluster, write the KV store (code packages live
// there), place an actor, lease a worker.
async Task GrpcAsync(string target)
{
    var invoker = Invoker(target);
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
    Stream stream = new NetworkStream(socket, ownsSocket: false);
    if (certificate is not null)
    {
        var tls = new SslStream(stream, leaveInnerStreamOpen: false, (_, _, _, _) => true);
        try
        {
            tls.AuthenticateAsClient(new SslClientAuthenticationOptions { TargetHost = host, ClientCertificates = new X509CertificateCollection { certificate } });
        }
        catch (Exception e) when (e is IOException or System.Security.Authentication.AuthenticationException)
        {
            Console.WriteLine($"framed {target} answers= closed=True message=tls-refused:{e.GetType().Name}");
            return;
        }
        stream = tls;
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
        stream.Write(output.WrittenSpan);
        var received = new ArrayBufferWriter<byte>();
        var consumed = 0;
        var chunk = new byte[65536];
        while (true)
        {
            var n = stream.Read(chunk);
            if (n == 0)
            {
                closed = true;
                break;
            }
            received.Write(chunk.AsSpan(0, n));
            var buffer = new ReadOnlySequence<byte>(received.WrittenMemory[consumed..]);
            while (FrameFormat.TryRead(ref buffer, out var frame))
            {
                consumed = received.WrittenCount - (int)buffer.Length;
                answers.Add($"{frame.Type}#{frame.Id}");
                if (frame.Type == FrameType.Error && message.Length == 0) message = Encoding.UTF8.GetString(frame.Payload);
            }
        }
    }
    catch (Exception e) when (e is IOException or System.Security.Authentication.AuthenticationException)
    {
        // TLS 1.3 tells a client its certificate was refused only on the first read after the handshake.
        closed = e is not IOException { InnerException: SocketException { SocketErrorCode: SocketError.TimedOut } };
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
