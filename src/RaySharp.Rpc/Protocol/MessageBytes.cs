using Google.Protobuf;

namespace RaySharp.Rpc.Protocol;

/// <summary>
/// Messages to and from the framed transport's byte arrays without the coded streams that <c>ToByteArray</c> and
/// <c>ParseFrom(byte[])</c> allocate per message: on the per-call paths (tasks, actor calls) those were a sixth of what
/// a caller allocated.
/// </summary>
internal static class MessageBytes
{
    public static byte[] ToBytes(IMessage message)
    {
        var bytes = new byte[message.CalculateSize()];
        message.WriteTo(bytes.AsSpan());
        return bytes;
    }

    public static T Parse<T>(MessageParser<T> parser, byte[] payload) where T : IMessage<T> =>
        parser.ParseFrom(new ReadOnlySpan<byte>(payload));
}
