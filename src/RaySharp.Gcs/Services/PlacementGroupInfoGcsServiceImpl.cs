using Grpc.Core;
using RaySharp.Gcs.PlacementGroups;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs.Services;

internal sealed class PlacementGroupInfoGcsServiceImpl(GcsPlacementGroupManager groups) : PlacementGroupInfoGcsService.PlacementGroupInfoGcsServiceBase
{
    /// <summary>Longest one wait lasts; a caller that needs longer asks again.</summary>
    private static readonly TimeSpan MaxWait = TimeSpan.FromSeconds(30);

    public override async Task<CreatePlacementGroupReply> CreatePlacementGroup(CreatePlacementGroupRequest request, ServerCallContext context)
    {
        var error = await groups.CreateAsync(request.Spec).ConfigureAwait(false);
        return new CreatePlacementGroupReply { Accepted = error is null, ErrorMessage = error ?? "" };
    }

    public override async Task<RemovePlacementGroupReply> RemovePlacementGroup(RemovePlacementGroupRequest request, ServerCallContext context) =>
        new() { Found = await groups.RemoveAsync(request.PlacementGroupId).ConfigureAwait(false) };

    public override Task<GetPlacementGroupReply> GetPlacementGroup(GetPlacementGroupRequest request, ServerCallContext context) =>
        Task.FromResult(Reply(groups.Get(request.PlacementGroupId)));

    public override Task<GetPlacementGroupReply> GetNamedPlacementGroup(GetNamedPlacementGroupRequest request, ServerCallContext context) =>
        Task.FromResult(Reply(groups.GetNamed(request.Name, request.RayNamespace)));

    public override Task<GetAllPlacementGroupReply> GetAllPlacementGroup(GetAllPlacementGroupRequest request, ServerCallContext context)
    {
        var reply = new GetAllPlacementGroupReply();
        reply.PlacementGroups.Add(groups.List().Where(g => request.IncludeRemoved || g.State != PlacementGroupState.Removed));
        return Task.FromResult(reply);
    }

    public override async Task<WaitPlacementGroupUntilReadyReply> WaitPlacementGroupUntilReady(WaitPlacementGroupUntilReadyRequest request, ServerCallContext context)
    {
        var timeout = request.TimeoutMs > 0 ? TimeSpan.FromMilliseconds(Math.Min(request.TimeoutMs, MaxWait.TotalMilliseconds)) : MaxWait;
        var ready = await groups.WaitUntilReadyAsync(request.PlacementGroupId, timeout, context.CancellationToken).ConfigureAwait(false);
        return new WaitPlacementGroupUntilReadyReply { Ready = ready, State = groups.Get(request.PlacementGroupId)?.State ?? PlacementGroupState.Removed };
    }

    private static GetPlacementGroupReply Reply(PlacementGroupTableData? info) =>
        info is null ? new GetPlacementGroupReply() : new GetPlacementGroupReply { Found = true, Info = info };
}
