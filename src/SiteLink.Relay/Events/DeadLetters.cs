namespace SiteLink.Relay.Events;

/// <summary>An event the relay gave up delivering to a subscription, and why.</summary>
/// <param name="SubscriptionId">The subscription it was for.</param>
/// <param name="Tenant">The event's tenant.</param>
/// <param name="EventId">The CloudEvents id (also the <c>SiteLink-Event-Id</c> header), so a replay can be deduplicated.</param>
/// <param name="EventType">e.g. <c>session.connected</c>.</param>
/// <param name="Payload">The CloudEvents JSON body as it was (or would have been) sent.</param>
/// <param name="Error">
/// Why: the last attempt's error (<c>HTTP 503 (Service Unavailable)</c>, a connection error, a timeout), or
/// <see cref="DeadLetterReasons.QueueFull"/>, <see cref="DeadLetterReasons.SubscriptionRemoved"/>,
/// <see cref="DeadLetterReasons.RelayStopped"/>.
/// </param>
/// <param name="Attempts">Delivery attempts made (0 when it was never tried).</param>
/// <param name="At">When it was given up.</param>
public sealed record DeadLetter(string SubscriptionId, string Tenant, string EventId, string EventType, string Payload, string Error, int Attempts, DateTimeOffset At);

/// <summary>The reasons of dead letters that were never (fully) tried.</summary>
public static class DeadLetterReasons
{
    /// <summary>The subscription's queue was full (<c>Relay:Events:MaxQueuedPerSubscription</c>): its receiver is down or slow.</summary>
    public const string QueueFull = "queue full";

    /// <summary>The subscription was removed while the event waited for delivery.</summary>
    public const string SubscriptionRemoved = "subscription removed";

    /// <summary>The relay stopped while the event waited and its receiver was not taking events.</summary>
    public const string RelayStopped = "relay stopped";
}

/// <summary>
/// Where dead letters go. The relay registers <see cref="InMemoryDeadLetterStore"/> unless a persistent store was
/// registered first. Called from one background writer, one letter at a time; a slow store delays only that writer.
/// </summary>
public interface IDeadLetterStore
{
    /// <summary>Keeps a dead letter.</summary>
    ValueTask AddAsync(DeadLetter letter, CancellationToken cancellationToken);
}

/// <summary>The last <see cref="Capacity"/> dead letters of this relay, in memory (lost on restart).</summary>
public sealed class InMemoryDeadLetterStore : IDeadLetterStore
{
    /// <summary>How many it keeps by default.</summary>
    public const int DefaultCapacity = 1000;

    private readonly DeadLetter?[] _ring;
    private readonly Lock _gate = new();
    private long _added;

    /// <summary>Creates a store that keeps the last <paramref name="capacity"/> dead letters.</summary>
    public InMemoryDeadLetterStore(int capacity = DefaultCapacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _ring = new DeadLetter?[capacity];
    }

    /// <summary>How many it keeps.</summary>
    public int Capacity => _ring.Length;

    /// <summary>Dead letters added since the start, those no longer kept included.</summary>
    public long Count => Interlocked.Read(ref _added);

    /// <inheritdoc/>
    public ValueTask AddAsync(DeadLetter letter, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(letter);
        lock (_gate)
        {
            _ring[_added % _ring.Length] = letter;
            _added++;
        }

        return ValueTask.CompletedTask;
    }

    /// <summary>The newest dead letters first, of one subscription or (null) all, at most <paramref name="limit"/>.</summary>
    public IReadOnlyList<DeadLetter> List(string? subscriptionId, int limit)
    {
        var result = new List<DeadLetter>();
        lock (_gate)
        {
            for (var i = _added - 1; i >= 0 && i >= _added - _ring.Length && result.Count < limit; i--)
            {
                var letter = _ring[i % _ring.Length]!;
                if (subscriptionId is null || letter.SubscriptionId == subscriptionId)
                {
                    result.Add(letter);
                }
            }
        }

        return result;
    }
}
