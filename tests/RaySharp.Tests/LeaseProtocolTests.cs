using Google.Protobuf;
using Grpc.Core;
using RaySharp.Common;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>
/// The raylet's lease protocol, driven over the network as the core worker will drive it: grants, spillback to the
/// node that should run a shape, queueing until resources return, infeasible shapes reported, worker exit detected.
/// </summary>
public sealed class LeaseProtocolTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(2);
    private RpcChannelPool? _channels;

    public void Dispose()
    {
        _channels?.Dispose();
        _net.Dispose();
    }

    [Fact]
    public async Task LeasesAreGrantedSpilledQueuedAndReturned()
    {
        var head = _net[0];
        var worker = _net[1];
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=2", "--resources", "{\"acc\": 1}")).ExitCode);
        Assert.Equal(0, (await Cli.RunAsync(worker, "start", $"--address={head.Ip}:6379", "--num-cpus=2", "--resources", "{\"special\": 1}",
            "--node-manager-port=23456", "--min-worker-port=30000", "--max-worker-port=30005")).ExitCode);
        var member = Cli.MemberOf($"{head.Ip}:6379");
        _channels = new RpcChannelPool(member);
        var nodes = await ClusterAssertions.StatusAsync(head);
        var headNode = nodes.Single(n => n.Ip == head.Ip);
        var workerNode = nodes.Single(n => n.Ip == worker.Ip);
        var headRaylet = Raylet(headNode);
        var workerRaylet = Raylet(workerNode);
        // The port flags are honoured: the raylet on its fixed port, workers inside their range.
        Assert.Equal(23456, workerNode.Port);
        await ClusterAssertions.EventuallyAsync(async () => (await workerRaylet.GetNodeStatsAsync(new GetNodeStatsRequest())).Workers.Count(w => w.State == "idle") == 2,
            TimeSpan.FromSeconds(20), "two idle workers on the worker node");
        Assert.All((await workerRaylet.GetNodeStatsAsync(new GetNodeStatsRequest())).Workers, w => Assert.InRange(w.Port, 30000, 30005));
        // Spillback decisions use each raylet's view of the others: wait until both see each other.
        await ClusterAssertions.WaitForSpillbackViewsAsync(head, 2);

        // 1. Lightly used node: the lease is granted locally, to a live worker of that node.
        var first = await headRaylet.RequestWorkerLeaseAsync(Lease(("CPU", 1)));
        Assert.NotNull(first.WorkerAddress);
        Assert.Equal(head.Ip, first.WorkerAddress.IpAddress);
        await using var toWorker = await FramedClient.ConnectAsync(first.WorkerAddress.IpAddress, first.WorkerAddress.Port, member);
        var ping = PingReply.Parser.ParseFrom(await toWorker.CallAsync(FramedMethods.WorkerPing, new PingRequest().ToByteArray()));
        Assert.Equal(first.WorkerAddress.WorkerId, ping.WorkerId);
        Assert.Equal(first.WorkerAddress.Pid, ping.Pid);

        // 2. Half used: the hybrid policy spreads to the idle worker node.
        var second = await headRaylet.RequestWorkerLeaseAsync(Lease(("CPU", 1)));
        Assert.Null(second.WorkerAddress);
        Assert.Equal(workerNode.NodeId, second.RetryAtNodeId);
        Assert.Equal(worker.Ip, second.RetryAtIpAddress);
        var spilled = await workerRaylet.RequestWorkerLeaseAsync(GrantOrReject(Lease(("CPU", 1))));
        Assert.Equal(worker.Ip, spilled.WorkerAddress.IpAddress);

        // 3. A resource only the worker node has: spilled there.
        var special = await headRaylet.RequestWorkerLeaseAsync(Lease(("special", 1)));
        Assert.Equal(workerNode.NodeId, special.RetryAtNodeId);

        // 4. A resource only this node has, already in use: the request waits until it is returned.
        var acc1 = await headRaylet.RequestWorkerLeaseAsync(Lease(("acc", 1)));
        Assert.NotNull(acc1.WorkerAddress);
        var acc2Call = headRaylet.RequestWorkerLeaseAsync(Lease(("acc", 1)));
        await ClusterAssertions.EventuallyAsync(async () => (await headRaylet.GetNodeStatsAsync(new GetNodeStatsRequest())).PendingLeases == 1,
            TimeSpan.FromSeconds(5), "the second acc lease queueing");
        Assert.False(acc2Call.ResponseAsync.IsCompleted);
        await headRaylet.ReturnWorkerAsync(new ReturnWorkerRequest { LeaseId = acc1.LeaseId });
        var acc2 = await acc2Call.ResponseAsync.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.NotNull(acc2.WorkerAddress);
        // The returned worker is reused rather than a new one started.
        Assert.Equal(acc1.WorkerAddress.WorkerId, acc2.WorkerAddress.WorkerId);

        // 5. A shape no node can ever satisfy: it waits, counted as infeasible, and `status` reports it.
        using var cancel = new CancellationTokenSource();
        var hopeless = headRaylet.RequestWorkerLeaseAsync(Lease(("CPU", 64)), cancellationToken: cancel.Token);
        await ClusterAssertions.EventuallyAsync(async () => (await headRaylet.GetNodeStatsAsync(new GetNodeStatsRequest())).InfeasibleLeases == 1,
            TimeSpan.FromSeconds(5), "the 64-CPU lease being reported infeasible");
        await ClusterAssertions.EventuallyAsync(async () => (await Cli.RunAsync(head, "status")).Stdout.Contains("infeasible"),
            TimeSpan.FromSeconds(10), "`raysharp status` showing the infeasible demand");
        cancel.Cancel();
        await Assert.ThrowsAsync<RpcException>(() => hopeless.ResponseAsync);
        await ClusterAssertions.EventuallyAsync(async () => (await headRaylet.GetNodeStatsAsync(new GetNodeStatsRequest())).InfeasibleLeases == 0,
            TimeSpan.FromSeconds(5), "the cancelled request leaving the queue");

        // 6. Resources follow the leases: head has CPU 1 and acc 1 leased.
        var stats = await headRaylet.GetNodeStatsAsync(new GetNodeStatsRequest());
        Assert.Equal(1, stats.ResourcesAvailable["CPU"]);
        Assert.Equal(0, stats.ResourcesAvailable["acc"]);

        // 7. A leased worker that dies gives its resources back, and the pool notices.
        Assert.True(Posix.Kill(acc2.WorkerAddress.Pid, Posix.SIGKILL));
        await ClusterAssertions.EventuallyAsync(async () => (await headRaylet.GetNodeStatsAsync(new GetNodeStatsRequest())).ResourcesAvailable["acc"] == 1,
            TimeSpan.FromSeconds(10), "the dead worker's acc coming back");
        var workers = (await headRaylet.GetNodeStatsAsync(new GetNodeStatsRequest())).Workers;
        Assert.DoesNotContain(workers, w => w.Pid == acc2.WorkerAddress.Pid);

        // 8. Unknown leases and malformed requests are refused with a reason.
        var unknown = await Assert.ThrowsAsync<RpcException>(() => headRaylet.ReturnWorkerAsync(new ReturnWorkerRequest { LeaseId = "nope" }).ResponseAsync);
        Assert.Equal(StatusCode.NotFound, unknown.StatusCode);
        var negative = await Assert.ThrowsAsync<RpcException>(() => headRaylet.RequestWorkerLeaseAsync(Lease(("CPU", -1))).ResponseAsync);
        Assert.Equal(StatusCode.InvalidArgument, negative.StatusCode);
        Assert.Contains("CPU", negative.Status.Detail);

        await ClusterAssertions.StopAndAssertCleanAsync(worker);
        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }

    private NodeManagerService.NodeManagerServiceClient Raylet(StatusNode node) => new(_channels!.Get(node.Ip, node.Port));

    private static RequestWorkerLeaseRequest GrantOrReject(RequestWorkerLeaseRequest request)
    {
        request.GrantOrReject = true;
        return request;
    }

    private static RequestWorkerLeaseRequest Lease(params (string Name, double Quantity)[] shape)
    {
        var request = new RequestWorkerLeaseRequest { LeaseRequestId = UniqueId.New() };
        foreach (var (name, quantity) in shape) request.Resources[name] = quantity;
        return request;
    }
}
