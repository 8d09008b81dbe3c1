namespace SiteLink.Relay.Configuration;

/// <summary>
/// How the relay delivers its events to webhooks (<c>Relay:Events</c>; docs/operations.md, "Events and webhooks").
/// Every bound here is also a bound on memory: docs/architecture.md, "Limits and worst cases".
/// </summary>
public sealed class RelayEventOptions
{
    /// <summary>
    /// Events waiting for one subscription (the one being delivered included). An event that finds the queue full is
    /// dead-lettered with the reason "queue full", so a receiver that is down or slow cannot grow the relay's memory.
    /// Default: 1000.
    /// </summary>
    public int MaxQueuedPerSubscription { get; set; } = 1000;

    /// <summary>
    /// Delivery attempts per event, the first included; after the last failed one the event is dead-lettered.
    /// Default: 8.
    /// </summary>
    public int MaxAttempts { get; set; } = 8;

    /// <summary>The delay before the first retry; each next one doubles, with jitter. Default: 1 second.</summary>
    public TimeSpan RetryBaseDelay { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>The longest delay between two attempts (a receiver's <c>Retry-After</c> included). Default: 5 minutes.</summary>
    public TimeSpan RetryMaxDelay { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// How long one attempt may take, from connecting to the receiver's response headers; a slower one counts as
    /// failed and is retried. Default: 10 seconds.
    /// </summary>
    public TimeSpan AttemptTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Subscriptions the relay delivers to at once: <c>Relay:Webhooks</c> and those added at runtime together. Default: 100.</summary>
    public int MaxSubscriptions { get; set; } = 100;

    /// <summary>
    /// Events one tenant may publish per second, sustained (a token bucket; <see cref="TenantEventBurst"/> at once). Its
    /// agents cause most of them (sessions, binds), so an agent looping bind and unbind could otherwise fill the queues
    /// of vendor-wide (<c>*</c>) subscriptions and the recent-events log that every tenant shares. Events past the budget
    /// are not published: they are counted (<c>sitelink.relay.events.suppressed</c>) and logged, one line a second.
    /// Default: 100.
    /// </summary>
    public double TenantEventsPerSecond { get; set; } = 100;

    /// <summary>Events one tenant may publish at once before <see cref="TenantEventsPerSecond"/> applies. Default: 1,000.</summary>
    public int TenantEventBurst { get; set; } = 1000;
}

/// <summary>
/// A webhook configured in <c>Relay:Webhooks</c>: where the relay POSTs which events of which tenant. Subscriptions
/// can also be set while the relay runs (<see cref="Events.EventHub.SetSubscriptions"/>).
/// </summary>
public sealed class WebhookOptions
{
    /// <summary>A unique id: 1 to 64 letters, digits, '-', '_', '.' or ':'. Required.</summary>
    public string Id { get; set; } = "";

    /// <summary>The tenant whose events it receives, or <c>*</c> for every tenant's (vendor-wide). Required.</summary>
    public string Tenant { get; set; } = "";

    /// <summary>The receiver: an absolute http or https URL. Required.</summary>
    public string Url { get; set; } = "";

    /// <summary>The key of the HMAC-SHA256 signature of every delivery (at least 16 characters). Never logged.</summary>
    public string? Secret { get; set; }

    /// <summary>The event types it receives (<see cref="Events.RelayEventTypes.All"/>). At least one.</summary>
    public IList<string> Events { get; } = [];

    /// <summary>A copy without <see cref="Secret"/>, for the relay's options to keep (the event hub keeps the secret).</summary>
    internal WebhookOptions WithoutSecret()
    {
        var copy = new WebhookOptions { Id = Id, Tenant = Tenant, Url = Url };
        foreach (var type in Events)
        {
            copy.Events.Add(type);
        }

        return copy;
    }
}
