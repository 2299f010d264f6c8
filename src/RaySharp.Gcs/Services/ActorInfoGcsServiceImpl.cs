using Grpc.Core;
using RaySharp.Gcs.Actors;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs.Services;

internal sealed class ActorInfoGcsServiceImpl(GcsActorManager actors) : ActorInfoGcsService.ActorInfoGcsServiceBase
{
    /// <summary>Longest a caller's wait for an actor may last before it gets the current row and asks again.</summary>
    private static readonly TimeSpan MaxWait = TimeSpan.FromSeconds(30);

    public override Task<RegisterActorReply> RegisterActor(RegisterActorRequest request, ServerCallContext context)
    {
        if (request.Info is null || request.Info.ActorId.Length == 0 || request.Creation is null)
            throw new RpcException(new Status(StatusCode.InvalidArgument, "info with an actor_id and the creation task are required"));
        return actors.RegisterAsync(request);
    }

    public override async Task<GetActorInfoReply> GetActorInfo(GetActorInfoRequest request, ServerCallContext context)
    {
        var info = request.Wait
            ? await actors.WaitAsync(request.ActorId, request.MinNumRestarts,
                request.WaitTimeoutMs > 0 ? TimeSpan.FromMilliseconds(Math.Min(request.WaitTimeoutMs, MaxWait.TotalMilliseconds)) : MaxWait,
                context.CancellationToken).ConfigureAwait(false)
            : actors.Get(request.ActorId);
        return info is null ? new GetActorInfoReply() : new GetActorInfoReply { Found = true, Info = info };
    }

    public override Task<GetNamedActorReply> GetNamedActor(GetNamedActorRequest request, ServerCallContext context)
    {
        var info = actors.GetNamed(request.Name, request.Namespace);
        return Task.FromResult(info is null ? new GetNamedActorReply() : new GetNamedActorReply { Found = true, Info = info });
    }

    public override Task<ListActorsReply> ListActors(ListActorsRequest request, ServerCallContext context)
    {
        var reply = new ListActorsReply();
        reply.Actors.Add(actors.List(request.IncludeDead));
        return Task.FromResult(reply);
    }

    public override async Task<KillActorReply> KillActor(KillActorRequest request, ServerCallContext context) =>
        new()
        {
            Found = await actors.KillAsync(request.ActorId, request.NoRestart, request.Reason.Length > 0 ? request.Reason : "killed by Ray.Kill").ConfigureAwait(false),
        };
}
