using System.Globalization;
using System.Net.Http.Headers;
using Polly;
using Polly.Retry;
using Polly.Timeout;
using SiteLink.Internal;
using SiteLink.Relay.Configuration;

namespace SiteLink.Relay.Events;

/// <summary>What became of one event for one subscription.</summary>
/// <param name="Delivered">The receiver answered 2xx.</param>
/// <param name="Attempts">Attempts made.</param>
/// <param name="Error">Why it was not delivered (the last attempt's error); empty when delivered.</param>
/// <param name="Rejected">The receiver refused it for good (a 4xx other than 408 and 429, or a redirect): not retried.</param>
internal readonly record struct DeliveryOutcome(bool Delivered, int Attempts, string Error, bool Rejected);

/// <summary>
/// POSTs events to webhooks: one <see cref="HttpClient"/> for every subscription (no redirects, no cookies, a connect
/// timeout, small response limits), each attempt signed and bounded by <see cref="RelayEventOptions.AttemptTimeout"/>,
/// retried by a Polly pipeline (exponential backoff with jitter on the relay's <see cref="TimeProvider"/>) on connection
/// errors, timeouts, 408, 429 and 5xx.
/// </summary>
internal sealed class WebhookSender : IDisposable
{
    /// <summary>What is read of a failed answer's body, for the error of a dead letter.</summary>
    private const int MaxErrorBodyBytes = 256;

    private static readonly ResiliencePropertyKey<Delivery> DeliveryKey = new("sitelink.webhook.delivery");

    private readonly HttpClient _http;
    private readonly ResiliencePipeline<AttemptResult> _pipeline;
    private readonly TimeProvider _timeProvider;
    private readonly RelayEventOptions _options;

    /// <param name="options">Attempts, delays and timeouts.</param>
    /// <param name="timeProvider">The clock of retry delays, timeouts and signature timestamps.</param>
    /// <param name="onRetry">Told of each failed attempt that will be retried: subscription, event, attempt, error, delay.</param>
    /// <param name="handler">The HTTP handler (tests); by default a <see cref="SocketsHttpHandler"/> set up for webhooks.</param>
    public WebhookSender(RelayEventOptions options, TimeProvider timeProvider, Action<WebhookSubscription, PublishedEvent, int, string, TimeSpan> onRetry, HttpMessageHandler? handler = null)
    {
        _options = options;
        _timeProvider = timeProvider;
        _http = new HttpClient(handler ?? CreateHandler(options), disposeHandler: true) { Timeout = Timeout.InfiniteTimeSpan };
        _http.DefaultRequestHeaders.UserAgent.Add(new ProductInfoHeaderValue("SiteLink-Relay", "1"));
        var builder = new ResiliencePipelineBuilder<AttemptResult> { TimeProvider = timeProvider };
        if (options.MaxAttempts > 1)
        {
            var maxDelay = options.RetryMaxDelay;
            builder.AddRetry(new RetryStrategyOptions<AttemptResult>
            {
                MaxRetryAttempts = options.MaxAttempts - 1,
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = options.RetryBaseDelay,
                MaxDelay = maxDelay,
                ShouldHandle = static args => ValueTask.FromResult(IsRetryable(args.Outcome, args.Context.CancellationToken)),
                // A receiver that says when to come back (429, 503) is believed, within RetryMaxDelay.
                DelayGenerator = args => ValueTask.FromResult(args.Outcome.Result?.RetryAfter is { } after ? (TimeSpan?)(after < maxDelay ? after : maxDelay) : null),
                OnRetry = args =>
                {
                    var delivery = args.Context.Properties.GetValue(DeliveryKey, null!);
                    onRetry(delivery.Subscription, delivery.Event, delivery.Attempts, Describe(args.Outcome), args.RetryDelay);
                    return default;
                },
            });
        }

        builder.AddTimeout(options.AttemptTimeout);
        _pipeline = builder.Build();
    }

    private static SocketsHttpHandler CreateHandler(RelayEventOptions options) => new()
    {
        ConnectTimeout = options.AttemptTimeout < TimeSpan.FromSeconds(10) ? options.AttemptTimeout : TimeSpan.FromSeconds(10),
        // A redirect is a receiver's configuration problem to fix, not a place to send signed events to.
        AllowAutoRedirect = false,
        UseCookies = false,
        AutomaticDecompression = System.Net.DecompressionMethods.None,
        // DNS changes of a receiver are picked up within minutes.
        PooledConnectionLifetime = TimeSpan.FromMinutes(5),
        PooledConnectionIdleTimeout = TimeSpan.FromMinutes(1),
        // Receivers answer with a status; what they send besides is not read beyond these.
        MaxResponseHeadersLength = 16,
        MaxResponseDrainSize = 16 * 1024,
        ResponseDrainTimeout = TimeSpan.FromSeconds(1),
    };

    /// <summary>
    /// Delivers one event, retrying as configured. Throws <see cref="OperationCanceledException"/> when
    /// <paramref name="cancellationToken"/> stops it (the event is then still the subscription's to deliver).
    /// </summary>
    public async Task<DeliveryOutcome> DeliverAsync(WebhookSubscription subscription, PublishedEvent published, CancellationToken cancellationToken)
    {
        var delivery = new Delivery(this, subscription, published);
        var context = ResilienceContextPool.Shared.Get(cancellationToken);
        context.Properties.Set(DeliveryKey, delivery);
        try
        {
            var outcome = await _pipeline.ExecuteOutcomeAsync(static (context, delivery) => delivery.Sender.AttemptAsync(delivery, context.CancellationToken), context, delivery).ConfigureAwait(false);
            cancellationToken.ThrowIfCancellationRequested();
            return outcome.Result is { Success: true }
                ? new DeliveryOutcome(true, delivery.Attempts, "", false)
                : new DeliveryOutcome(false, delivery.Attempts, Describe(outcome), outcome.Result is { Retryable: false });
        }
        finally
        {
            ResilienceContextPool.Shared.Return(context);
        }
    }

    private async ValueTask<Outcome<AttemptResult>> AttemptAsync(Delivery delivery, CancellationToken cancellationToken)
    {
        var attempt = ++delivery.Attempts;
        try
        {
            var body = delivery.Event.Body;
            using var request = new HttpRequestMessage(HttpMethod.Post, delivery.Subscription.Url) { Content = new ByteArrayContent(body) };
            request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(CloudEventFormat.ContentType);
            // Signed at each attempt: the timestamp is when it was sent, for the receiver's replay window.
            request.Headers.TryAddWithoutValidation(WebhookHeaders.Signature, CloudEventFormat.Sign(delivery.Subscription.Secret, _timeProvider.GetUtcNow().ToUnixTimeSeconds(), body));
            request.Headers.TryAddWithoutValidation(WebhookHeaders.EventId, delivery.Event.Id);
            request.Headers.TryAddWithoutValidation(WebhookHeaders.DeliveryAttempt, attempt.ToString(CultureInfo.InvariantCulture));
            request.Headers.TryAddWithoutValidation(WebhookHeaders.SubscriptionId, delivery.Subscription.Id);
            using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
            var status = (int)response.StatusCode;
            if (status is >= 200 and < 300)
            {
                return Outcome.FromResult(AttemptResult.Delivered);
            }

            var error = $"HTTP {status.ToString(CultureInfo.InvariantCulture)} ({SafeText.Clean(response.ReasonPhrase, SafeText.MaxIdLength)}){await ReadErrorAsync(response, cancellationToken).ConfigureAwait(false)}";
            return Outcome.FromResult(new AttemptResult(false, status is 408 or 429 or >= 500, error, RetryAfter(response)));
        }
#pragma warning disable CA1031 // Every failure of an attempt is its outcome, for the pipeline to retry or give up.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            return Outcome.FromException<AttemptResult>(ex);
        }
    }

    /// <summary>The start of a failed answer's body, as a hint for whoever reads the dead letter.</summary>
    private static async Task<string> ReadErrorAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        var buffer = new byte[MaxErrorBodyBytes];
        var filled = 0;
        var stream = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        await using (stream.ConfigureAwait(false))
        {
            int read;
            while (filled < buffer.Length && (read = await stream.ReadAsync(buffer.AsMemory(filled), cancellationToken).ConfigureAwait(false)) > 0)
            {
                filled += read;
            }
        }

        var text = SafeText.Clean(System.Text.Encoding.UTF8.GetString(buffer, 0, filled).Trim(), SafeText.MaxMessageLength);
        return text.Length == 0 ? "" : $": {text}";
    }

    private TimeSpan? RetryAfter(HttpResponseMessage response) => response.Headers.RetryAfter switch
    {
        { Delta: { } delta } => delta,
        { Date: { } date } => date - _timeProvider.GetUtcNow() is var wait && wait > TimeSpan.Zero ? wait : TimeSpan.Zero,
        _ => null,
    };

    private static bool IsRetryable(Outcome<AttemptResult> outcome, CancellationToken stopping) => outcome switch
    {
        { Result: { } result } => result.Retryable,
        { Exception: HttpRequestException or TimeoutRejectedException or IOException } => true,
        // The attempt's own cancellation (e.g. the connection was reset), not the worker stopping.
        { Exception: OperationCanceledException } => !stopping.IsCancellationRequested,
        _ => false,
    };

    /// <summary>An attempt's error for logs and dead letters: the status, or what failed; never the URL's path or query.</summary>
    private string Describe(Outcome<AttemptResult> outcome) => outcome switch
    {
        { Result: { } result } => result.Error,
        { Exception: TimeoutRejectedException } => $"no answer within {_options.AttemptTimeout} (Relay:Events:AttemptTimeout)",
        { Exception: HttpRequestException http } => $"{http.HttpRequestError}: {SafeText.Clean(http.Message)}",
        { Exception: { } ex } => $"{ex.GetType().Name}: {SafeText.Clean(ex.Message)}",
        _ => "unknown",
    };

    public void Dispose() => _http.Dispose();

    /// <summary>One event on its way to one subscription.</summary>
    private sealed class Delivery(WebhookSender sender, WebhookSubscription subscription, PublishedEvent published)
    {
        public WebhookSender Sender { get; } = sender;

        public WebhookSubscription Subscription { get; } = subscription;

        public PublishedEvent Event { get; } = published;

        public int Attempts { get; set; }
    }
}

/// <summary>One attempt's answer.</summary>
internal sealed record AttemptResult(bool Success, bool Retryable, string Error, TimeSpan? RetryAfter)
{
    public static readonly AttemptResult Delivered = new(true, false, "", null);
}

/// <summary>The headers of a delivery besides the CloudEvents body.</summary>
public static class WebhookHeaders
{
    /// <summary><c>t=&lt;unix seconds&gt;,v1=&lt;hex HMAC-SHA256(secret, "&lt;t&gt;.&lt;body&gt;")&gt;</c>.</summary>
    public const string Signature = "SiteLink-Signature";

    /// <summary>The event's id (the CloudEvents <c>id</c>): the same on every attempt, for deduplication.</summary>
    public const string EventId = "SiteLink-Event-Id";

    /// <summary>1 for the first attempt, 2 for the first retry, ….</summary>
    public const string DeliveryAttempt = "SiteLink-Delivery-Attempt";

    /// <summary>The subscription the delivery is for.</summary>
    public const string SubscriptionId = "SiteLink-Subscription-Id";
}
