using RaySharp.Rpc.Protocol;

namespace RaySharp.Rpc;

/// <summary>The names users see for protocol enums, the same in the CLI and the API (Ray's spellings).</summary>
internal static class ProtocolNames
{
    public static string Of(ActorState state) => state switch
    {
        ActorState.ActorPendingCreation => "PENDING_CREATION",
        ActorState.ActorAlive => "ALIVE",
        ActorState.ActorRestarting => "RESTARTING",
        _ => "DEAD",
    };
}
