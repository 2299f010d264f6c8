using RaySharp.CoreWorker.Submission;
using RaySharp.Rpc;
using RaySharp.Rpc.Protocol;

namespace RaySharp;

/// <summary>Actors: classes, named lookup, kill, the actor table.</summary>
public static partial class Ray
{
    /// <summary>An actor class: <c>Ray.Actor(() =&gt; new Counter(10)).Remote()</c> builds one on a node of the cluster.</summary>
    public static ActorClass<TActor> Actor<TActor>(Func<TActor> factory, ActorOptions? options = null) where TActor : class => new(factory, options ?? new ActorOptions());

    /// <summary>An actor class whose constructor takes arguments: <c>Ray.Actor((int start) =&gt; new Counter(start)).Remote(10)</c>.</summary>
    public static ActorClass<T1, TActor> Actor<T1, TActor>(Func<T1, TActor> factory, ActorOptions? options = null) where TActor : class => new(factory, options ?? new ActorOptions());

    public static ActorClass<T1, T2, TActor> Actor<T1, T2, TActor>(Func<T1, T2, TActor> factory, ActorOptions? options = null) where TActor : class => new(factory, options ?? new ActorOptions());

    public static ActorClass<T1, T2, T3, TActor> Actor<T1, T2, T3, TActor>(Func<T1, T2, T3, TActor> factory, ActorOptions? options = null) where TActor : class => new(factory, options ?? new ActorOptions());

    /// <summary>The live actor named <paramref name="name"/> in <paramref name="namespace"/> (default: this driver's).</summary>
    /// <exception cref="RayException">No live actor has that name there.</exception>
    public static ActorHandle<TActor> GetActor<TActor>(string name, string? @namespace = null) where TActor : class
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        var context = ActorContext();
        var ns = @namespace ?? context.Namespace;
        return NamedActor<TActor>(name, ns, context.Submitter.Gcs.Actors.GetNamedActor(new GetNamedActorRequest { Name = name, Namespace = ns }));
    }

    /// <summary>As <see cref="GetActor{TActor}(string, string?)"/>, awaited.</summary>
    public static async Task<ActorHandle<TActor>> GetActorAsync<TActor>(string name, string? @namespace = null, CancellationToken cancellationToken = default) where TActor : class
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        var context = ActorContext();
        var ns = @namespace ?? context.Namespace;
        var reply = await context.Submitter.Gcs.Actors.GetNamedActorAsync(new GetNamedActorRequest { Name = name, Namespace = ns }, cancellationToken: cancellationToken).ConfigureAwait(false);
        return NamedActor<TActor>(name, ns, reply);
    }

    private static ActorHandle<TActor> NamedActor<TActor>(string name, string ns, GetNamedActorReply reply) where TActor : class
    {
        if (!reply.Found) throw new RayException($"no live actor is named '{name}' in namespace '{ns}'; check the name and the namespace (RayInitOptions.Namespace or the namespace argument)");
        var expected = typeof(TActor).FullName ?? typeof(TActor).Name;
        if (reply.Info.ClassName != expected) throw new RayException($"the actor named '{name}' is a {reply.Info.ClassName}, not a {expected}");
        return new ActorHandle<TActor>(reply.Info.ActorId, 0, -1);
    }

    /// <summary>
    /// Kills an actor now, interrupting calls in flight (they fail with <see cref="ActorDiedException"/>). With
    /// <paramref name="noRestart"/> false, an actor with restarts left is rebuilt instead.
    /// </summary>
    public static void Kill<TActor>(ActorHandle<TActor> actor, bool noRestart = true) where TActor : class =>
        KillAsync(actor, noRestart).GetAwaiter().GetResult();

    /// <summary>As <see cref="Kill{TActor}(ActorHandle{TActor}, bool)"/>, awaited.</summary>
    public static async Task KillAsync<TActor>(ActorHandle<TActor> actor, bool noRestart = true) where TActor : class
    {
        ArgumentNullException.ThrowIfNull(actor);
        try
        {
            await ActorContext().Submitter.KillAsync(actor.ActorId, noRestart).ConfigureAwait(false);
        }
        catch (InvalidOperationException e)
        {
            throw new RayException(e.Message, e);
        }
    }

    /// <summary>Every actor of the cluster with its state (pending, alive, restarting, dead), as <c>raysharp list actors</c> shows.</summary>
    public static IReadOnlyList<ActorDescription> ListActors(bool includeDead = true) =>
        Describe(ActorContext().Submitter.Gcs.Actors.ListActors(new ListActorsRequest { IncludeDead = includeDead }));

    /// <summary>As <see cref="ListActors"/>, awaited.</summary>
    public static async Task<IReadOnlyList<ActorDescription>> ListActorsAsync(bool includeDead = true, CancellationToken cancellationToken = default) =>
        Describe(await ActorContext().Submitter.Gcs.Actors.ListActorsAsync(new ListActorsRequest { IncludeDead = includeDead }, cancellationToken: cancellationToken).ConfigureAwait(false));

    private static List<ActorDescription> Describe(ListActorsReply reply) =>
        reply.Actors.Select(a => new ActorDescription(
            a.ActorId, a.ClassName, a.Name.Length > 0 ? a.Name : null, a.Namespace, ProtocolNames.Of(a.State), a.JobId,
            a.Address?.NodeId, a.Address?.IpAddress, a.Address?.Pid, a.NumRestarts, a.Detached, a.Lightweight,
            a.DeathCause.Length > 0 ? a.DeathCause : null)).ToList();
}
