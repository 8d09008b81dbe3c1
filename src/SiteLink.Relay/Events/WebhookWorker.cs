using System.Threading.Channels;

namespace SiteLink.Relay.Events;

/// <summary>
/// One subscription's bounded queue and the loop that delivers it, one event at a time in the order published. The event
/// being delivered stays at the head of the queue (peeked, removed once delivered or given up), so it counts against the
/// bound, and a worker stopped for a new version of its subscription leaves it to its successor, which shares the queue.
/// </summary>
// The stop source is cancelled, never disposed: the loop and Retire read its token until the worker is gone.
#pragma warning disable CA1001
internal sealed class WebhookWorker
#pragma warning restore CA1001
{
    private readonly HashSet<string> _types;
    private readonly CancellationTokenSource _stop = new();
    private volatile string? _closedReason;

    public WebhookWorker(WebhookSubscription subscription, Channel<PublishedEvent> queue)
    {
        Subscription = subscription;
        Queue = queue;
        _types = new HashSet<string>(subscription.Events, StringComparer.Ordinal);
        AllTenants = subscription.Tenant == "*";
    }

    /// <summary>A new queue of <paramref name="capacity"/> events.</summary>
    public static Channel<PublishedEvent> NewQueue(int capacity) => Channel.CreateBounded<PublishedEvent>(new BoundedChannelOptions(capacity)
    {
        SingleReader = true,
        FullMode = BoundedChannelFullMode.Wait,
    });

    public WebhookSubscription Subscription { get; }

    public Channel<PublishedEvent> Queue { get; }

    public bool AllTenants { get; }

    /// <summary>Events waiting, the one being delivered included.</summary>
    public int Queued => Queue.Reader.Count;

    /// <summary>Why the queue takes no more events (the subscription was removed, the relay stopped); null while it does.</summary>
    public string? ClosedReason => _closedReason;

    /// <summary>Signalled when the worker must stop (after the attempt in progress is abandoned).</summary>
    public CancellationToken Stopping => _stop.Token;

    /// <summary>The delivery loop; completes once it stopped.</summary>
    public Task Completion { get; private set; } = Task.CompletedTask;

    public bool Matches(PublishedEvent published) =>
        (AllTenants || string.Equals(Subscription.Tenant, published.Tenant, StringComparison.OrdinalIgnoreCase)) && _types.Contains(published.Type);

    /// <summary>Queues an event; false when the queue is full or closed (<see cref="ClosedReason"/>).</summary>
    public bool TryEnqueue(PublishedEvent published) => Queue.Writer.TryWrite(published);

    /// <summary>Starts <paramref name="loop"/> once <paramref name="predecessor"/> (the worker of the subscription's previous version) has stopped.</summary>
    public void Start(Func<WebhookWorker, Task> loop, Task predecessor) =>
        Completion = predecessor.ContinueWith(_ => loop(this), CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default).Unwrap();

    public void Stop()
    {
        try
        {
            _stop.Cancel();
        }
        catch (AggregateException)
        {
            // A callback of the token failed; the worker still stops.
        }
    }

    /// <summary>Takes no more events: what is still queued is for the caller to dead-letter once the loop stopped.</summary>
    public void Close(string reason)
    {
        _closedReason = reason;
        Queue.Writer.TryComplete();
    }
}
