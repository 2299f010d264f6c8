using RaySharp.Gcs.PlacementGroups;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Tests;

using PlacementGroupState = RaySharp.Rpc.Protocol.PlacementGroupState;
using PlacementStrategy = RaySharp.Rpc.Protocol.PlacementStrategy;

/// <summary>
/// The placement-group bundle policy: each of Ray's four strategies against node views, what waits (free later) and what
/// is infeasible (no node could ever), and rescheduling that keeps the bundles of live nodes.
/// </summary>
public sealed class PlacementGroupPolicyTests
{
    private static Dictionary<string, double> R(double cpu, double gpu = 0)
    {
        var r = new Dictionary<string, double>(StringComparer.Ordinal) { ["CPU"] = cpu };
        if (gpu > 0) r["GPU"] = gpu;
        return r;
    }

    private static CandidateNode Node(string id, Dictionary<string, double> total, Dictionary<string, double>? available = null) =>
        new(id, total, available ?? total);

    private static IReadOnlyList<IReadOnlyDictionary<string, double>> Bundles(params Dictionary<string, double>[] bundles) => bundles;

    private static readonly CandidateNode[] s_threeNodes = [Node("a", R(4)), Node("b", R(4)), Node("c", R(4))];

    [Fact]
    public void StrictSpreadPutsEachBundleOnANodeOfItsOwn()
    {
        var placement = BundlePlacementPolicy.Place(PlacementStrategy.StrictSpread, Bundles(R(1), R(1), R(1)), s_threeNodes);
        Assert.Equal(PlacementOutcome.Placed, placement.Outcome);
        Assert.Equal(3, placement.Nodes.Count);
        Assert.Equal(["a", "b", "c"], placement.Nodes.Values.Order(StringComparer.Ordinal));
    }

    [Fact]
    public void FourStrictSpreadBundlesOnThreeNodesAreInfeasibleAndSaySo()
    {
        var placement = BundlePlacementPolicy.Place(PlacementStrategy.StrictSpread, Bundles(R(1), R(1), R(1), R(1)), s_threeNodes);
        Assert.Equal(PlacementOutcome.Infeasible, placement.Outcome);
        Assert.Empty(placement.Nodes);
        Assert.Contains("4 bundle(s)", placement.Reason);
        Assert.Contains("STRICT_SPREAD", placement.Reason);
    }

    [Fact]
    public void StrictSpreadFindsTheMatchingAGreedyChoiceWouldMiss()
    {
        // The CPU bundle fits both nodes equally; taking the GPU node for it would leave the GPU bundle nowhere.
        var nodes = new[] { Node("a", R(1, gpu: 1)), Node("b", R(1)) };
        var placement = BundlePlacementPolicy.Place(PlacementStrategy.StrictSpread, Bundles(R(1), new() { ["GPU"] = 1 }), nodes);
        Assert.Equal(PlacementOutcome.Placed, placement.Outcome);
        Assert.Equal("b", placement.Nodes[0]);
        Assert.Equal("a", placement.Nodes[1]);
    }

    [Fact]
    public void StrictPackPutsEveryBundleOnTheOneNodeThatHoldsThemAll()
    {
        var nodes = new[] { Node("small", R(2)), Node("big", R(4)), Node("other", R(2)) };
        var placement = BundlePlacementPolicy.Place(PlacementStrategy.StrictPack, Bundles(R(1), R(1), R(1)), nodes);
        Assert.Equal(PlacementOutcome.Placed, placement.Outcome);
        Assert.All(placement.Nodes.Values, n => Assert.Equal("big", n));
    }

    [Fact]
    public void StrictPackWaitsWhileItsNodeIsBusyAndIsInfeasibleWhenNoNodeIsBigEnough()
    {
        var busy = new[] { Node("a", R(4), available: R(1)), Node("b", R(2)) };
        var waiting = BundlePlacementPolicy.Place(PlacementStrategy.StrictPack, Bundles(R(2), R(1)), busy);
        Assert.Equal(PlacementOutcome.Unavailable, waiting.Outcome);
        Assert.Contains("not free now", waiting.Reason);

        var never = BundlePlacementPolicy.Place(PlacementStrategy.StrictPack, Bundles(R(3), R(3)), s_threeNodes);
        Assert.Equal(PlacementOutcome.Infeasible, never.Outcome);
        Assert.Contains("STRICT_PACK", never.Reason);
    }

    [Fact]
    public void PackUsesOneNodeWhenItCanAndAsFewAsPossibleWhenItCannot()
    {
        var one = BundlePlacementPolicy.Place(PlacementStrategy.Pack, Bundles(R(1), R(2)), s_threeNodes);
        Assert.Single(one.Nodes.Values.Distinct());

        // Four 2-CPU bundles on 4-CPU nodes: two nodes, full, not three.
        var spans = BundlePlacementPolicy.Place(PlacementStrategy.Pack, Bundles(R(2), R(2), R(2), R(2)), s_threeNodes);
        Assert.Equal(PlacementOutcome.Placed, spans.Outcome);
        Assert.Equal(2, spans.Nodes.Values.Distinct().Count());
    }

    [Fact]
    public void SpreadUsesDistinctNodesWhileThereAreEnoughThenSharesEvenly()
    {
        var three = BundlePlacementPolicy.Place(PlacementStrategy.Spread, Bundles(R(1), R(1), R(1)), s_threeNodes);
        Assert.Equal(3, three.Nodes.Values.Distinct().Count());

        var two = new[] { Node("a", R(4)), Node("b", R(4)) };
        var four = BundlePlacementPolicy.Place(PlacementStrategy.Spread, Bundles(R(1), R(1), R(1), R(1)), two);
        Assert.Equal(PlacementOutcome.Placed, four.Outcome);
        Assert.Equal(2, four.Nodes.Values.Count(n => n == "a"));
        Assert.Equal(2, four.Nodes.Values.Count(n => n == "b"));
    }

    [Fact]
    public void SpreadPlacesTheLargestBundleFirstSoItStillFindsANode()
    {
        // Spreading the 1-CPU bundles first would put one on each node, and the 3-CPU one would then fit neither.
        var nodes = new[] { Node("a", R(3)), Node("b", R(2)) };
        var placement = BundlePlacementPolicy.Place(PlacementStrategy.Spread, Bundles(R(1), R(1), R(3)), nodes);
        Assert.Equal(PlacementOutcome.Placed, placement.Outcome);
        Assert.Equal("a", placement.Nodes[2]);
    }

    [Fact]
    public void ReschedulingPlacesOnlyTheLostBundlesAndKeepsTheStrictRulesAcrossKeptOnes()
    {
        // Bundle 1's node died: it must not go where bundles 0 and 2 are.
        var nodes = new[] { Node("a", R(4), available: R(3)), Node("c", R(4), available: R(3)), Node("d", R(4)) };
        var kept = new Dictionary<int, string> { [0] = "a", [2] = "c" };
        var spread = BundlePlacementPolicy.Place(PlacementStrategy.StrictSpread, Bundles(R(1), R(1), R(1)), nodes, kept);
        Assert.Equal(PlacementOutcome.Placed, spread.Outcome);
        Assert.Equal(new Dictionary<int, string> { [1] = "d" }, spread.Nodes);

        // With STRICT_PACK the lost bundles go back to the node the others are on, or wait for it.
        var packKept = new Dictionary<int, string> { [0] = "a" };
        var pack = BundlePlacementPolicy.Place(PlacementStrategy.StrictPack, Bundles(R(1), R(1)), nodes, packKept);
        Assert.Equal(new Dictionary<int, string> { [1] = "a" }, pack.Nodes);
        var full = BundlePlacementPolicy.Place(PlacementStrategy.StrictPack, Bundles(R(1), R(4)), nodes, packKept);
        Assert.NotEqual(PlacementOutcome.Placed, full.Outcome);
    }

    [Fact]
    public void AGroupWithoutBundlesIsRefused() =>
        Assert.Throws<ArgumentException>(() => BundlePlacementPolicy.Place(PlacementStrategy.Pack, Bundles(), s_threeNodes));
}
