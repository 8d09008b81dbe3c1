using System.Globalization;
using System.Threading.Channels;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SiteLink.Internal;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;

namespace SiteLink.Relay.Events;

/// <summary>
/// The relay's <see cref="IRelayEventSink"/>: keeps the last <see cref="RecentCapacity"/> events for a dashboard
/// (<see cref="Recent"/>) and fans each out to the webhook subscriptions of its tenant (or of every tenant, <c>*</c>)
/// and type. Each subscription has a worker and a bounded queue (<see cref="RelayEventOptions.MaxQueuedPerSubscription"/>):
/// events are delivered one at a time, in order, with retries; what cannot be delivered — the queue is full, the
/// attempts ran out, the receiver refused it, the subscription was removed — goes to the <see cref="IDeadLetterStore"/>,
/// never silently away. <see cref="Publish"/> never blocks and never throws.
/// </summary>
public sealed class EventHub : IRelayEventSink, IHostedService, IAsyncDisposable
{
    /// <summary>How many recent events <see cref="Recent"/> can return.</summary>
    public const int RecentCapacity = 1000;

    /// <summary>
    /// Dead letters waiting for the store (a slow persistent one); more are counted (<c>store_behind</c>) and logged, not
    /// kept. Each holds its payload as text: at most 32 KiB, so the backlog is at most 32 MiB.
    /// </summary>
    internal const int DeadLetterBacklog = 1000;

    /// <summary>When the relay stops, how long queues may go without a delivery before the hub stops waiting for them.</summary>
    internal static readonly TimeSpan StopQuietPeriod = TimeSpan.FromSeconds(1);

    private readonly RelayEventOptions _options;
    private readonly string _relayId;
    private readonly IReadOnlyList<WebhookSubscription> _configured;
    private readonly IDeadLetterStore _store;
    private readonly EventCounters _counters;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly WebhookSender _sender;
    private readonly Lock _gate = new();
    private readonly Lock _recentGate = new();
    private readonly PublishedEvent?[] _recent = new PublishedEvent?[RecentCapacity];
    private readonly Channel<DeadLetter> _deadLetters = Channel.CreateBounded<DeadLetter>(new BoundedChannelOptions(DeadLetterBacklog) { SingleReader = true });
    private readonly Task _deadLetterWriter;
    private readonly LogSampler _attemptLog;
    private readonly LogSampler _deadLetterLog;
    private readonly LogSampler _storeLog;
    private readonly LogSampler _publishLog;
    private readonly LogSampler _suppressedLog;
    private readonly Security.TokenBuckets _budget;
    private volatile WebhookWorker[] _workers = [];
    private long _recentCount;
    private int _stopped;
    private int _disposed;

    internal EventHub(RelayEventOptions options, string relayId, IEnumerable<WebhookSubscription> configured, IDeadLetterStore store, EventCounters counters, TimeProvider timeProvider, ILogger<EventHub> logger, HttpMessageHandler? handler = null)
    {
        _options = options;
        _relayId = relayId;
        _store = store;
        _counters = counters;
        _timeProvider = timeProvider;
        _logger = logger;
        var second = TimeSpan.FromSeconds(1);
        LogSampler Sampler(string what) => new(timeProvider, second, (count, interval) => RelayLog.HeldBackSummary(logger, count, what, interval));
        _attemptLog = Sampler("failed webhook attempt(s)");
        _deadLetterLog = Sampler("dead-lettered webhook event(s)");
        _storeLog = Sampler("dead letter(s) not kept");
        _publishLog = Sampler("event(s) not published");
        _suppressedLog = Sampler("event(s) over their tenant's budget");
        _budget = new Security.TokenBuckets(options.TenantEventsPerSecond, options.TenantEventBurst, timeProvider);
        _sender = new WebhookSender(options, timeProvider, OnRetry, handler);
        _deadLetterWriter = Task.Run(WriteDeadLettersAsync);
        _configured = [.. configured];
        var problems = Problems(_configured, "Relay:Webhooks");
        if (problems.Count > 0)
        {
            throw new ArgumentException(string.Join(" ", problems), nameof(configured));
        }

        lock (_gate)
        {
            Apply(_configured);
        }
    }

    /// <summary>
    /// Reports an event: remembered for <see cref="Recent"/> and queued for every matching subscription (or
    /// dead-lettered where its queue is full). Returns at once; never throws.
    /// </summary>
    public void Publish(RelayEvent relayEvent)
    {
        try
        {
            ArgumentNullException.ThrowIfNull(relayEvent);
            if (!_budget.TryTake(relayEvent.Tenant))
            {
                _counters.OnSuppressed();
                if (_suppressedLog.ShouldLog(out var held))
                {
                    RelayLog.TenantOverEventBudget(_logger, Internal.SafeText.Clean(relayEvent.Tenant, Internal.SafeText.MaxIdLength), relayEvent.Type, held);
                }

                return;
            }

            var published = CloudEventFormat.Create(relayEvent, _relayId);
            _counters.OnPublished();
            lock (_recentGate)
            {
                _recent[_recentCount++ % RecentCapacity] = published;
            }

            foreach (var worker in _workers)
            {
                if (worker.Matches(published) && !worker.TryEnqueue(published))
                {
                    if (worker.ClosedReason is { } closed)
                    {
                        DeadLetter(worker.Subscription, published, closed, 0, Tag(closed));
                    }
                    else
                    {
                        _counters.OnQueueFull();
                        DeadLetter(worker.Subscription, published, DeadLetterReasons.QueueFull, 0, "queue_full");
                    }
                }
            }
        }
#pragma warning disable CA1031 // Publishing is called on the relay's connection paths: a bug here must not break them.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            if (_publishLog.ShouldLog(out var suppressed))
            {
                RelayLog.PublishFailed(_logger, relayEvent?.Type ?? "(null)", $"{ex.GetType().Name}: {ex.Message}", suppressed);
            }
        }
    }

    /// <summary>The newest events first, of one tenant or (null) every tenant, at most <paramref name="limit"/>.</summary>
    public IReadOnlyList<PublishedEvent> Recent(string? tenant, int limit)
    {
        var result = new List<PublishedEvent>();
        lock (_recentGate)
        {
            for (var i = _recentCount - 1; i >= 0 && i >= _recentCount - RecentCapacity && result.Count < limit; i--)
            {
                var published = _recent[i % RecentCapacity]!;
                if (tenant is null || string.Equals(published.Tenant, tenant, StringComparison.OrdinalIgnoreCase))
                {
                    result.Add(published);
                }
            }
        }

        return result;
    }

    /// <summary>
    /// Replaces the subscriptions set at runtime (those of <c>Relay:Webhooks</c> stay as configured): one with the id
    /// and version of a current one keeps its worker and queue; one whose version changed takes over the queue of its
    /// previous version (its events delivered in order with the new settings); one no longer listed stops, and what it
    /// still had queued is dead-lettered ("subscription removed"); a new one starts.
    /// </summary>
    /// <exception cref="ArgumentException">A subscription is invalid, an id is used twice or by a configured webhook, or there are more than <c>Relay:Events:MaxSubscriptions</c>; nothing changed.</exception>
    /// <exception cref="InvalidOperationException">The relay is stopping.</exception>
    public void SetSubscriptions(IEnumerable<WebhookSubscription> subscriptions)
    {
        ArgumentNullException.ThrowIfNull(subscriptions);
        IReadOnlyList<WebhookSubscription> all = [.. _configured, .. subscriptions];
        var problems = Problems(all, "subscriptions");
        if (problems.Count > 0)
        {
            throw new ArgumentException(string.Join(" ", problems), nameof(subscriptions));
        }

        lock (_gate)
        {
            if (Volatile.Read(ref _stopped) != 0)
            {
                throw new InvalidOperationException("The relay is stopping: webhook subscriptions can no longer change.");
            }

            Apply(all);
        }
    }

    /// <summary>Events waiting for a subscription (the one being delivered included); null when there is no such subscription.</summary>
    public int? Queued(string subscriptionId) => Array.Find(_workers, w => w.Subscription.Id == subscriptionId)?.Queued;

    /// <summary>Every problem of a subscription list, never quoting a secret.</summary>
    private List<string> Problems(IReadOnlyList<WebhookSubscription> subscriptions, string where)
    {
        var problems = new List<string>();
        var ids = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        for (var i = 0; i < subscriptions.Count; i++)
        {
            var subscription = subscriptions[i];
            if (subscription is null)
            {
                problems.Add($"{where}[{i.ToString(CultureInfo.InvariantCulture)}] is null.");
                continue;
            }

            var label = $"{where}[{i.ToString(CultureInfo.InvariantCulture)}]";
            problems.AddRange(WebhookRules.Problems(subscription.Id, subscription.Tenant, subscription.Url?.OriginalString, subscription.Secret, subscription.Events)
                .Select(problem => $"{label}:{problem}"));
            if (!string.IsNullOrEmpty(subscription.Id) && !ids.Add(subscription.Id))
            {
                problems.Add($"{label}: Id '{SafeText.Clean(subscription.Id, WebhookRules.MaxIdLength)}' is used by another subscription{(i >= _configured?.Count ? " (a runtime subscription cannot replace one of Relay:Webhooks)" : "")}.");
            }
        }

        if (subscriptions.Count > _options.MaxSubscriptions)
        {
            problems.Add($"{subscriptions.Count.ToString(CultureInfo.InvariantCulture)} subscriptions; Relay:Events:MaxSubscriptions allows {_options.MaxSubscriptions.ToString(CultureInfo.InvariantCulture)}.");
        }

        return problems;
    }

    /// <summary>Makes <paramref name="subscriptions"/> the running set. Under <see cref="_gate"/>.</summary>
    private void Apply(IReadOnlyList<WebhookSubscription> subscriptions)
    {
        var current = _workers.ToDictionary(w => w.Subscription.Id, StringComparer.OrdinalIgnoreCase);
        var next = new WebhookWorker[subscriptions.Count];
        int added = 0, changed = 0;
        for (var i = 0; i < subscriptions.Count; i++)
        {
            var subscription = subscriptions[i];
            if (current.Remove(subscription.Id, out var running) && running.Subscription.Id == subscription.Id && running.Subscription.Version == subscription.Version)
            {
                next[i] = running;
                continue;
            }

            WebhookWorker worker;
            if (running is not null)
            {
                // A new version: the old worker gives up its attempt in progress and the new one starts from that event.
                running.Stop();
                worker = new WebhookWorker(subscription, running.Queue);
                worker.Start(RunAsync, running.Completion);
                changed++;
            }
            else
            {
                worker = new WebhookWorker(subscription, WebhookWorker.NewQueue(_options.MaxQueuedPerSubscription));
                worker.Start(RunAsync, Task.CompletedTask);
                added++;
            }

            next[i] = worker;
        }

        _workers = next;
        foreach (var removed in current.Values)
        {
            _ = RetireAsync(removed, DeadLetterReasons.SubscriptionRemoved);
        }

        if (added + changed + current.Count > 0)
        {
            RelayLog.WebhooksChanged(_logger, next.Length, added, changed, current.Count, string.Join("; ", next.Select(w => w.Subscription.ToString())));
        }
    }

    /// <summary>Stops a worker for good and dead-letters what it still had queued.</summary>
    private async Task RetireAsync(WebhookWorker worker, string reason)
    {
        worker.Close(reason);
        worker.Stop();
        await worker.Completion.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        while (worker.Queue.Reader.TryRead(out var left))
        {
            DeadLetter(worker.Subscription, left, reason, 0, Tag(reason));
        }
    }

    /// <summary>A subscription's delivery loop: the head of the queue until it is delivered or given up, then the next.</summary>
    private async Task RunAsync(WebhookWorker worker)
    {
        var reader = worker.Queue.Reader;
        var stopping = worker.Stopping;
        try
        {
            while (await reader.WaitToReadAsync(stopping).ConfigureAwait(false))
            {
                while (reader.TryPeek(out var head))
                {
                    var outcome = await _sender.DeliverAsync(worker.Subscription, head, stopping).ConfigureAwait(false);
                    reader.TryRead(out _);
                    if (outcome.Delivered)
                    {
                        _counters.OnDelivered();
                    }
                    else
                    {
                        DeadLetter(worker.Subscription, head, outcome.Error, outcome.Attempts, outcome.Rejected ? "rejected" : "attempts_exhausted");
                    }
                }
            }
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
            // Stopped: the head, if any, stays queued for the next version of the subscription, or is dead-lettered.
        }
    }

    private void OnRetry(WebhookSubscription subscription, PublishedEvent published, int attempt, string error, TimeSpan delay)
    {
        _counters.OnRetried();
        if (_attemptLog.ShouldLog(out var suppressed))
        {
            RelayLog.WebhookAttemptFailed(_logger, subscription.Id, WebhookRules.Describe(subscription.Url), attempt, published.Type, published.Id, error, delay, suppressed);
        }
    }

    private void DeadLetter(WebhookSubscription subscription, PublishedEvent published, string error, int attempts, string tag)
    {
        var letter = new DeadLetter(subscription.Id, published.Tenant, published.Id, published.Type, published.Json, error, attempts, _timeProvider.GetUtcNow());
        if (!_deadLetters.Writer.TryWrite(letter))
        {
            if (Volatile.Read(ref _stopped) != 0)
            {
                // After the relay stopped: counted, not kept (the writer is done).
                _counters.OnDeadLettered(tag);
                return;
            }

            _counters.OnDeadLettered("store_behind");
            if (_storeLog.ShouldLog(out var held))
            {
                RelayLog.DeadLetterStoreBehind(_logger, subscription.Id, error, _deadLetters.Reader.Count, held);
            }

            return;
        }

        _counters.OnDeadLettered(tag);
        if (attempts > 0 && _deadLetterLog.ShouldLog(out var suppressed))
        {
            RelayLog.WebhookDeadLettered(_logger, subscription.Id, published.Type, published.Id, attempts, error, suppressed);
        }
    }

    /// <summary>The metric's reason for a dead letter that was never (fully) tried.</summary>
    private static string Tag(string reason) => reason switch
    {
        DeadLetterReasons.QueueFull => "queue_full",
        DeadLetterReasons.SubscriptionRemoved => "subscription_removed",
        _ => "relay_stopped",
    };

    /// <summary>Hands dead letters to the store one at a time, so a slow store delays only this loop.</summary>
    private async Task WriteDeadLettersAsync()
    {
        await foreach (var letter in _deadLetters.Reader.ReadAllAsync().ConfigureAwait(false))
        {
            try
            {
                await _store.AddAsync(letter, CancellationToken.None).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // A failing store loses that letter (logged), not the ones after it.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                if (_storeLog.ShouldLog(out var suppressed))
                {
                    RelayLog.DeadLetterStoreFailed(_logger, letter.SubscriptionId, $"{ex.GetType().Name}: {SafeText.Clean(ex.Message)}", suppressed);
                }
            }
        }
    }

    /// <inheritdoc/>
    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// Stops delivering: while queues still hold events and receivers take them (a delivery at least every
    /// <see cref="StopQuietPeriod"/>), waits for them — the disconnects of a relay that drains its agents reach their
    /// receivers; then stops every worker, dead-letters what is left ("relay stopped") and lets the store take it.
    /// </summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _stopped, 1) != 0)
        {
            return;
        }

        try
        {
            var delivered = _counters.Delivered;
            var quietSince = _timeProvider.GetTimestamp();
            while (Array.Exists(_workers, w => w.Queued > 0) && _timeProvider.GetElapsedTime(quietSince) < StopQuietPeriod)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(20), _timeProvider, cancellationToken).ConfigureAwait(false);
                if (_counters.Delivered != delivered)
                {
                    (delivered, quietSince) = (_counters.Delivered, _timeProvider.GetTimestamp());
                }
            }
        }
        catch (OperationCanceledException)
        {
            // The host's shutdown timeout: stop now.
        }

        WebhookWorker[] workers;
        lock (_gate)
        {
            workers = _workers;
        }

        await Task.WhenAll(workers.Select(w => RetireAsync(w, DeadLetterReasons.RelayStopped))).WaitAsync(cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        _deadLetters.Writer.TryComplete();
        await _deadLetterWriter.WaitAsync(cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
    }

    /// <summary>Stops (for at most 5 seconds, when <see cref="StopAsync"/> was not called) and releases the HTTP client.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5)))
        {
            await StopAsync(timeout.Token).ConfigureAwait(false);
        }

        _sender.Dispose();
        _attemptLog.Dispose();
        _deadLetterLog.Dispose();
        _storeLog.Dispose();
        _publishLog.Dispose();
    }
}
