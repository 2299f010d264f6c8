using System.Text;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using RaySharp.Common;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Rpc.Transport;

/// <summary>
/// What each framed method accepts from a peer, checked by <see cref="FramedConnection"/> when a request or one-way
/// message arrives, before any handler sees it: the largest payload (a frame over it is refused from its header, its
/// bytes skipped unbuffered), the most fields on the wire (each element of a repeated field counts, nested messages'
/// included: a payload of tiny repeated ids would otherwise parse into millions of objects), then the parse and the
/// message's own rules (<see cref="IValidatedRequest"/>). A refused request is answered with an error naming the
/// problem; a refused one-way message is dropped. Handlers take the message parsed here through <see cref="Message{T}"/>.
/// </summary>
internal static class FramedRequests
{
    /// <summary>Payload limit of the control messages (ids, sizes, a pid): 64 KiB.</summary>
    public const int SmallPayload = 64 * 1024;

    /// <summary>Field limit of the control messages.</summary>
    public const int SmallFields = 64;

    /// <summary>
    /// Payload limit of tasks and actor calls: the whole frame (1 GiB). Values above 100 KiB go through the object store,
    /// but a process with no store on its machine (a driver outside the cluster) sends every argument inline.
    /// </summary>
    public const int TaskPayload = FrameFormat.MaxFrameSize - FrameFormat.HeaderSize + 4;

    /// <summary>Field limit of tasks and actor calls: arguments, GPU ids and the descriptor's parameter types together.</summary>
    public const int TaskFields = 4096;

    /// <summary>Payload limit of task output (whole lines a task wrote at once): 64 MiB.</summary>
    public const int OutputPayload = 64 * 1024 * 1024;

    /// <summary>Payload limit of seal, release and free-copies messages (ids of 34 bytes each on the wire): 1 MiB.</summary>
    public const int IdsPayload = 1024 * 1024;

    /// <summary>Payload limit of free messages (a stored object is about 100 bytes on the wire): 4 MiB.</summary>
    public const int FreePayload = 4 * 1024 * 1024;

    private const int MaxDepth = 8;

    private sealed record Rule(string Name, int MaxPayload, int MaxFields, MessageDescriptor? Descriptor, Func<byte[], object> Parse, Func<object, string?> Validate);

    private static readonly Rule?[] s_rules = Rules();

    private static Rule?[] Rules()
    {
        var rules = new Rule?[FramedMethods.WorkerPing + 1];
        void Proto<T>(int method, string name, int maxPayload, int maxFields, MessageParser<T> parser, Func<T, string?>? extra = null) where T : IMessage<T>
        {
            var descriptor = parser.ParseFrom(ReadOnlySpan<byte>.Empty).Descriptor;
            rules[method] = new Rule(name, maxPayload, maxFields, descriptor, payload => parser.ParseFrom(new ReadOnlySpan<byte>(payload)),
                message => (message as IValidatedRequest)?.Validate() ?? extra?.Invoke((T)message));
        }
        static string? HasActor(PushTaskRequest r) => r.ActorId.Length == 0 ? "actor_id is missing" : null;

        Proto(FramedMethods.PushTask, "PushTask", TaskPayload, TaskFields, PushTaskRequest.Parser);
        Proto(FramedMethods.TaskOutput, "TaskOutput", OutputPayload, SmallFields, TaskOutput.Parser);
        rules[FramedMethods.GetObject] = new Rule("GetObject", 1024, 0, null, payload => Encoding.UTF8.GetString(payload),
            id => UniqueId.IsValid((string)id) ? null : $"object id '{FramedValidation.Shorten((string)id)}' is not a {UniqueId.Length * 2}-character hex id");
        Proto(FramedMethods.ActorCreate, "ActorCreate", TaskPayload, TaskFields, PushTaskRequest.Parser, HasActor);
        Proto(FramedMethods.ActorCall, "ActorCall", TaskPayload, TaskFields, PushTaskRequest.Parser, HasActor);
        Proto(FramedMethods.ActorKill, "ActorKill", SmallPayload, SmallFields, ActorKillRequest.Parser);
        Proto(FramedMethods.RegisterDriver, "RegisterDriver", SmallPayload, SmallFields, RegisterDriverRequest.Parser);
        Proto(FramedMethods.ObjectStoreConnect, "ObjectStoreConnect", SmallPayload, SmallFields, ObjectStoreClientInfo.Parser);
        Proto(FramedMethods.ObjectCreate, "ObjectCreate", SmallPayload, SmallFields, ObjectCreateRequest.Parser);
        Proto(FramedMethods.ObjectSeal, "ObjectSeal", IdsPayload, FramedValidation.MaxObjectsPerRequest + SmallFields, ObjectIdsRequest.Parser);
        Proto(FramedMethods.ObjectGet, "ObjectGet", SmallPayload, SmallFields, ObjectGetRequest.Parser);
        Proto(FramedMethods.ObjectRelease, "ObjectRelease", IdsPayload, FramedValidation.MaxObjectsPerRequest + SmallFields, ObjectIdsRequest.Parser);
        // Each stored object is one field holding its own (up to 6 known ones).
        Proto(FramedMethods.ObjectFree, "ObjectFree", FreePayload, FramedValidation.MaxObjectsPerRequest * 8 + SmallFields, ObjectFreeRequest.Parser);
        Proto(FramedMethods.ObjectStoreStats, "ObjectStoreStats", SmallPayload, SmallFields, Google.Protobuf.WellKnownTypes.Empty.Parser);
        Proto(FramedMethods.ObjectChunk, "ObjectChunk", SmallPayload, SmallFields, ObjectChunkRequest.Parser);
        Proto(FramedMethods.ObjectFreeCopies, "ObjectFreeCopies", IdsPayload, FramedValidation.MaxObjectsPerRequest + SmallFields, ObjectIdsRequest.Parser);
        Proto(FramedMethods.ObjectStoreCollect, "ObjectStoreCollect", SmallPayload, SmallFields, Google.Protobuf.WellKnownTypes.Empty.Parser);
        Proto(FramedMethods.WorkerPing, "WorkerPing", SmallPayload, SmallFields, PingRequest.Parser);
        return rules;
    }

    private static Rule? RuleOf(int method) => (uint)method < (uint)s_rules.Length ? s_rules[method] : null;

    /// <summary>The largest payload a peer may send for <paramref name="method"/>; an unknown method gets the small limit (it is refused anyway).</summary>
    public static int MaxPayload(int method) => RuleOf(method)?.MaxPayload ?? SmallPayload;

    /// <summary>Why a frame of <paramref name="length"/> payload bytes for <paramref name="method"/> was refused unread.</summary>
    public static string Oversized(int method, int length) =>
        $"the {NameOf(method)} payload of {length} bytes is over that method's limit of {MaxPayload(method)} bytes";

    private static string NameOf(int method) => RuleOf(method)?.Name ?? $"method {method}";

    /// <summary>Null when the payload is admitted (its message in <paramref name="message"/>); else what is wrong with it.</summary>
    public static string? Admit(int method, byte[] payload, out object? message)
    {
        message = null;
        if (RuleOf(method) is not { } rule) return $"method {method} is not a framed method";
        if (payload.Length > rule.MaxPayload) return Oversized(method, payload.Length);
        // Every field takes two bytes on the wire at least (a tag, then a value or a length; a nested message's fields lie
        // within its parent's bytes), so a payload of at most twice the limit cannot exceed it: the scan is skipped for
        // the small messages of the hot path (actor calls, tasks with small arguments).
        if (rule.Descriptor is { } descriptor && payload.Length > 2 * rule.MaxFields)
        {
            var left = rule.MaxFields;
            if (!Scan(payload, descriptor, ref left, 0) && left < 0)
                return $"the {rule.Name} message has more than {rule.MaxFields} fields (repeated elements included)";
        }
        try
        {
            message = rule.Parse(payload);
        }
        catch (InvalidProtocolBufferException e)
        {
            return $"the {rule.Name} payload is not a valid message: {e.Message}";
        }
        if (rule.Validate(message) is { } problem)
        {
            message = null;
            return $"invalid {rule.Name} request: {problem}";
        }
        return null;
    }

    // The request being dispatched on this thread and what it parsed to: a handler's synchronous part (which runs on
    // the read loop, inside the dispatch) takes the message from here rather than parsing the payload a second time.
    [ThreadStatic] private static byte[]? t_payload;
    [ThreadStatic] private static object? t_message;

    /// <summary>Admits a request or one-way message about to be dispatched on this thread; null when admitted.</summary>
    internal static string? BeginDispatch(int method, byte[] payload)
    {
        var refused = Admit(method, payload, out var message);
        if (refused is null)
        {
            t_payload = payload;
            t_message = message;
        }
        return refused;
    }

    internal static void EndDispatch()
    {
        t_payload = null;
        t_message = null;
    }

    /// <summary>
    /// The message of a request: the one admitted at dispatch, or (a handler called some other way) parsed and checked
    /// now. Throws <see cref="InvalidDataException"/> naming the problem.
    /// </summary>
    public static T Message<T>(int method, byte[] payload) where T : class
    {
        if (ReferenceEquals(t_payload, payload) && t_message is T admitted) return admitted;
        if (Admit(method, payload, out var message) is { } problem) throw new InvalidDataException(problem);
        return message as T ?? throw new InvalidDataException($"method {method} does not carry a {typeof(T).Name}");
    }

    /// <summary>
    /// Counts the fields on the wire without building anything, into nested messages the descriptor knows. False when
    /// the count passed <paramref name="left"/> (it ends below zero) or the bytes are malformed (the parser then says how).
    /// </summary>
    private static bool Scan(ReadOnlySpan<byte> data, MessageDescriptor descriptor, ref int left, int depth)
    {
        var position = 0;
        while (position < data.Length)
        {
            if (--left < 0) return false;
            if (!TryVarint(data, ref position, out var tag)) return false;
            switch ((int)(tag & 7))
            {
                case 0:
                    if (!TryVarint(data, ref position, out _)) return false;
                    break;
                case 1:
                    position += 8;
                    break;
                case 5:
                    position += 4;
                    break;
                case 2:
                    if (!TryVarint(data, ref position, out var length) || length > (ulong)(data.Length - position)) return false;
                    if (descriptor.FindFieldByNumber((int)(tag >> 3)) is { FieldType: FieldType.Message } field)
                    {
                        if (depth >= MaxDepth || !Scan(data.Slice(position, (int)length), field.MessageType, ref left, depth + 1)) return false;
                    }
                    position += (int)length;
                    break;
                default:
                    return false;
            }
        }
        return position == data.Length;
    }

    private static bool TryVarint(ReadOnlySpan<byte> data, ref int position, out ulong value)
    {
        value = 0;
        for (var shift = 0; shift < 64 && position < data.Length; shift += 7)
        {
            var b = data[position++];
            value |= (ulong)(b & 0x7f) << shift;
            if (b < 0x80) return true;
        }
        return false;
    }
}
