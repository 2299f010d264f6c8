using RaySharp.Common;
using RaySharp.Raylet.Scheduling;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Tests;

/// <summary>The raylet's bookkeeping of placement-group bundles (prepare, commit, cancel) on hand-made resource maps.</summary>
public sealed class BundleReservationsTests
{
    private static readonly string G = UniqueId.New();

    private readonly Dictionary<string, double> _total = new(StringComparer.Ordinal) { ["CPU"] = 4, ["GPU"] = 1, ["memory"] = 100 };
    private readonly Dictionary<string, double> _available = new(StringComparer.Ordinal) { ["CPU"] = 4, ["GPU"] = 1, ["memory"] = 100 };
    private readonly BundleReservations _bundles;

    public BundleReservationsTests() => _bundles = new BundleReservations(_total, _available);

    private static BundleRequest B(int index, params (string, double)[] resources) =>
        new(G, index, resources.ToDictionary(r => r.Item1, r => r.Item2, StringComparer.Ordinal));

    [Fact]
    public void GroupResourceNamesAreRays()
    {
        Assert.Equal($"CPU_group_2_{G}", BundleResources.Indexed("CPU", G, 2));
        Assert.Equal($"CPU_group_{G}", BundleResources.Wildcard("CPU", G));
        Assert.True(BundleResources.BelongsTo($"bundle_group_0_{G}", G));
        Assert.True(BundleResources.BelongsTo($"GPU_group_{G}", G));
        Assert.False(BundleResources.BelongsTo("CPU", G));
        Assert.False(BundleResources.BelongsTo($"CPU_group_0_{UniqueId.New()}", G));
        Assert.True(BundleResources.IsGroupResource($"bundle_group_{G}"));
        Assert.True(BundleResources.IsGroupResource($"CPU_group_3_{G}"));
        Assert.False(BundleResources.IsGroupResource("my_group_resource"));
        // The lease request's validation accepts them.
        Assert.True(ResourceSet.IsValidName(BundleResources.Indexed("CPU", G, 12345)));
    }

    [Fact]
    public void ALeaseOfABundlesGpusDrawsGpuIndicesOnce()
    {
        Assert.Equal(2, LeaseManager.GpusOf(new Dictionary<string, double> { ["GPU"] = 2, ["CPU"] = 4 }));
        Assert.Equal(1, LeaseManager.GpusOf(new Dictionary<string, double> { [BundleResources.Indexed("GPU", G, 0)] = 1, [BundleResources.Wildcard("GPU", G)] = 1 }));
        Assert.Equal(0, LeaseManager.GpusOf(new Dictionary<string, double> { [BundleResources.Wildcard("CPU", G)] = 1, ["GPU_custom"] = 3 }));
    }

    [Fact]
    public void PrepareTakesFromAvailableOnlyAndIsIdempotent()
    {
        Assert.Null(_bundles.Prepare([B(0, ("CPU", 2))]));
        Assert.Equal(2, _available["CPU"]);
        Assert.Equal(4, _total["CPU"]);
        Assert.Null(_bundles.Prepare([B(0, ("CPU", 2)), B(0, ("CPU", 2))]));
        Assert.Equal(2, _available["CPU"]);
        Assert.Equal(BundleState.Prepared, _bundles.Find(G, 0)!.State);
        Assert.DoesNotContain(_total.Keys, k => k.Contains("_group_"));
    }

    [Fact]
    public void PrepareIsAllOrNoneAndNamesTheBundleThatDidNotFit()
    {
        var failure = _bundles.Prepare([B(0, ("CPU", 3)), B(1, ("CPU", 2), ("GPU", 1))]);
        Assert.NotNull(failure);
        Assert.Contains("bundle 1", failure);
        Assert.Contains(G, failure);
        Assert.Contains("CPU: 2 wanted, 1 free", failure);
        Assert.EndsWith("after the request's 1 earlier bundle(s): CPU: 2 wanted, 1 free", failure);
        Assert.Equal(4, _available["CPU"]);
        Assert.Equal(0, _bundles.Count);
        Assert.Contains("custom", _bundles.Prepare([B(0, ("custom", 1))]));
    }

    [Fact]
    public void CommitAddsIndexedWildcardAndMarkerResources()
    {
        Assert.Null(_bundles.Prepare([B(0, ("CPU", 1), ("GPU", 1)), B(1, ("CPU", 2))]));
        Assert.Null(_bundles.Commit([(G, 0), (G, 1)]));
        Assert.Null(_bundles.Commit([(G, 0)]));
        foreach (var map in new[] { _total, _available })
        {
            Assert.Equal(1, map[$"CPU_group_0_{G}"]);
            Assert.Equal(2, map[$"CPU_group_1_{G}"]);
            Assert.Equal(3, map[$"CPU_group_{G}"]);
            Assert.Equal(1, map[$"GPU_group_0_{G}"]);
            Assert.Equal(1, map[$"GPU_group_{G}"]);
            Assert.Equal(1000, map[$"bundle_group_0_{G}"]);
            Assert.Equal(2000, map[$"bundle_group_{G}"]);
        }
        Assert.Equal(4, _total["CPU"]);
        Assert.Equal(1, _available["CPU"]);
        Assert.Equal(0, _available["GPU"]);
    }

    [Fact]
    public void CommitOfAnUnpreparedBundleFailsAndCommitsNothing()
    {
        Assert.Null(_bundles.Prepare([B(0, ("CPU", 1))]));
        var failure = _bundles.Commit([(G, 0), (G, 7)]);
        Assert.Contains("bundle 7", failure);
        Assert.Equal(BundleState.Prepared, _bundles.Find(G, 0)!.State);
        Assert.DoesNotContain(_total.Keys, k => k.Contains("_group_"));
    }

    [Fact]
    public void CancelReturnsPreparedAndCommittedBundlesAndLeavesTheOthers()
    {
        Assert.Null(_bundles.Prepare([B(0, ("CPU", 1)), B(1, ("CPU", 2)), B(2, ("memory", 50))]));
        Assert.Null(_bundles.Commit([(G, 0), (G, 1)]));

        Assert.NotNull(_bundles.Cancel(G, 2)); // prepared only
        Assert.Equal(100, _available["memory"]);

        Assert.NotNull(_bundles.Cancel(G, 0));
        Assert.False(_total.ContainsKey($"CPU_group_0_{G}"));
        Assert.False(_available.ContainsKey($"bundle_group_0_{G}"));
        Assert.Equal(2, _total[$"CPU_group_{G}"]);
        Assert.Equal(2, _available[$"CPU_group_{G}"]);
        Assert.Equal(1000, _total[$"bundle_group_{G}"]);
        Assert.Equal(2, _available["CPU"]);

        Assert.Null(_bundles.Cancel(G, 0)); // unknown: nothing to do
        Assert.NotNull(_bundles.Cancel(G, 1));
        Assert.Equal(0, _bundles.Count);
        Assert.DoesNotContain(_total.Keys, k => k.Contains("_group_"));
        Assert.DoesNotContain(_available.Keys, k => k.Contains("_group_"));
        Assert.Equal(_total, _available);
    }

    [Fact]
    public void CancelOfACommittedBundleWhoseResourcesAreInUseNeverLeavesMoreAvailableThanTotal()
    {
        Assert.Null(_bundles.Prepare([B(0, ("CPU", 1)), B(1, ("CPU", 1))]));
        Assert.Null(_bundles.Commit([(G, 0), (G, 1)]));
        // A lease of bundle 1 holds its CPU (both names, as Ray's core worker asks).
        ResourceSet.Subtract(_available, new Dictionary<string, double> { [$"CPU_group_1_{G}"] = 1, [$"CPU_group_{G}"] = 1 });
        Assert.NotNull(_bundles.Cancel(G, 0));
        Assert.Equal(1, _total[$"CPU_group_{G}"]);
        Assert.Equal(0, _available[$"CPU_group_{G}"]);
        Assert.Equal(0, _available[$"CPU_group_1_{G}"]);
        Assert.Equal(3, _available["CPU"]);
    }

    [Fact]
    public void BundleRequestsAreValidated()
    {
        static string? Check(IValidatedRequest r) => r.Validate();
        static BundleSpec Spec(string id, int index, params (string, double)[] resources)
        {
            var spec = new BundleSpec { PlacementGroupId = id, BundleIndex = index };
            foreach (var (k, v) in resources) spec.Resources[k] = v;
            return spec;
        }

        Assert.Null(Check(new PrepareBundleResourcesRequest { Bundles = { Spec(G, 0, ("CPU", 1)) } }));
        Assert.Contains("empty", Check(new PrepareBundleResourcesRequest()));
        Assert.Contains("placement_group_id", Check(new PrepareBundleResourcesRequest { Bundles = { Spec("pg", 0, ("CPU", 1)) } }));
        Assert.Contains("bundle_index", Check(new CommitBundleResourcesRequest { Bundles = { Spec(G, -1, ("CPU", 1)) } }));
        Assert.Contains("resources is empty", Check(new PrepareBundleResourcesRequest { Bundles = { Spec(G, 0) } }));
        Assert.Contains("positive", Check(new PrepareBundleResourcesRequest { Bundles = { Spec(G, 0, ("CPU", 0)) } }));
        Assert.Contains("positive", Check(new PrepareBundleResourcesRequest { Bundles = { Spec(G, 0, ("CPU", double.NaN)) } }));
        Assert.Contains("invalid resource name", Check(new PrepareBundleResourcesRequest { Bundles = { Spec(G, 0, ("C PU", 1)) } }));
        Assert.Contains("too long", Check(new PrepareBundleResourcesRequest { Bundles = { Spec(G, 0, (new string('r', 120), 1)) } }));
        Assert.Contains("bundle is missing", Check(new CancelResourceReserveRequest()));
        Assert.Null(Check(new ReleaseUnusedBundlesRequest()));
        Assert.Contains("bundles_in_use[0]", Check(new ReleaseUnusedBundlesRequest { BundlesInUse = { Spec(G, -2, ("CPU", 1)) } }));
        // A lease of a bundle's resources passes the lease request's checks.
        Assert.Null(Check(new RequestWorkerLeaseRequest { Resources = { [BundleResources.Indexed("CPU", G, 0)] = 1, [BundleResources.Wildcard("CPU", G)] = 1 } }));
    }
}
