using System.Text;
using Google.Protobuf;
using Microsoft.Extensions.Logging.Abstractions;
using RaySharp.CoreWorker.Objects;
using RaySharp.CoreWorker.Submission;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Tests;

/// <summary>
/// What a core worker process holds belongs to its runtime object, not to statics: two runtimes' parts in one process
/// see nothing of each other (the directory a receiver fetches refs from, the lineage a lost result is rebuilt from,
/// the store connection a shutdown closes).
/// </summary>
public sealed class CoreWorkerRuntimeTests
{
    private static byte[] Id(string id) => Encoding.UTF8.GetBytes(id);

    [Fact]
    public async Task TwoObjectDirectoriesInOneProcessServeOnlyWhatWasRegisteredWithThem()
    {
        var first = new ObjectDirectory();
        var second = new ObjectDirectory();
        first.Register("obj-1", Task.FromResult(ByteString.CopyFromUtf8("value of one")));

        Assert.Equal("value of one", Encoding.UTF8.GetString((await first.ServeAsync(Id("obj-1"))).Span));
        var missing = await Assert.ThrowsAsync<KeyNotFoundException>(async () => await second.ServeAsync(Id("obj-1")));
        Assert.Contains("obj-1", missing.Message, StringComparison.Ordinal);
        // Outside a task there is nobody to borrow from: the second runtime cannot reach the first one's object.
        await Assert.ThrowsAsync<InvalidOperationException>(() => second.Fetch("obj-1"));
        Assert.Equal("value of one", (await first.Fetch("obj-1")).ToStringUtf8());
    }

    [Fact]
    public async Task ALostResultIsRebuiltOnlyByTheRuntimeThatOwnsItsLineageThroughThatRuntimesSubmitter()
    {
        using var channels = new RpcChannelPool(connectTimeout: TimeSpan.FromSeconds(1));
        var (storeA, tasksA) = Parts(channels, "worker-a");
        var (storeB, tasksB) = Parts(channels, "worker-b");
        var lineageA = new LineageTable(storeA, tasksA);
        var lineageB = new LineageTable(storeB, tasksB);

        var lost = Envelope(new StoredObject { ObjectId = "result-1", Size = 1 << 20, NodeId = "n1", NodeIpAddress = "10.0.0.9", ObjectManagerPort = 1 });
        var source = new RecordingSource(ByteString.CopyFromUtf8("rebuilt"));
        lineageA.Record(lost, new PushTaskRequest { TaskId = "task-1", Name = "make" }, source);

        Assert.Null(lineageB.TryRebuildAsync(lost));
        var rebuilding = lineageA.TryRebuildAsync(lost);
        Assert.NotNull(rebuilding);
        Assert.Equal("rebuilt", (await rebuilding).ToStringUtf8());
        Assert.Same(tasksA, Assert.Single(source.Submitters));
        Assert.Equal("task-1", Assert.Single(source.Requests).TaskId);

        await tasksA.DisposeAsync();
        await tasksB.DisposeAsync();
    }

    [Fact]
    public void ClosingOneRuntimesStoreLeavesTheOtherConnected()
    {
        using var channels = new RpcChannelPool(connectTimeout: TimeSpan.FromSeconds(1));
        var (storeA, _) = Parts(channels, "worker-a");
        var (storeB, _) = Parts(channels, "worker-b");

        storeA.Close();

        Assert.False(storeA.IsConfigured);
        Assert.True(storeB.IsConfigured);
    }

    private static (LocalObjectStore Store, TaskSubmitter Tasks) Parts(RpcChannelPool channels, string workerId)
    {
        var raylet = Task.FromResult("127.0.0.1:1");
        var store = new LocalObjectStore(() => raylet, workerId);
        var tasks = new TaskSubmitter(channels, () => raylet, NullLogger<TaskSubmitter>.Instance, new ObjectDirectory(), new NestedOutputRouter());
        return (store, tasks);
    }

    private static ByteString Envelope(StoredObject obj)
    {
        var bytes = new byte[1 + obj.CalculateSize()];
        bytes[0] = LocalObjectStore.EnvelopeMarker;
        obj.WriteTo(bytes.AsSpan(1));
        return UnsafeByteOperations.UnsafeWrap(bytes);
    }

    private sealed class RecordingSource(ByteString result) : ILineageSource
    {
        public List<TaskSubmitter> Submitters { get; } = [];
        public List<PushTaskRequest> Requests { get; } = [];

        public int MaxRetries => 3;

        public Task<PushTaskReply> ResubmitAsync(TaskSubmitter submitter, PushTaskRequest request)
        {
            Submitters.Add(submitter);
            Requests.Add(request);
            return Task.FromResult(new PushTaskReply { Result = result });
        }
    }
}
