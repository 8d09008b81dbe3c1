using System.Collections.Concurrent;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;

namespace SiteLink.Relay.Events;

/// <summary>
/// <c>connection.refused</c>, coalesced: refusals are counted per tenant, cloud endpoint and reason, and each count is
/// published at most once a second (a timer armed only while refusals come), so a flood of refused connections costs
/// one event per second and kind, carrying how many there were — not one per connection.
/// </summary>
internal sealed class RefusalEvents : IDisposable
{
    /// <summary>How often the counts are published.</summary>
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);

    private readonly IRelayEventSink _sink;
    private readonly TimeProvider _timeProvider;
    private readonly ITimer _flush;
    // Keys are the configured cloud endpoints times the refusal reasons: bounded by the configuration.
    private readonly ConcurrentDictionary<(CloudEndpointOptions Endpoint, RefusalReason Reason), Tally> _tallies = new();
    private int _armed;

    public RefusalEvents(IRelayEventSink sink, TimeProvider timeProvider)
    {
        _sink = sink;
        _timeProvider = timeProvider;
        _flush = timeProvider.CreateTimer(static state => ((RefusalEvents)state!).Flush(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    /// <summary>Counts one refused connection to <paramref name="endpoint"/>.</summary>
    public void OnRefused(CloudEndpointOptions endpoint, RefusalReason reason)
    {
        if (_sink is NullRelayEventSink)
        {
            return;
        }

        Interlocked.Increment(ref _tallies.GetOrAdd((endpoint, reason), static _ => new Tally()).Count);
        if (Interlocked.Exchange(ref _armed, 1) == 0)
        {
            _flush.Change(Interval, Timeout.InfiniteTimeSpan);
        }
    }

    private void Flush()
    {
        var published = false;
        var now = _timeProvider.GetUtcNow();
        foreach (var ((endpoint, reason), tally) in _tallies)
        {
            var count = Interlocked.Exchange(ref tally.Count, 0);
            if (count == 0)
            {
                continue;
            }

            published = true;
            _sink.Publish(new RelayEvent(RelayEventTypes.ConnectionRefused, endpoint.Tenant.ToLowerInvariant(), endpoint.Name, now, new Dictionary<string, object?>
            {
                ["cloudEndpoint"] = endpoint.Name,
                ["endpoint"] = endpoint.Endpoint,
                ["reason"] = RelayCounters.ReasonName(reason),
                ["count"] = count,
                ["intervalSeconds"] = Interval.TotalSeconds,
            }));
        }

        if (published)
        {
            // Refusals keep coming: the next counts a second from now.
            _flush.Change(Interval, Timeout.InfiniteTimeSpan);
            return;
        }

        // Quiet for a whole interval: disarm, unless a refusal slipped in since the counts were read.
        Interlocked.Exchange(ref _armed, 0);
        if (_tallies.Values.Any(t => Volatile.Read(ref t.Count) > 0) && Interlocked.Exchange(ref _armed, 1) == 0)
        {
            _flush.Change(Interval, Timeout.InfiniteTimeSpan);
        }
    }

    public void Dispose() => _flush.Dispose();

    private sealed class Tally
    {
        public long Count;
    }
}
