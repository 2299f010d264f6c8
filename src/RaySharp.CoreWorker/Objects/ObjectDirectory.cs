using System.Collections.Concurrent;
using System.Text;
using Google.Protobuf;
using RaySharp.Rpc.Transport;

namespace RaySharp.CoreWorker.Objects;

/// <summary>
/// The objects this process has handed out by reference inside values (a list of refs passed to a task, say), so that
/// the processes that received them can fetch their values from here. Refs passed at top level never need it: their
/// values travel with the task. One per process, owned by its <see cref="CoreWorkerRuntime"/>.
/// </summary>
internal sealed class ObjectDirectory
{
    private readonly ConcurrentDictionary<string, Task<ByteString>> _objects = new(StringComparer.Ordinal);

    public void Register(string id, Task<ByteString> value) => _objects.TryAdd(id, value);


    /// <summary>The value of a reference received inside a value: from this process if it has it, else from the sender.</summary>
    public Task<ByteString> Fetch(string id)
    {
        if (_objects.TryGetValue(id, out var local)) return local;
        // Where a reference being deserialized came from: the connection of the task that carries it.
        var source = Execution.RunningTask.Current?.ArgumentSource;
        if (source is null)
        {
            return Task.FromException<ByteString>(new InvalidOperationException(
                $"object {id} arrived inside a value from a process this one cannot ask (only references passed into tasks can be borrowed so far)"));
        }
        var fetched = FetchAsync(source, id);
        // A borrower passing the ref on serves it from here too.
        _objects.TryAdd(id, fetched);
        return fetched;
    }

    private static async Task<ByteString> FetchAsync(FramedConnection source, string id)
    {
        try
        {
            return ByteString.CopyFrom(await source.CallAsync(FramedMethods.GetObject, Encoding.UTF8.GetBytes(id)).ConfigureAwait(false));
        }
        catch (Exception e) when (e is IOException or RemoteCallException or ObjectDisposedException)
        {
            // The connection to the process that passed the reference broke: that process, the owner (or the borrower
            // it came through), is gone, and with it the only record of the value.
            await Task.WhenAny(source.Completion, Task.Delay(200)).ConfigureAwait(false);
            if (!source.Completion.IsCompleted) throw;
            throw new OwnerDiedCoreException(
                $"object {id} cannot be read: the process that owns it (the one that passed this reference) died before its value was known; " +
                "an object lives only as long as its owner, so return values rather than references from work that may fail", e);
        }
    }

    /// <summary>Serves <see cref="FramedMethods.GetObject"/>.</summary>
    public async ValueTask<ReadOnlyMemory<byte>> ServeAsync(byte[] payload)
    {
        var id = Encoding.UTF8.GetString(payload);
        if (!_objects.TryGetValue(id, out var value)) throw new KeyNotFoundException($"object {id} is not known here");
        return (await value.ConfigureAwait(false)).Memory;
    }
}

/// <summary>A borrowed object's owner died before its value could be fetched.</summary>
internal sealed class OwnerDiedCoreException(string message, Exception inner) : Exception(message, inner);
