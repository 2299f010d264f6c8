namespace RaySharp.Rpc.Transport;

// What the two ends of a FramedConnection plug into it: handlers of requests, sinks of replies, memory released once
// written, and the failure of a remote call.

/// <summary>Serves requests arriving on a framed connection.</summary>
internal interface IFramedHandler
{
    /// <summary>
    /// Handles one request. Called in arrival order on the connection's read loop: the work done before the first await
    /// runs in order (how per-caller ordering of actor calls is kept); what follows may overlap.
    /// </summary>
    ValueTask<ReadOnlyMemory<byte>> HandleAsync(int method, byte[] payload, CancellationToken cancellationToken);

    /// <summary>A one-way message from the peer. Called on the read loop: keep it short. If it throws, the message is dropped.</summary>
    void OnNotify(int method, byte[] payload) { }

    /// <summary>
    /// Takes a request without an async frame per request: true when the handler will answer it, once and from any
    /// thread, through <paramref name="request"/>; false to have <see cref="HandleAsync"/> serve it. Called on the read
    /// loop in arrival order, like the synchronous part of <see cref="HandleAsync"/>. For the hottest requests (tasks
    /// and actor calls), where the awaits between the work and its reply cost more than the work.
    /// </summary>
    bool TryHandle(int method, byte[] payload, FramedRequest request) => false;

    /// <summary>
    /// Whether the rules of the framed methods (<see cref="FramedRequests"/>: payload limits, parse, validation) are
    /// applied before this handler is called. True for every handler of the cluster; false only for handlers serving
    /// methods of their own (transport tests and benchmarks), which then get any payload up to the frame limit.
    /// </summary>
    bool CheckedAtDispatch => true;
}

/// <summary>A request taken by <see cref="IFramedHandler.TryHandle"/>: answer it exactly once.</summary>
internal readonly struct FramedRequest
{
    private readonly FramedConnection _connection;
    private readonly long _id;
    private readonly int _method;

    internal FramedRequest(FramedConnection connection, long id, int method)
    {
        _connection = connection;
        _id = id;
        _method = method;
    }

    /// <summary>The connection the request came on (the caller, for output and borrowed references).</summary>
    public FramedConnection Connection => _connection;

    public void Reply(ReadOnlyMemory<byte> payload) => _connection.Answer(FrameType.Response, _id, _method, payload);

    /// <summary>Answers with an error: the caller's call fails with a <see cref="RemoteCallException"/> of this message.</summary>
    public void Fail(Exception error) => _connection.Answer(FrameType.Error, _id, _method, FramedConnection.ErrorPayload(error));
}

/// <summary>
/// Where a call's reply goes, when the caller takes it straight from the read loop rather than through a task: called
/// once, on the connection's read loop (keep it short, never block), or on whichever thread closes the connection.
/// </summary>
internal interface IReplySink
{
    void OnReply(byte[] payload);

    /// <summary>No reply will come: the connection closed (<see cref="IOException"/>), the peer's handler failed
    /// (<see cref="RemoteCallException"/>) or the call was cancelled (<see cref="OperationCanceledException"/>).</summary>
    void OnFailure(Exception error);
}

/// <summary>
/// Implemented by the <see cref="System.Buffers.MemoryManager{T}"/> behind a reply payload that borrows memory (an object
/// chunk served straight from shared memory): told once the bytes are in the connection's output, or will never be.
/// </summary>
internal interface IReleasedAfterWrite
{
    void Released();
}

/// <summary>The call failed on the remote side; the message is the remote error.</summary>
internal sealed class RemoteCallException(string message) : Exception(message);
