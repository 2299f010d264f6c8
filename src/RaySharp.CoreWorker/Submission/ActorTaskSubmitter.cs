// Over 400 lines on purpose: every path that takes the submitter's one lock (resolving an actor, ordering and sending
// calls, retries on restart, node deaths, shutdown) is in this file, so the call-ordering invariants can be checked in
// one read.
using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

namespace RaySharp.CoreWorker.Submission;

/// <summary>
/// The caller's side of actor calls: per actor, one ordered stream of calls over a framed connection to the actor's
/// worker (shared by every actor that worker hosts). The actor's address comes from the GCS; calls made before it is
/// known, or while the actor restarts, wait and go out in the order they were made. A call whose connection breaks
/// is retried on the restarted actor within MaxTaskRetries, else fails with the reason the GCS gives.
/// </summary>
internal sealed partial class ActorTaskSubmitter : IAsyncDisposable
{
    private readonly GcsClient _gcs;
    private readonly IFramedHandler _callerHandler;
    private readonly NestedOutputRouter _nestedOutput;
    private readonly Objects.LocalObjectStore _store;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, ActorState> _actors = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Task<FramedConnection>> _connections = new(StringComparer.Ordinal);
    // The node of each connection's worker (by connection key), so a node the GCS declares dead is let go at once.
    private readonly Dictionary<string, string> _connectionNodes = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _disposed = new();

    /// <param name="callerHandler">Serves what actors ask of their caller over the same connection: console output, nested refs.</param>
    /// <param name="nestedOutput">Where output of calls made from inside a task or actor goes: on to its own caller.</param>
    /// <param name="store">Results left in the actor's node store become this process's to free, through its store.</param>
    public ActorTaskSubmitter(GcsClient gcs, IFramedHandler callerHandler, NestedOutputRouter nestedOutput, Objects.LocalObjectStore store, ILogger logger)
    {
        _store = store;
        _nestedOutput = nestedOutput;
        _gcs = gcs;
        _callerHandler = callerHandler;
        _logger = logger;
    }

    public GcsClient Gcs => _gcs;

    private sealed class ActorState(string actorId)
    {
        public string ActorId { get; } = actorId;
        public FramedConnection? Connection { get; set; }
        /// <summary>The incarnation to wait for: the restart count the next connection must come from (or later).</summary>
        public int MinRestarts { get; set; }
        public bool Resolving { get; set; }
        public Task? Registration { get; set; }
        public Queue<PendingCall> Waiting { get; } = new();
        public List<PendingCall> Retrying { get; } = [];
        public List<PendingCall> Interrupted { get; } = [];
        public ActorDiedCoreException? Dead { get; set; }
        public int InFlight { get; set; }
        public long NextSequence { get; set; }
        /// <summary>Calls assigned a connection, in order, not yet handed to it: written outside the lock by one drainer at a time.</summary>
        public Queue<PendingCall> Outbox { get; } = new();
        public bool Draining { get; set; }
        /// <summary>No call of this process is queued, in flight or being resolved.</summary>
        public bool Idle => InFlight == 0 && Waiting.Count == 0 && Retrying.Count == 0 && Interrupted.Count == 0 && !Resolving && !Draining && Outbox.Count == 0;
    }

    /// <summary>A call until its outcome is known; its reply comes straight from the connection's read loop.</summary>
    private sealed class PendingCall(ActorTaskSubmitter submitter, ActorState state, PushTaskRequest request, ICallOutcome outcome, int retriesLeft, long sequence)
        : IReplySink
    {
        public PushTaskRequest Request { get; } = request;
        public ICallOutcome Outcome { get; } = outcome;
        // The call's result as its ObjectRef holds it. Completed on a connection's read loop; its awaiters are internal
        // (ObjectRef hands user code to the thread pool).
        public TaskCompletionSource<ByteString> Result { get; } = new();
        public int RetriesLeft { get; set; } = retriesLeft;
        public long Sequence { get; } = sequence;
        public object? KeepAlive { get; init; }
        /// <summary>The connection the call was last sent on (set under the submitter's lock before each send).</summary>
        public FramedConnection? SentOn { get; set; }

        public void OnReply(byte[] payload)
        {
            PushTaskReply reply;
            try
            {
                reply = MessageBytes.Parse(PushTaskReply.Parser, payload);
            }
            catch (InvalidProtocolBufferException e)
            {
                submitter.Finish(state, this, null, new IOException($"the reply to {Request.Name} was malformed: {e.Message}", e));
                return;
            }
            // The worker says it no longer holds the actor: that incarnation is gone for sure.
            if (reply.OutcomeCase == PushTaskReply.OutcomeOneofCase.ActorMissing) submitter.OnInterrupted(state, SentOn!, this, incarnationGone: true);
            else submitter.Finish(state, this, reply, null);
        }

        // The connection broke: the actor's process may have died, or the network between may have failed and heal.
        public void OnFailure(Exception error) => submitter.OnInterrupted(state, SentOn!, this, incarnationGone: false);
    }

    /// <summary>Calls to an actor this process is creating wait for its registration with the GCS first.</summary>
    public void TrackRegistration(string actorId, Task registration)
    {
        lock (_gate) State(actorId).Registration = registration;
    }

    private ActorState State(string actorId)
    {
        if (!_actors.TryGetValue(actorId, out var state)) _actors[actorId] = state = new ActorState(actorId);
        return state;
    }

    /// <param name="maxTaskRetries">Re-sends after the actor restarts under a call; -1: no limit; 0: the call fails instead.</param>
    /// <param name="maxPendingCalls">Most calls from this process in flight to the actor; -1: no limit.</param>
    /// <param name="outcome">Turns the reply into the result (or the exception) the returned task holds.</param>
    /// <param name="keepAlive">Held while the call is pending (the handle's lifetime token: a call in flight keeps its actor).</param>
    public Task<ByteString> SubmitAsync(string actorId, PushTaskRequest request, int maxTaskRetries, int maxPendingCalls, ICallOutcome outcome, object? keepAlive = null)
    {
        PendingCall call;
        PendingCall? drain = null;
        var resolve = false;
        ActorState state;
        lock (_gate)
        {
            state = State(actorId);
            if (_disposed.IsCancellationRequested) return Task.FromException<ByteString>(outcome.Failure(new ShutdownCoreException(request.Name)));
            if (state.Dead is { } dead) return Task.FromException<ByteString>(outcome.Failure(dead));
            if (maxPendingCalls >= 0 && state.InFlight >= maxPendingCalls)
                throw new PendingCallsLimitCoreException(
                    $"actor {actorId} already has {state.InFlight} calls pending from this caller, its MaxPendingCalls; wait for some results before calling again, or raise MaxPendingCalls");
            state.InFlight++;
            call = new PendingCall(this, state, request, outcome, maxTaskRetries, state.NextSequence++) { KeepAlive = keepAlive };
            if (state.Connection is { } connection && state.Waiting.Count == 0 && !state.Resolving) drain = Post(state, connection, call);
            else
            {
                state.Waiting.Enqueue(call);
                if (!state.Resolving) resolve = state.Resolving = true;
            }
        }
        if (drain is not null) Drain(state, drain);
        if (resolve) _ = ResolveAsync(state);
        _nestedOutput.Track(request.TaskId, call.Result.Task);
        return call.Result.Task;
    }

    /// <summary>
    /// Under the lock: assigns the call its connection and its place in the actor's order. The write itself happens in
    /// <see cref="Drain"/>, outside the lock: a send can block (a peer that stopped reading), and under the lock it
    /// would hold up every actor call and reply of this process. True when the caller must drain.
    /// </summary>
    private static PendingCall? Post(ActorState state, FramedConnection connection, PendingCall call)
    {
        call.SentOn = connection;
        if (state.Draining)
        {
            state.Outbox.Enqueue(call);
            return null;
        }
        state.Draining = true;
        return call;
    }

    /// <summary>Writes <paramref name="first"/>, then the calls posted meanwhile, in order: one drainer per actor at a time.</summary>
    private void Drain(ActorState state, PendingCall first)
    {
        var call = first;
        while (true)
        {
            // Failed at once (the connection just closed): the call is interrupted like one whose connection broke.
            if (!call.SentOn!.Call(FramedMethods.ActorCall, MessageBytes.ToBytes(call.Request), call))
                call.OnFailure(new IOException("the connection is closed"));
            lock (_gate)
            {
                if (!state.Outbox.TryDequeue(out call!))
                {
                    state.Draining = false;
                    return;
                }
            }
        }
    }


    private void Finish(ActorState state, PendingCall call, PushTaskReply? reply, Exception? error)
    {
        lock (_gate) state.InFlight--;
        if (error is not null)
        {
            call.Result.TrySetException(call.Outcome.Failure(error));
            return;
        }
        ByteString result;
        try
        {
            result = _store.TakeOwnership(call.Outcome.Result(reply!));
        }
        catch (Exception e)
        {
            call.Result.TrySetException(e);
            return;
        }
        call.Result.TrySetResult(result);
    }

    /// <summary>
    /// The call's connection broke or the worker no longer holds the actor: ask the GCS what became of it. Only in the
    /// second case is the next incarnation waited for; a broken connection may be a partition that heals with the
    /// actor as it was (and a restart that never comes would be waited for forever).
    /// </summary>
    private void OnInterrupted(ActorState state, FramedConnection connection, PendingCall call, bool incarnationGone)
    {
        if (_disposed.IsCancellationRequested)
        {
            Finish(state, call, null, new ShutdownCoreException(call.Request.Name));
            return;
        }
        var resolve = false;
        lock (_gate)
        {
            if (state.Connection == connection)
            {
                state.Connection = null;
                if (incarnationGone) state.MinRestarts++;
            }
            if (call.RetriesLeft != 0)
            {
                if (call.RetriesLeft > 0) call.RetriesLeft--;
                state.Retrying.Add(call);
            }
            else
            {
                state.Interrupted.Add(call);
            }
            if (!state.Resolving) resolve = state.Resolving = true;
        }
        if (connection.Completion.IsCompleted) ForgetConnection(connection);
        if (resolve) _ = ResolveAsync(state);
    }

    private async Task ResolveAsync(ActorState state)
    {
        var failures = 0;
        // After a failed connect: the incarnation after the one that could not be reached, waited for briefly, then
        // that one tried again (it may be behind a partition that heals, or dead and about to be replaced).
        int? probeNewer = null;
        try
        {
            if (state.Registration is { } registration)
            {
                try
                {
                    await registration.ConfigureAwait(false);
                }
                catch (Exception e)
                {
                    Bury(state, new ActorDiedCoreException(state.ActorId, $"it could not be registered with the GCS: {e.GetBaseException().Message}", null));
                    return;
                }
            }
            while (!_disposed.IsCancellationRequested)
            {
                GetActorInfoReply reply;
                try
                {
                    reply = await _gcs.Actors.GetActorInfoAsync(new GetActorInfoRequest
                    {
                        ActorId = state.ActorId,
                        Wait = true,
                        MinNumRestarts = probeNewer ?? state.MinRestarts,
                        WaitTimeoutMs = probeNewer is null ? 30_000 : 2_000,
                    }, cancellationToken: _disposed.Token).ConfigureAwait(false);
                }
                catch (RpcException e) when (e.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded)
                {
                    // The GCS is away (restarting): its clients wait for it as long as they are configured to.
                    await Task.Delay(500, _disposed.Token).ConfigureAwait(false);
                    continue;
                }
                catch (Exception e) when (e is not OperationCanceledException && ++failures < MaxResolveFailures)
                {
                    // Anything else may be passing too (a reset stream, an overloaded GCS): a few more tries, backing off.
                    LogResolveRetry(_logger, state.ActorId, failures, e.Message);
                    await Task.Delay(TimeSpan.FromMilliseconds(250 << Math.Min(failures, 4)), _disposed.Token).ConfigureAwait(false);
                    continue;
                }
                if (!reply.Found)
                {
                    Bury(state, new ActorDiedCoreException(state.ActorId, "the GCS does not know it (it was never created, or the cluster was restarted without Redis)", null));
                    return;
                }
                var info = reply.Info;
                if (info.State == Rpc.Protocol.ActorState.ActorDead)
                {
                    Bury(state, new ActorDiedCoreException(state.ActorId, info.DeathCause, info.CreationError));
                    return;
                }
                if (info.State != Rpc.Protocol.ActorState.ActorAlive || info.NumRestarts < state.MinRestarts) continue;
                FramedConnection connection;
                try
                {
                    connection = await ConnectAsync(info.Address).ConfigureAwait(false);
                }
                catch (Exception e) when (e is System.Net.Sockets.SocketException or IOException or RemoteCallException)
                {
                    // Not proof that this incarnation is gone: a network partition fails connects too (no route to
                    // the host) and may heal with the actor as it was. Wait up to 2 s for a newer incarnation (the
                    // GCS answers at once if there is one, or the actor is dead), else try this one again: waiting
                    // only for a restart would wait forever for one that never comes once the partition heals.
                    LogConnectRetry(_logger, state.ActorId, Common.NodeAddress.Format(info.Address.IpAddress, info.Address.Port), e.Message);
                    probeNewer = info.NumRestarts + 1;
                    continue;
                }
                List<PendingCall> interrupted;
                PendingCall? drain = null;
                lock (_gate)
                {
                    state.Connection = connection;
                    state.MinRestarts = info.NumRestarts;
                    interrupted = [.. state.Interrupted];
                    state.Interrupted.Clear();
                    state.Resolving = false;
                    var retrying = state.Retrying.OrderBy(c => c.Sequence).ToList();
                    state.Retrying.Clear();
                    // Post for each (the first one posted while nobody drains is this thread's to write).
                    foreach (var call in retrying.Concat(state.Waiting)) drain = Post(state, connection, call) ?? drain;
                    state.Waiting.Clear();
                }
                if (drain is not null) Drain(state, drain);
                foreach (var call in interrupted)
                {
                    Finish(state, call, null, new ActorUnavailableCoreException(
                        $"actor {state.ActorId} may or may not have run {call.Request.Name}: the connection to it broke while the call ran " +
                        $"(its worker died, or the network failed; the actor is at restart {info.NumRestarts} now); " +
                        "the call was not retried because MaxTaskRetries is 0 (set it to retry calls at least once)"));
                }
                return;
            }
        }
        catch (OperationCanceledException) when (_disposed.IsCancellationRequested) { /* disposing: DisposeAsync fails the calls */ }
        catch (Exception e)
        {
            // Never leave the actor Resolving with its calls queued behind a loop that is gone.
            Bury(state, new ActorDiedCoreException(state.ActorId, $"its address could not be had from the GCS: {e.GetBaseException().Message}", null));
        }
    }

    /// <summary>Failures other than the GCS being away that a resolution survives before it gives up on the actor.</summary>
    private const int MaxResolveFailures = 8;

    /// <summary>The actor is dead for good: every call waiting on it, and every later one, fails with why.</summary>
    private void Bury(ActorState state, ActorDiedCoreException dead)
    {
        List<PendingCall> calls;
        lock (_gate)
        {
            state.Dead = dead;
            calls = TakeUnsent(state);
        }
        foreach (var call in calls) Finish(state, call, null, dead);
    }

    /// <summary>Under the lock: every call of the actor not on a connection (waiting, to retry, interrupted), taken out.</summary>
    private static List<PendingCall> TakeUnsent(ActorState state)
    {
        List<PendingCall> calls = [.. state.Interrupted, .. state.Retrying, .. state.Waiting];
        state.Interrupted.Clear();
        state.Retrying.Clear();
        state.Waiting.Clear();
        state.Resolving = false;
        return calls;
    }

    private Task<FramedConnection> ConnectAsync(WorkerAddress address)
    {
        var key = Common.NodeAddress.Format(address.IpAddress, address.Port);
        lock (_gate)
        {
            if (_connections.TryGetValue(key, out var known) && !(known.IsCompletedSuccessfully && known.Result.Completion.IsCompleted) && !known.IsFaulted)
                return known;
            var connecting = FramedClient.ConnectAsync(address.IpAddress, address.Port, handler: _callerHandler, cancellationToken: _disposed.Token);
            _connections[key] = connecting;
            _connectionNodes[key] = address.NodeId;
            return connecting;
        }
    }

    private void ForgetConnection(FramedConnection connection)
    {
        lock (_gate)
        {
            foreach (var (key, task) in _connections.ToList())
            {
                if (task.IsCompletedSuccessfully && task.Result == connection)
                {
                    _connections.Remove(key);
                    _connectionNodes.Remove(key);
                }
            }
        }
    }

    /// <summary>
    /// The GCS declared a node dead: close the connections to actors there now. A node cut off by a partition still
    /// runs its actors until it can reach the GCS again and learns it is dead, and TCP may take a while to give up on
    /// it; meanwhile the GCS restarts those actors elsewhere, so calls sent to the old incarnation would go to one the
    /// cluster no longer counts. Closing makes the calls in flight retry (within MaxTaskRetries) and later ones wait
    /// for the new address, as when the actor's worker dies.
    /// </summary>
    public void OnNodeDead(string nodeId)
    {
        List<Task<FramedConnection>> doomed;
        lock (_gate)
        {
            doomed = _connectionNodes.Where(kv => kv.Value == nodeId).Select(kv => _connections.GetValueOrDefault(kv.Key)).OfType<Task<FramedConnection>>().ToList();
        }
        foreach (var connection in doomed.Where(c => c.IsCompletedSuccessfully)) _ = connection.Result.DisposeAsync().AsTask();
    }

    /// <summary>Tells the GCS to kill the actor; calls in flight then fail with the actor's death.</summary>
    public async Task KillAsync(string actorId, bool noRestart)
    {
        var reply = await _gcs.Actors.KillActorAsync(new KillActorRequest { ActorId = actorId, NoRestart = noRestart, Reason = "killed by Ray.Kill" }).ConfigureAwait(false);
        if (!reply.Found) throw new InvalidOperationException($"the GCS knows no actor {actorId}");
        ActorState state;
        lock (_gate)
        {
            state = State(actorId);
            if (!noRestart)
            {
                // Calls made from now on wait for the next incarnation instead of racing the dying one.
                if (state.Connection is not null)
                {
                    state.Connection = null;
                    state.MinRestarts++;
                }
                return;
            }
        }
        // Calls made after Kill returns fail at once; those in flight fail as their connection breaks.
        Bury(state, new ActorDiedCoreException(actorId, "killed by Ray.Kill", null));
    }

    /// <summary>Every handle to an actor this process created is gone: have the GCS end it (from a finalizer, so off-thread).</summary>
    public void ReleaseUnreferenced(string actorId)
    {
        if (_disposed.IsCancellationRequested) return;
        // A task, not an async lambda on the pool (which would be async void: a fault there ends the process).
        _ = Task.Run(() => KillUnreferencedAsync(actorId));
    }

    private async Task KillUnreferencedAsync(string actorId)
    {
        try
        {
            await _gcs.Actors.KillActorAsync(new KillActorRequest { ActorId = actorId, NoRestart = true, Reason = "every handle to it went out of scope" },
                cancellationToken: _disposed.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException) { /* this process is going away */ }
        catch (Exception e)
        {
            LogReleaseFailed(_logger, actorId, e.Message);
        }
        lock (_gate)
        {
            // Nothing of this process can call it any more: its state goes (unless calls are still winding down).
            if (_actors.TryGetValue(actorId, out var state) && state.Idle) _actors.Remove(actorId);
        }
    }

    /// <summary>Closes every connection; every call not answered yet fails with <see cref="ShutdownCoreException"/> (none is left hanging).</summary>
    public async ValueTask DisposeAsync()
    {
        List<Task<FramedConnection>> connections;
        List<(ActorState, PendingCall)> unsent;
        // Cancelled before the lock, so that no cancellation callback runs under it: what takes the lock afterwards
        // sees the cancellation, what took it before is in the lists below.
        _disposed.Cancel();
        lock (_gate)
        {
            connections = [.. _connections.Values];
            unsent = [.. _actors.Values.SelectMany(state => TakeUnsent(state).Select(call => (state, call)))];
        }
        foreach (var (state, call) in unsent) Finish(state, call, null, new ShutdownCoreException(call.Request.Name));
        // Calls in flight fail as their connections close (OnInterrupted sees the cancellation).
        foreach (var c in connections.Where(c => c.IsCompletedSuccessfully)) await c.Result.DisposeAsync().ConfigureAwait(false);
    }

    [LoggerMessage(EventId = 710, Level = LogLevel.Warning, Message = "Could not learn where actor {ActorId} is (failure {Failures}): {Error}; retrying")]
    private static partial void LogResolveRetry(ILogger logger, string actorId, int failures, string error);

    [LoggerMessage(EventId = 712, Level = LogLevel.Warning, Message = "Could not connect to actor {ActorId} at {Address}: {Error}; asking the GCS again")]
    private static partial void LogConnectRetry(ILogger logger, string actorId, string address, string error);

    [LoggerMessage(EventId = 711, Level = LogLevel.Warning, Message = "Could not have the GCS end actor {ActorId}, whose handles are all gone: {Error}")]
    private static partial void LogReleaseFailed(ILogger logger, string actorId, string error);
}
