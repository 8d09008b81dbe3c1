using Microsoft.Extensions.Logging;

namespace SiteLink.Relay.Diagnostics;

/// <summary>The event hub's and webhooks' log messages (ids 60-69). Never a webhook's secret, path or query.</summary>
internal static partial class RelayLog
{
    [LoggerMessage(60, LogLevel.Information, "Webhooks: {Count} subscription(s) ({Added} added, {Changed} changed, {Removed} removed): {Subscriptions}.")]
    public static partial void WebhooksChanged(ILogger logger, int count, int added, int changed, int removed, string subscriptions);

    [LoggerMessage(61, LogLevel.Warning, "Webhook {SubscriptionId} ({Receiver}): attempt {Attempt} to deliver {EventType} {EventId} failed: {Error}; retrying in {Delay}. ({Suppressed} more since the last such message.)")]
    public static partial void WebhookAttemptFailed(ILogger logger, string subscriptionId, string receiver, int attempt, string eventType, string eventId, string error, TimeSpan delay, long suppressed);

    [LoggerMessage(62, LogLevel.Warning, "Webhook {SubscriptionId}: gave up {EventType} {EventId} after {Attempts} attempt(s): {Error}; dead-lettered. ({Suppressed} more since the last such message.)")]
    public static partial void WebhookDeadLettered(ILogger logger, string subscriptionId, string eventType, string eventId, int attempts, string error, long suppressed);

    [LoggerMessage(63, LogLevel.Error, "Webhooks: the dead-letter store failed ({Error}); a dead letter of {SubscriptionId} was not kept. ({Suppressed} more since the last such message.)")]
    public static partial void DeadLetterStoreFailed(ILogger logger, string subscriptionId, string error, long suppressed);

    [LoggerMessage(64, LogLevel.Error, "Webhooks: the dead-letter store is {Behind} letters behind; a dead letter of {SubscriptionId} ({Reason}) was counted but not kept. ({Suppressed} more since the last such message.)")]
    public static partial void DeadLetterStoreBehind(ILogger logger, string subscriptionId, string reason, int behind, long suppressed);

    [LoggerMessage(66, LogLevel.Warning, "Relay events: tenant '{Tenant}' publishes more events than Relay:Events:TenantEventsPerSecond allows (its agents bind, unbind or reconnect in a loop?); a {EventType} event was not published. ({Suppressed} more since the last such message.)")]
    public static partial void TenantOverEventBudget(ILogger logger, string tenant, string eventType, long suppressed);

    [LoggerMessage(65, LogLevel.Error, "Relay events: publishing a {EventType} event failed: {Error}. ({Suppressed} more since the last such message.)")]
    public static partial void PublishFailed(ILogger logger, string eventType, string error, long suppressed);
}
