namespace RaySharp.Gcs.Actors;

/// <summary>
/// Named actors, per namespace. A name belongs to a live actor: its death frees it for the next registration, which is
/// why only the directory's transitions (under its lock) release names.
/// </summary>
internal sealed class ActorNames
{
    private readonly Dictionary<(string Namespace, string Name), string> _named = [];

    public bool TryGet(string ns, string name, out string actorId) => _named.TryGetValue((ns, name), out actorId!);

    public void Claim(string ns, string name, string actorId)
    {
        if (name.Length > 0) _named[(ns, name)] = actorId;
    }

    /// <summary>Frees the name if it is still this actor's (a newer actor may hold it already).</summary>
    public void Release(string ns, string name, string actorId)
    {
        if (name.Length > 0 && _named.TryGetValue((ns, name), out var id) && id == actorId) _named.Remove((ns, name));
    }
}
