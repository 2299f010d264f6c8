using System.Collections.Concurrent;
using System.Threading.Channels;
using Channel = RaySharp.Rpc.Protocol.Channel;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs;

/// <summary>Fans state changes out to subscribers (raylets, drivers, the CLI). Each subscriber has its own queue.</summary>
internal sealed class GcsPublisher
{
    private readonly ConcurrentDictionary<long, Subscription> _subscribers = new();
    private long _nextSubscriber;
    private long _sequence;

    public Subscription Subscribe(IEnumerable<Channel> channels)
    {
        var sub = new Subscription(this, Interlocked.Increment(ref _nextSubscriber), channels.ToHashSet());
        _subscribers[sub.Id] = sub;
        return sub;
    }

    public void Publish(Channel channel, Action<PubMessage> fill)
    {
        var message = new PubMessage { Channel = channel, Sequence = Interlocked.Increment(ref _sequence) };
        fill(message);
        foreach (var sub in _subscribers.Values)
        {
            if (sub.Channels.Contains(channel)) sub.Queue.Writer.TryWrite(message);
        }
    }

    public int SubscriberCount => _subscribers.Count;

    internal sealed class Subscription(GcsPublisher owner, long id, HashSet<Channel> channels) : IDisposable
    {
        public long Id { get; } = id;
        public HashSet<Channel> Channels { get; } = channels;

        // Node and job events are rare and must not be dropped, so the queue is unbounded.
        public System.Threading.Channels.Channel<PubMessage> Queue { get; } = System.Threading.Channels.Channel.CreateUnbounded<PubMessage>(
            new UnboundedChannelOptions { SingleReader = true });

        public void Dispose()
        {
            owner._subscribers.TryRemove(Id, out _);
            Queue.Writer.TryComplete();
        }
    }
}
