using Grpc.Core;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>
/// DrainNode, as the autoscaler calls it before it terminates an idle node, on a head and two worker nodes: refused
/// while the node runs a task, accepted once it is idle, and from then on no new work goes to the drained node.
/// </summary>
public sealed class DrainNodeTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(3);
    private RpcChannelPool? _channels;

    public void Dispose()
    {
        _channels?.Dispose();
        _net.Dispose();
    }

    [Fact]
    public async Task ADrainIsRefusedWhileATaskRunsAcceptedOnceIdleAndTheDrainedNodeGetsNoNewWork()
    {
        var (head, w1, w2) = (_net[0], _net[1], _net[2]);
        var address = $"{head.Ip}:6379";
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=1")).ExitCode);
        foreach (var worker in new[] { w1, w2 })
            Assert.Equal(0, (await Cli.RunAsync(worker, "start", $"--address={address}", "--num-cpus=1", "--resources", "{\"pool\": 1}")).ExitCode);
        _channels = new RpcChannelPool(Cli.MemberOf(address));
        var gcs = new GcsClient(_channels, address);
        await ClusterAssertions.WaitForSpillbackViewsAsync(head, 3);
        var nodes = await ClusterAssertions.StatusAsync(head);
        var (headNode, drained, other) = (nodes.Single(n => n.Ip == head.Ip), nodes.Single(n => n.Ip == w1.Ip), nodes.Single(n => n.Ip == w2.Ip));
        Task<DrainNodeReply> DrainAsync() => gcs.DrainNodeAsync(drained.NodeId, DrainNodeReason.IdleTermination, "idle termination (test)");

        // Through the gate as every call: the token, and a reason it knows.
        using (var anonymous = new RpcChannelPool(new RpcSecurityOptions()))
        {
            var refusedCall = await Assert.ThrowsAsync<RpcException>(() => new GcsClient(anonymous, address).DrainNodeAsync(drained.NodeId, DrainNodeReason.IdleTermination, ""));
            Assert.Equal(StatusCode.Unauthenticated, refusedCall.StatusCode);
        }
        var unknownReason = await Assert.ThrowsAsync<RpcException>(() => gcs.DrainNodeAsync(drained.NodeId, DrainNodeReason.Unspecified, ""));
        Assert.Equal(StatusCode.InvalidArgument, unknownReason.StatusCode);
        // A node the GCS does not know (gone already) has nothing to lose.
        Assert.True((await gcs.DrainNodeAsync(RaySharp.Common.UniqueId.New(), DrainNodeReason.IdleTermination, "")).IsAccepted);

        using var driver = new SignalledDriver(head, "autoscale-drain", address, w1.Ip);
        await driver.WaitForAsync("running", TimeSpan.FromSeconds(60));

        // The node runs a task: refused, with what it holds, and it stays a node for new work.
        var refused = await DrainAsync();
        Assert.False(refused.IsAccepted);
        Assert.Contains("lease", refused.RejectionReasonMessage);
        Assert.False((await gcs.GetAllNodesAsync(aliveOnly: true)).Single(n => n.NodeId == drained.NodeId).IsDraining);

        // The task ends and its lease goes back (shortly after, once idle): the drain is accepted.
        driver.Signal("release");
        await ClusterAssertions.EventuallyAsync(async () => (await DrainAsync()).IsAccepted, TimeSpan.FromSeconds(20), "the drain of the idle node being accepted");
        Assert.True((await gcs.GetAllNodesAsync(aliveOnly: true)).Single(n => n.NodeId == drained.NodeId).IsDraining);
        var drainedRaylet = new NodeManagerService.NodeManagerServiceClient(_channels.Get(drained.Ip, drained.Port));
        Assert.True((await drainedRaylet.GetNodeStatsAsync(new GetNodeStatsRequest())).Draining);
        // The other raylets' views leave it out at once (the GCS publishes the mark).
        var headRaylet = new NodeManagerService.NodeManagerServiceClient(_channels.Get(headNode.Ip, headNode.Port));
        await ClusterAssertions.EventuallyAsync(async () => !(await headRaylet.GetNodeStatsAsync(new GetNodeStatsRequest())).RemoteNodeIds.Contains(drained.NodeId),
            TimeSpan.FromSeconds(5), "the head's raylet leaving the draining node out of its view");

        // Asked directly, the drained raylet grants nothing: it sends the request on to the node that can take it.
        var lease = new RequestWorkerLeaseRequest { LeaseRequestId = "drain-test" };
        lease.Resources.Add("pool", 1);
        var spilled = await drainedRaylet.RequestWorkerLeaseAsync(lease);
        Assert.Null(spilled.WorkerAddress);
        Assert.Equal(other.NodeId, spilled.RetryAtNodeId);

        // Tasks either worker could run, spread: all go to the one not draining.
        driver.Signal("drained");
        var run = await driver.Run;
        var lines = run.Stdout.Split('\n', StringSplitOptions.TrimEntries);
        Assert.Contains("held-on " + w1.Ip, lines);
        Assert.Contains("after-drain " + w2.Ip, lines);

        await ClusterAssertions.StopAndAssertCleanAsync(w2);
        await ClusterAssertions.StopAndAssertCleanAsync(w1);
        await ClusterAssertions.StopAndAssertCleanAsync(head);
    }
}
