using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using SiteLink.Relay.Diagnostics;

namespace SiteLink.Relay.Events;

/// <summary>
/// Running totals of webhook deliveries (for tests and the startup report), published as metrics on the
/// <c>SiteLink.Relay</c> meter (<see cref="RelayCounters.MeterName"/>).
/// </summary>
public sealed class EventCounters
{
    private readonly Counter<long> _delivered;
    private readonly Counter<long> _retried;
    private readonly Counter<long> _deadLettered;
    private readonly Counter<long> _queueFull;
    private readonly Counter<long> _suppressed;
    private long _suppressedTotal;
    private readonly ConcurrentDictionary<string, long> _deadLetterReasons = new(StringComparer.Ordinal);
    private long _deliveredTotal;
    private long _retriedTotal;
    private long _queueFullTotal;
    private long _published;

    /// <summary>Creates the counters and their instruments on a meter from <paramref name="meterFactory"/> (or a process-wide meter).</summary>
    public EventCounters(IMeterFactory? meterFactory = null)
    {
        var meter = meterFactory?.Create(RelayCounters.MeterName) ?? new Meter(RelayCounters.MeterName);
        _delivered = meter.CreateCounter<long>("sitelink.relay.webhook.deliveries", "{event}", "Events delivered to a webhook (a 2xx answer).");
        _retried = meter.CreateCounter<long>("sitelink.relay.webhook.retries", "{attempt}", "Webhook delivery attempts that failed and were retried.");
        _deadLettered = meter.CreateCounter<long>("sitelink.relay.webhook.dead_letters", "{event}", "Events given up for a webhook, by sitelink.reason (attempts_exhausted, rejected, queue_full, subscription_removed, relay_stopped, store_behind).");
        _suppressed = meter.CreateCounter<long>("sitelink.relay.events.suppressed", "{event}", "Events not published because their tenant was over Relay:Events:TenantEventsPerSecond.");
        _queueFull = meter.CreateCounter<long>("sitelink.relay.webhook.queue_full", "{event}", "Events that found a webhook's queue full (Relay:Events:MaxQueuedPerSubscription); each is dead-lettered.");
    }

    /// <summary>Events published by the relay's components.</summary>
    public long Published => Interlocked.Read(ref _published);

    /// <summary>Events delivered to webhooks (one per subscription that received it).</summary>
    public long Delivered => Interlocked.Read(ref _deliveredTotal);

    /// <summary>Failed attempts that were retried.</summary>
    public long Retried => Interlocked.Read(ref _retriedTotal);

    /// <summary>Events that found a subscription's queue full.</summary>
    public long QueueFull => Interlocked.Read(ref _queueFullTotal);

    /// <summary>Events dead-lettered for <paramref name="reason"/> (the metric's <c>sitelink.reason</c> values).</summary>
    public long DeadLettered(string reason) => _deadLetterReasons.TryGetValue(reason, out var count) ? count : 0;

    /// <summary>Events dead-lettered for any reason.</summary>
    public long DeadLetteredTotal => _deadLetterReasons.Values.Sum();

    internal void OnPublished() => Interlocked.Increment(ref _published);

    internal void OnDelivered()
    {
        Interlocked.Increment(ref _deliveredTotal);
        _delivered.Add(1);
    }

    internal void OnRetried()
    {
        Interlocked.Increment(ref _retriedTotal);
        _retried.Add(1);
    }

    /// <summary>Events not published because their tenant was over its budget.</summary>
    public long Suppressed => Interlocked.Read(ref _suppressedTotal);

    internal void OnSuppressed()
    {
        Interlocked.Increment(ref _suppressedTotal);
        _suppressed.Add(1);
    }

    internal void OnQueueFull()
    {
        Interlocked.Increment(ref _queueFullTotal);
        _queueFull.Add(1);
    }

    internal void OnDeadLettered(string reason)
    {
        _deadLetterReasons.AddOrUpdate(reason, 1, static (_, count) => count + 1);
        _deadLettered.Add(1, new KeyValuePair<string, object?>("sitelink.reason", reason));
    }
}
