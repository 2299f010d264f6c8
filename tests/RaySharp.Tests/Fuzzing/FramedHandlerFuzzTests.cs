using System.Buffers;
using System.IO.Pipelines;
using System.Reflection;
using System.Text;
using CsCheck;
using Google.Protobuf;
using Microsoft.Extensions.Logging.Abstractions;
using RaySharp.CoreWorker;
using RaySharp.CoreWorker.Execution;
using RaySharp.Gcs;
using RaySharp.Gcs.Storage;
using RaySharp.ObjectStore;
using RaySharp.ObjectStore.Client;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;
using Xunit.Abstractions;

namespace RaySharp.Tests.Fuzzing;

/// <summary>
/// Every framed handler, built in-process as its server builds it (the worker's, the raylet's object store and object
/// manager, the GCS's driver monitor, and the output sinks of GCS and submitters), fed random and mutated payloads for
/// every method number over a real <see cref="FramedConnection"/>, as requests and as one-way messages, plus raw
/// frames of any type and id. The contract: a request is answered (a reply, or an error reply naming a documented
/// failure: unparseable, invalid, not served, not found, store full), never with an error that betrays a bug in the
/// handler (a null dereference, an index or argument out of range, a bad cast); a one-way message never closes the
/// connection; the connection keeps serving after whatever it was sent.
/// </summary>
public sealed class FramedHandlerFuzzTests(ITestOutputHelper output)
{
    /// <summary>Error replies that mean the handler itself broke on the input, not that the input was refused.</summary>
    private static readonly string[] BugExceptions =
    [
        nameof(NullReferenceException), nameof(IndexOutOfRangeException), nameof(ArgumentOutOfRangeException), nameof(ArgumentNullException),
        nameof(ArgumentException), nameof(InvalidCastException), nameof(OverflowException), nameof(DivideByZeroException),
        nameof(NotImplementedException), nameof(AccessViolationException), nameof(FormatException), nameof(OutOfMemoryException),
        nameof(InsufficientExecutionStackException), nameof(ArrayTypeMismatchException),
    ];

    private static readonly Dictionary<int, MessageDescriptorOrText> PayloadOf = new()
    {
        [FramedMethods.PushTask] = new(typeof(PushTaskRequest)),
        [FramedMethods.TaskOutput] = new(typeof(TaskOutput)),
        [FramedMethods.GetObject] = new(null),
        [FramedMethods.ActorCreate] = new(typeof(PushTaskRequest)),
        [FramedMethods.ActorCall] = new(typeof(PushTaskRequest)),
        [FramedMethods.ActorKill] = new(typeof(ActorKillRequest)),
        [FramedMethods.RegisterDriver] = new(typeof(RegisterDriverRequest)),
        [FramedMethods.ObjectStoreConnect] = new(typeof(ObjectStoreClientInfo)),
        [FramedMethods.ObjectCreate] = new(typeof(ObjectCreateRequest)),
        [FramedMethods.ObjectSeal] = new(typeof(ObjectIdsRequest)),
        [FramedMethods.ObjectGet] = new(typeof(ObjectGetRequest)),
        [FramedMethods.ObjectRelease] = new(typeof(ObjectIdsRequest)),
        [FramedMethods.ObjectFree] = new(typeof(ObjectFreeRequest)),
        [FramedMethods.ObjectStoreStats] = new(typeof(Google.Protobuf.WellKnownTypes.Empty)),
        [FramedMethods.ObjectChunk] = new(typeof(ObjectChunkRequest)),
        [FramedMethods.ObjectFreeCopies] = new(typeof(ObjectIdsRequest)),
        [FramedMethods.ObjectStoreCollect] = new(typeof(Google.Protobuf.WellKnownTypes.Empty)),
        [FramedMethods.WorkerPing] = new(typeof(PingRequest)),
    };

    private static readonly HashSet<int> OneWay =
        [FramedMethods.TaskOutput, FramedMethods.ObjectSeal, FramedMethods.ObjectRelease, FramedMethods.ObjectFree, FramedMethods.ObjectFreeCopies, FramedMethods.ObjectStoreCollect];

    /// <summary>A method's payload: a message of this type, or (null) an object id as text.</summary>
    private sealed record MessageDescriptorOrText(Type? Message);

    public enum Kind { Request, Notify, RawFrame }

    public sealed record Input(int Handler, int Method, Kind Kind, byte RawType, long RawId, byte[] Payload)
    {
        public override string ToString() => $"handler {Handler}, method {Method}, {Kind}{(Kind == Kind.RawFrame ? $" type {RawType} id {RawId}" : "")}, payload {FuzzHarness.Hex(Payload)}";
    }

    private sealed record Served(string Name, IFramedHandler Handler, int[] Methods);

    private static Gen<Input> Inputs(int handlers, Func<int, int[]> methodsOf) =>
        Gen.Select(Gen.Int[0, handlers - 1], Gen.Int, Gen.Int[0, 4], Gen.Int[0, 19], (handler, seed, rounds, mode) =>
        {
            var random = new Random(seed);
            var own = methodsOf(handler);
            var method = random.Next(10) switch
            {
                < 7 => own[random.Next(own.Length)],
                < 9 => PayloadOf.Keys.ElementAt(random.Next(PayloadOf.Count)),
                _ => random.Next(4) == 0 ? random.Next() : random.Next(-1, 40),
            };
            var payload = mode switch
            {
                0 => Mutations.Mutate([], random, 3),
                _ => Mutations.Mutate(Valid(method, random), random, mode < 8 ? 0 : rounds),
            };
            var kind = mode == 19 ? Kind.RawFrame : OneWay.Contains(method) ^ random.Next(10) == 0 ? Kind.Notify : Kind.Request;
            return new Input(handler, method, kind, (byte)(random.Next(3) == 0 ? random.Next(256) : random.Next(1, 7)), random.Next(3) == 0 ? random.NextInt64() : random.Next(-2, 5), payload);
        });

    private static byte[] Valid(int method, Random random)
    {
        if (!PayloadOf.TryGetValue(method, out var of)) return [];
        if (of.Message is null) return Encoding.UTF8.GetBytes(ProtoFill.Ids[random.Next(ProtoFill.Ids.Length)]);
        return ProtoFill.Fill(of.Message, random).ToByteArray();
    }

    [Fact]
    public void Framed_handlers_answer_every_payload_and_keep_their_connection()
    {
        var root = Directory.CreateTempSubdirectory("raysharp-fuzz-handlers-");
        var nodeId = ProtoFill.Ids[0];
        using var arena = PlasmaArena.Create(root.FullName, "fuzz", nodeId, 16L << 20);
        var storeOptions = new ObjectStoreOptions { Capacity = 16L << 20, SpillDirectory = Path.Combine(root.FullName, "spill"), ChunkSize = 64 * 1024 };
        using var store = new PlasmaStore(arena, storeOptions, storeOptions.SpillDirectory, TimeProvider.System, NullLogger.Instance);
        var objectManager = new ObjectManager(store, storeOptions, nodeId, NullLogger.Instance);
        using var channels = new RpcChannelPool(connectTimeout: TimeSpan.FromSeconds(1));
        // Nothing listens there: a task's job code cannot be fetched, so tasks fail after their request is read.
        var gcs = new GcsClient(channels, "127.0.0.1:1");
        var workerOptions = new CoreWorkerOptions
        {
            WorkerId = ProtoFill.Ids[1], NodeId = nodeId, RayletAddress = "127.0.0.1:1", GcsAddress = "127.0.0.1:1",
            NodeIpAddress = "127.0.0.1", SessionDir = root.FullName,
        };
        using var drivers = new GcsDriverMonitor(new GcsJobManager(new InMemoryGcsStore(), new GcsPublisher(), TimeProvider.System), TimeProvider.System, NullLogger<GcsDriverMonitor>.Instance);
        Served[] served =
        [
            new("worker", new WorkerHandler(workerOptions, new TaskExecutor(workerOptions, gcs,
                new CoreWorker.Objects.LocalObjectStore(() => Task.FromResult(workerOptions.RayletAddress), workerOptions.WorkerId), new CoreWorker.Objects.ObjectDirectory(), NullLogger<TaskExecutor>.Instance)),
                [FramedMethods.PushTask, FramedMethods.GetObject, FramedMethods.ActorCreate, FramedMethods.ActorCall, FramedMethods.ActorKill, FramedMethods.WorkerPing]),
            new("object store", new ObjectStoreService(store, objectManager, "127.0.0.1", () => 1),
                [FramedMethods.ObjectStoreConnect, FramedMethods.ObjectCreate, FramedMethods.ObjectSeal, FramedMethods.ObjectGet, FramedMethods.ObjectRelease, FramedMethods.ObjectFree, FramedMethods.ObjectStoreStats]),
            new("object manager", objectManager, [FramedMethods.ObjectChunk, FramedMethods.ObjectFreeCopies]),
            new("gcs driver monitor", drivers, [FramedMethods.RegisterDriver]),
            new("gcs actor output", Nested(typeof(RaySharp.Rpc.Clients.CoreWorkerClient), "OutputHandler", new Action<TaskOutput>(_ => { })), [FramedMethods.TaskOutput]),
            new("submitter output", Nested(typeof(RaySharp.CoreWorker.Submission.TaskSubmitter), "OutputPrinter",
                new RaySharp.CoreWorker.Objects.ObjectDirectory(), new RaySharp.CoreWorker.Submission.NestedOutputRouter(), new Action<string, bool>((_, _) => { })), [FramedMethods.TaskOutput, FramedMethods.GetObject]),
            new("store client", CollectOnRequest.Instance, [FramedMethods.ObjectStoreCollect]),
        ];
        var links = served.Select(s => new Link(s.Handler)).ToArray();
        var harness = new FuzzHarness("framed-handlers", output, TimeSpan.FromSeconds(10));
        try
        {
            harness.Run(Inputs(served.Length, i => served[i].Methods), input =>
            {
                var link = links[input.Handler];
                if (link.Closed) links[input.Handler] = link = new Link(served[input.Handler].Handler);
                switch (input.Kind)
                {
                    case Kind.Request:
                        CheckCall(link.Client.CallAsync(input.Method, input.Payload), input, harness.PerInput / 2);
                        break;
                    case Kind.Notify:
                        if (!link.Client.Notify(input.Method, input.Payload)) throw new InvalidOperationException("the connection had closed before the message");
                        break;
                    default:
                        link.WriteRaw((FrameType)input.RawType, input.RawId, input.Method, input.Payload, harness.PerInput / 2);
                        break;
                }
                // Whatever came before, the connection still answers.
                var probe = link.Client.CallAsync(0, ReadOnlyMemory<byte>.Empty);
                if (!((IAsyncResult)probe).AsyncWaitHandle.WaitOne(harness.PerInput / 2)) throw new FuzzHarness.HangException("the connection stopped answering");
                if (probe.Exception?.GetBaseException() is not RemoteCallException)
                {
                    link.Closed = true;
                    throw new InvalidOperationException($"{served[input.Handler].Name}: the connection stopped serving after the input", probe.Exception?.GetBaseException());
                }
            }, i => $"{served[i.Handler].Name}: {i}", defaultSeconds: 6);
        }
        finally
        {
            foreach (var link in links) link.Dispose();
            try { root.Delete(recursive: true); } catch (IOException) { }
        }
    }

    private static IFramedHandler Nested(Type outer, string name, params object[] arguments)
    {
        var type = outer.GetNestedType(name, BindingFlags.NonPublic) ?? throw new InvalidOperationException($"{outer.Name}.{name} is gone: update the fuzz target");
        return (IFramedHandler)Activator.CreateInstance(type, arguments)!;
    }

    private static void CheckCall(Task<byte[]> call, Input input, TimeSpan limit)
    {
        if (!((IAsyncResult)call).AsyncWaitHandle.WaitOne(limit))
        {
            if (MayWait(input)) return;
            throw new FuzzHarness.HangException($"no answer to method {input.Method} within {limit.TotalSeconds} s");
        }
        if (call.IsCompletedSuccessfully)
        {
            if (input.Method is FramedMethods.PushTask or FramedMethods.ActorCreate or FramedMethods.ActorCall
                && PushTaskReply.Parser.ParseFrom(call.Result).Error is { } error && IsBug(error.ExceptionType))
                throw new InvalidOperationException($"the task failed on the handler's bug: {error.ExceptionType}: {error.Message}\n{error.StackTrace}");
            return;
        }
        var failure = call.Exception!.GetBaseException();
        if (failure is not RemoteCallException) throw new InvalidOperationException("the call failed without an error reply", failure);
        var type = failure.Message.Split(':', 2)[0];
        if (IsBug(type)) throw new InvalidOperationException($"error reply: {failure.Message}");
    }

    private static bool IsBug(string exceptionType) => BugExceptions.Any(b => exceptionType == b || exceptionType.EndsWith("." + b, StringComparison.Ordinal));

    /// <summary>A get of an object that is not sealed yet waits for it as long as the request allows: not a hang.</summary>
    private static bool MayWait(Input input)
    {
        if (input.Method != FramedMethods.ObjectGet) return false;
        try
        {
            var request = ObjectGetRequest.Parser.ParseFrom(input.Payload);
            return request.TimeoutMs <= 0 || request.TimeoutMs > 2000;
        }
        catch (InvalidProtocolBufferException)
        {
            return false;
        }
    }

    /// <summary>A handler served over in-memory pipes, with a client connection and a way to write raw frames.</summary>
    private sealed class Link : IDisposable
    {
        private readonly FramedConnection _server;
        private readonly Pipe _toServer = new();
        private readonly Pipe _toClient = new();
        private readonly Pipe _rawToServer = new();
        // Unbounded: replies to raw requests are read only at the next raw input, and must never stall the server.
        private readonly Pipe _rawFromServer = new(new PipeOptions(pauseWriterThreshold: 0, resumeWriterThreshold: 0));
        private readonly FramedConnection _rawServer;
        private long _probeId = long.MinValue;

        public Link(IFramedHandler handler)
        {
            _server = new FramedConnection(new Duplex(_toServer.Reader, _toClient.Writer), handler);
            _server.Start();
            Client = new FramedConnection(new Duplex(_toClient.Reader, _toServer.Writer), null);
            Client.Start();
            _rawServer = new FramedConnection(new Duplex(_rawToServer.Reader, _rawFromServer.Writer), handler);
            _rawServer.Start();
        }

        public FramedConnection Client { get; }

        public bool Closed
        {
            get => field || Client.Completion.IsCompleted || _server.Completion.IsCompleted || _rawServer.Completion.IsCompleted;
            set;
        }

        /// <summary>Writes one frame as a peer would, then a request of no method, and reads until that one is answered.</summary>
        public void WriteRaw(FrameType type, long id, int method, byte[] payload, TimeSpan limit)
        {
            var probe = ++_probeId;
            FrameFormat.Write(_rawToServer.Writer, type, id, method, payload);
            FrameFormat.Write(_rawToServer.Writer, FrameType.Request, probe, 0, []);
            _rawToServer.Writer.FlushAsync().AsTask().Wait();
            using var timeout = new CancellationTokenSource(limit);
            while (true)
            {
                ReadResult read;
                try
                {
                    read = _rawFromServer.Reader.ReadAsync(timeout.Token).AsTask().GetAwaiter().GetResult();
                }
                catch (OperationCanceledException)
                {
                    throw new FuzzHarness.HangException("no answer on the raw connection");
                }
                var buffer = read.Buffer;
                var answered = false;
                while (FrameFormat.TryRead(ref buffer, out var frame)) answered |= frame.Id == probe;
                _rawFromServer.Reader.AdvanceTo(buffer.Start, buffer.End);
                if (answered) return;
                if (read.IsCompleted)
                {
                    Closed = true;
                    throw new InvalidOperationException("a well-delimited frame closed the connection");
                }
            }
        }

        public void Dispose()
        {
            Client.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(5));
            _server.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(5));
            _rawServer.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(5));
        }
    }

    private sealed class Duplex(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input => input;
        public PipeWriter Output => output;
    }
}
