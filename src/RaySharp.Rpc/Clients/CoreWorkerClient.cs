using Google.Protobuf;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

namespace RaySharp.Rpc.Clients;

/// <summary>
/// The GCS's connection to a worker that hosts actors (Ray's <c>CoreWorkerClient</c>): creates and drops actors on it,
/// and hands what the worker prints while doing so to <c>onOutput</c>. The GCS knows workers only through this class:
/// which framed methods a worker serves, and how their payloads look, stay here and in the core worker.
/// </summary>
internal sealed class CoreWorkerClient : IAsyncDisposable
{
    private readonly FramedConnection _connection;

    private CoreWorkerClient(FramedConnection connection) => _connection = connection;

    public static async Task<CoreWorkerClient> ConnectAsync(WorkerAddress address, Action<TaskOutput> onOutput, CancellationToken cancellationToken) =>
        new(await FramedClient.ConnectAsync(address.IpAddress, address.Port, handler: new OutputHandler(onOutput), cancellationToken: cancellationToken).ConfigureAwait(false));

    /// <summary>Completes when the connection ends: the worker died, was stopped, or the connection was closed here.</summary>
    public Task Completion => _connection.Completion;

    /// <summary>Runs an actor's factory on the worker; null on success, else the exception it threw.</summary>
    public async Task<TaskError?> CreateActorAsync(PushTaskRequest creation)
    {
        var bytes = await _connection.CallAsync(FramedMethods.ActorCreate, creation.ToByteArray()).ConfigureAwait(false);
        var reply = PushTaskReply.Parser.ParseFrom(bytes);
        return reply.OutcomeCase == PushTaskReply.OutcomeOneofCase.Error ? reply.Error : null;
    }

    /// <summary>Has a host of lightweight actors drop one (killed, or its incarnation is over).</summary>
    public Task KillActorAsync(string actorId) =>
        _connection.CallAsync(FramedMethods.ActorKill, new ActorKillRequest { ActorId = actorId }.ToByteArray());

    public ValueTask DisposeAsync() => _connection.DisposeAsync();

    /// <summary>A worker's console output while it builds an actor reaches its caller, here the GCS.</summary>
    private sealed class OutputHandler(Action<TaskOutput> onOutput) : IFramedHandler
    {
        public ValueTask<ReadOnlyMemory<byte>> HandleAsync(int method, byte[] payload, CancellationToken cancellationToken) =>
            throw new NotSupportedException($"the GCS serves no method {method} on actor connections");

        public void OnNotify(int method, byte[] payload)
        {
            if (method == FramedMethods.TaskOutput) onOutput(TaskOutput.Parser.ParseFrom(payload));
        }
    }
}
