using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Google.Protobuf;
using RaySharp.Rpc.Protocol;

namespace RaySharp.CoreWorker.Objects;

/// <summary>How a task is run again for its owner: the placement of the remote function that submitted it.</summary>
internal interface ILineageSource
{
    /// <summary>Re-runs to rebuild a lost result are bounded by the task's retries (-1: no limit), as in Ray.</summary>
    int MaxRetries { get; }

    /// <summary>Submits <paramref name="request"/> again through <paramref name="submitter"/>, the owner's, with the function's placement.</summary>
    Task<PushTaskReply> ResubmitAsync(Submission.TaskSubmitter submitter, PushTaskRequest request);
}

/// <summary>
/// The lineages of the stored results this process owns, hung off their envelopes (see <see cref="Lineage"/>). One per
/// process, owned by its <see cref="CoreWorkerRuntime"/>: rebuilt tasks go through its submitter, and the results
/// they make become its store's to free.
/// </summary>
internal sealed class LineageTable(LocalObjectStore store, Submission.TaskSubmitter submitter)
{
    private readonly ConditionalWeakTable<ByteString, Lineage> _lineages = new();

    internal LocalObjectStore Store => store;
    internal Submission.TaskSubmitter Submitter => submitter;

    /// <summary>Records how <paramref name="result"/> was made, when it is a stored object.</summary>
    public void Record(ByteString result, PushTaskRequest request, ILineageSource source, int rebuildsDone = 0)
    {
        if (LocalObjectStore.IsStored(result)) _lineages.AddOrUpdate(result, new Lineage(this, request, source, rebuildsDone));
    }

    /// <summary>The newest envelope of an object: the one its last rebuild made, else itself.</summary>
    public ByteString Latest(ByteString bytes)
    {
        while (LocalObjectStore.IsStored(bytes) && _lineages.TryGetValue(bytes, out var lineage) && lineage.Rebuilt is { } next) bytes = next;
        return bytes;
    }

    /// <summary>
    /// Makes a lost object again; null when it has no lineage here (made by Put, or borrowed from another owner).
    /// Concurrent readers of the same lost object share one rebuild.
    /// </summary>
    public Task<ByteString>? TryRebuildAsync(ByteString lost)
    {
        lost = Latest(lost);
        return _lineages.TryGetValue(lost, out var lineage) ? lineage.RebuildAsync() : null;
    }

    internal bool TryGet(ByteString bytes, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Lineage? lineage) => _lineages.TryGetValue(bytes, out lineage);
}

/// <summary>
/// How a stored task result was made, kept by its owner so that the result can be made again when every copy of it
/// is lost with its node: Ray's lineage reconstruction. The task is run again with the same id; an argument that was
/// itself a lost stored result is rebuilt first, recursively. Only results in the object store have lineage: small
/// results live in the owner and cannot be lost while it lives, and objects made by <c>Put</c> have no task to re-run.
/// A lineage lives exactly as long as the envelope of the result it made (it hangs off it), and keeps the task's
/// arguments alive meanwhile.
/// </summary>
internal sealed class Lineage
{
    private readonly LineageTable _table;
    private readonly PushTaskRequest _request;
    private readonly ILineageSource _source;
    private readonly int _rebuildsDone;
    private readonly Lock _gate = new();
    private ByteString? _rebuilt;
    private Task<ByteString>? _rebuilding;

    internal Lineage(LineageTable table, PushTaskRequest request, ILineageSource source, int rebuildsDone)
    {
        _table = table;
        _request = request;
        _source = source;
        _rebuildsDone = rebuildsDone;
    }

    /// <summary>The envelope the last rebuild made, once there was one.</summary>
    internal ByteString? Rebuilt => Volatile.Read(ref _rebuilt);

    internal Task<ByteString> RebuildAsync()
    {
        lock (_gate)
        {
            if (_rebuilt is { } done) return Task.FromResult(done);
            return _rebuilding ??= RebuildCoreAsync();
        }
    }

    private async Task<ByteString> RebuildCoreAsync()
    {
        try
        {
            return await RunAgainAsync().ConfigureAwait(false);
        }
        catch
        {
            lock (_gate) _rebuilding = null; // a later read may try again
            throw;
        }
    }

    private async Task<ByteString> RunAgainAsync()
    {
        var maxRetries = _source.MaxRetries;
        if (maxRetries != -1 && _rebuildsDone >= maxRetries)
        {
            throw new IOException($"task {_request.Name} ({_request.TaskId}) would have to run again to rebuild its lost result, " +
                                  $"but it was rebuilt {_rebuildsDone} time(s) already and MaxRetries is {maxRetries}");
        }
        var request = _request.Clone();
        request.Args.Clear();
        foreach (var arg in _request.Args)
        {
            var current = _table.Latest(arg);
            if (LocalObjectStore.IsStored(current) && _table.TryGet(current, out var argLineage)
                && !await IsAvailableAsync(LocalObjectStore.ParseEnvelope(current)).ConfigureAwait(false))
            {
                current = await argLineage.RebuildAsync().ConfigureAwait(false);
            }
            request.Args.Add(current);
        }
        var reply = await _source.ResubmitAsync(_table.Submitter, request).ConfigureAwait(false);
        if (reply.Error is { } error)
        {
            throw new IOException($"task {_request.Name} ({_request.TaskId}), run again to rebuild its lost result, threw {error.ExceptionType}: {error.Message}");
        }
        var rebuilt = _table.Store.TakeOwnership(reply.Result);
        _table.Record(rebuilt, request, _source, _rebuildsDone + 1);
        lock (_gate)
        {
            _rebuilt = rebuilt;
            _rebuilding = null;
        }
        return rebuilt;
    }

    /// <summary>
    /// Whether the node holding an object's primary copy still serves objects. The owner never freed it, so while
    /// that node lives the object is there (in memory or spilled).
    /// </summary>
    private static async Task<bool> IsAvailableAsync(StoredObject obj)
    {
        try
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            await socket.ConnectAsync(obj.NodeIpAddress, obj.ObjectManagerPort, timeout.Token).ConfigureAwait(false);
            return true;
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException)
        {
            return false;
        }
    }
}
