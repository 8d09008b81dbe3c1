using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Events;

namespace SiteLink.FunctionalTests;

/// <summary>
/// Issue 15: the relay's events reach a vendor's webhook — a real Kestrel receiver on loopback that verifies every
/// signature — in order, retried while it is down, dead-lettered when it never comes back, bounded when it hangs.
/// </summary>
[TestFixture]
[Category("Events")]
public sealed class EventTests
{
    /// <summary>Retries in milliseconds instead of seconds, so a receiver that comes back gets its events at once.</summary>
    private static void FastRetries(RelayOptions options, int maxAttempts = 100)
    {
        options.Events.MaxAttempts = maxAttempts;
        options.Events.RetryBaseDelay = TimeSpan.FromMilliseconds(20);
        options.Events.RetryMaxDelay = TimeSpan.FromMilliseconds(200);
    }

    /// <summary>A relay (with these cloud endpoints, forwarding to acme) that delivers its events to <paramref name="webhook"/>.</summary>
    private static Task<TestRelay> RelayAsync(WebhookOptions webhook, Action<RelayOptions>? configure = null, params string[] cloudEndpoints) =>
        TestRelay.StartAsync(cloudEndpoints, o =>
        {
            o.Webhooks.Add(webhook);
            configure?.Invoke(o);
        });

    /// <summary>An agent of the relay whose connection goes through <paramref name="proxy"/>.</summary>
    private static Task<ITunnelSession> ConnectThroughAsync(TestRelay relay, FaultProxy proxy, Action<TunnelSessionOptions> configure) =>
        relay.ConnectAgentAsync(configure: o =>
        {
            o.RelayUrl = new Uri($"https://127.0.0.1:{proxy.Port}");
            configure(o);
        });

    private static EventHub Hub(TestRelay relay) => relay.Server.Services.GetRequiredService<EventHub>();

    private static EventCounters Counters(TestRelay relay) => relay.Server.Services.GetRequiredService<EventCounters>();

    private static InMemoryDeadLetterStore DeadLetters(TestRelay relay) => (InMemoryDeadLetterStore)relay.Server.Services.GetRequiredService<IDeadLetterStore>();

    /// <summary>Every delivery is signed and a well-formed CloudEvent of this relay.</summary>
    private static void AssertCloudEvents(IEnumerable<ReceivedEvent> received)
    {
        foreach (var e in received)
        {
            Assert.Multiple(() =>
            {
                Assert.That(e.SignatureValid, Is.True, $"{e.Type} {e.Id}: the signature verifies");
                Assert.That(e.Headers["Content-Type"], Is.EqualTo("application/cloudevents+json; charset=utf-8"));
                Assert.That(e.Headers["SiteLink-Event-Id"], Is.EqualTo(e.Id));
                Assert.That(e.Root.GetProperty("specversion").GetString(), Is.EqualTo("1.0"));
                Assert.That(e.Root.GetProperty("source").GetString(), Is.EqualTo("sitelink://relay/test-relay"));
                Assert.That(e.Root.GetProperty("datacontenttype").GetString(), Is.EqualTo("application/json"));
                Assert.That(e.Id, Does.StartWith("evt_"));
                Assert.That(e.DataString("tenant"), Is.EqualTo(e.Tenant));
                Assert.That(DateTimeOffset.Parse(e.Root.GetProperty("time").GetString()!, CultureInfo.InvariantCulture), Is.EqualTo(DateTimeOffset.UtcNow).Within(TimeSpan.FromMinutes(2)));
            });
        }
    }

    [Test]
    public async Task AgentConnectsBindsAndLeaves_TheReceiverGetsConnectedBoundUnboundDisconnected_InOrder_Signed()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        await using var relay = await RelayAsync(receiver.Webhook());
        await using var upstream = TestUpstream.Echo();
        var session = await TunnelSession.ConnectAsync(relay.AgentOptions()).DefaultTimeout();
        var sessionId = session.SessionId;
        await session.ForwardAsync("db", upstream.Uri).DefaultTimeout();
        await session.DisposeAsync().DefaultTimeout();

        await Eventually.WaitUntilAsync(() => receiver.DeliveredOf(RelayEventTypes.SessionDisconnected).Count == 1, "session.disconnected delivered");
        var delivered = receiver.Delivered;
        Assert.That(delivered.Select(e => e.Type), Is.EqualTo(new[] { "session.connected", "endpoint.bound", "endpoint.unbound", "session.disconnected" }));
        AssertCloudEvents(delivered);
        var (connected, bound, unbound, disconnected) = (delivered[0], delivered[1], delivered[2], delivered[3]);
        TestContext.Out.WriteLine($"body sizes: {string.Join(", ", delivered.Select(e => $"{e.Type} {e.Body.Length} B"))}; the disconnect: {disconnected.DataString("code")}");
        Assert.Multiple(() =>
        {
            Assert.That(delivered.Select(e => e.Tenant), Is.All.EqualTo("acme"));
            Assert.That(delivered.Select(e => e.Attempt), Is.All.EqualTo(1));
            Assert.That(connected.Subject, Is.EqualTo(sessionId));
            Assert.That(connected.DataString("sessionId"), Is.EqualTo(sessionId));
            Assert.That(connected.DataString("clientId"), Is.EqualTo("test-agent"));
            Assert.That(connected.DataString("tokenName"), Is.EqualTo("acme"));
            Assert.That(connected.DataString("remoteAddress"), Is.EqualTo("127.0.0.1"));
            Assert.That(connected.DataString("relayId"), Is.EqualTo("test-relay"));
            Assert.That(connected.DataString("sdkVersion"), Is.Not.Empty);
            Assert.That(connected.Data.GetProperty("metadata").ValueKind, Is.EqualTo(JsonValueKind.Object));
            Assert.That((bound.Subject, bound.DataString("endpoint"), bound.DataString("sessionId"), bound.DataString("kind")), Is.EqualTo(("db", "db", sessionId, "tcp")));
            Assert.That(bound.Data.GetProperty("pooling").GetBoolean(), Is.False);
            Assert.That((unbound.Subject, unbound.DataString("sessionId")), Is.EqualTo(("db", sessionId)));
            Assert.That(disconnected.DataString("sessionId"), Is.EqualTo(sessionId));
            // A clean close is reported as one (the SDK lets the relay end the call before resetting it), never as a lost connection.
            Assert.That((disconnected.DataString("code"), disconnected.DataString("reason")), Is.EqualTo(("agent_closed", "the agent closed the control stream")));
            Assert.That(disconnected.Data.GetProperty("durationSeconds").GetDouble(), Is.GreaterThan(0));
            Assert.That(delivered.Select(e => e.Id).Distinct().Count(), Is.EqualTo(4));
            Assert.That(relay.Logs.Entries.Select(l => l.Message), Has.None.Contains(WebhookReceiver.Secret), "the secret is never logged");
            Assert.That(relay.Logs.Entries.Select(l => l.Message), Has.None.Contains("not-logged"), "nor the URL's query");
        });
    }

    [Test]
    public async Task ReceiverAnswers503ThenIsGone_WhenItComesBack_EveryQueuedEventIsDeliveredInOrder_NoneLost()
    {
        var receiver = await WebhookReceiver.StartAsync();
        var port = receiver.Port;
        receiver.Answer = _ => 503;
        await using var relay = await RelayAsync(receiver.Webhook(), o => FastRetries(o));
        await using var upstream = TestUpstream.Echo();

        // Events while the receiver answers 503, then while nothing listens on its port.
        var session = await TunnelSession.ConnectAsync(relay.AgentOptions()).DefaultTimeout();
        await session.ForwardAsync("e0", upstream.Uri).DefaultTimeout();
        await Eventually.WaitUntilAsync(() => receiver.Requests.Count >= 3, "503s retried");
        await receiver.DisposeAsync();
        var retriedBefore = Counters(relay).Retried;
        for (var i = 1; i < 10; i++)
        {
            await session.ForwardAsync($"e{i}", upstream.Uri).DefaultTimeout();
        }

        await session.DisposeAsync().DefaultTimeout();
        await Eventually.WaitUntilAsync(() => Counters(relay).Retried >= retriedBefore + 3, "connection failures retried");
        await Eventually.WaitUntilAsync(() => Hub(relay).Queued("vendor") == 1 + 10 + 10 + 1, "everything waits in the queue: connected, 10 bound, 10 unbound, disconnected");

        await using var back = await WebhookReceiver.StartAsync(port);
        await Eventually.WaitUntilAsync(() => back.DeliveredOf(RelayEventTypes.SessionDisconnected).Count == 1, "the queue drained into the receiver");

        var published = Hub(relay).Recent("acme", 100).Reverse().Select(e => e.Id).ToArray();
        Assert.Multiple(() =>
        {
            Assert.That(published, Has.Length.EqualTo(22));
            Assert.That(back.Delivered.Select(e => e.Id), Is.EqualTo(published), "every event, once, in the order published");
            Assert.That(back.Delivered[0].Attempt, Is.GreaterThan(3), "the head had been tried before");
            Assert.That(Counters(relay).DeadLetteredTotal, Is.Zero);
            Assert.That(Hub(relay).Queued("vendor"), Is.Zero);
        });
        AssertCloudEvents(back.Delivered);
    }

    [Test]
    public async Task ReceiverNeverRecovers_AfterMaxAttemptsTheEventIsDeadLettered_WithTheLastError()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        receiver.Answer = _ => 503;
        await using var relay = await RelayAsync(receiver.Webhook(events: RelayEventTypes.TokenRevoked), o => FastRetries(o, maxAttempts: 4));

        relay.Server.RevokeToken("acme-restricted");
        await Eventually.WaitUntilAsync(() => DeadLetters(relay).Count == 1, "dead-lettered");

        var letter = DeadLetters(relay).List("vendor", 10).Single();
        Assert.Multiple(() =>
        {
            Assert.That(receiver.Requests.Select(r => r.Attempt), Is.EqualTo(new[] { 1, 2, 3, 4 }));
            Assert.That(receiver.Requests.Select(r => r.Id).Distinct().Single(), Is.EqualTo(letter.EventId), "the same event each time");
            Assert.That((letter.EventType, letter.Tenant, letter.Attempts), Is.EqualTo(("token.revoked", "acme", 4)));
            Assert.That(letter.Error, Is.EqualTo("HTTP 503 (Service Unavailable): maintenance"));
            Assert.That(JsonDocument.Parse(letter.Payload).RootElement.GetProperty("id").GetString(), Is.EqualTo(letter.EventId));
            Assert.That(Counters(relay).DeadLettered("attempts_exhausted"), Is.EqualTo(1));
            Assert.That(Counters(relay).Retried, Is.EqualTo(3));
            Assert.That(relay.Logs.Contains("SiteLink.Relay.Events.EventHub", new Microsoft.Extensions.Logging.EventId(62)), Is.True, "the dead letter is logged");
        });
        AssertCloudEvents(receiver.Requests);
    }

    [Test]
    public async Task ReceiverHangs_WithASmallQueue_50EventsLeaveAtMost5Queued_TheRestDeadLetteredAsQueueFull()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        receiver.Answer = _ => 0;
        await using var relay = await RelayAsync(receiver.Webhook(), o =>
        {
            o.Events.MaxQueuedPerSubscription = 5;
            o.Events.AttemptTimeout = TimeSpan.FromMinutes(5);
        });

        var hub = Hub(relay);
        for (var i = 0; i < 50; i++)
        {
            hub.Publish(new RelayEvent(RelayEventTypes.EndpointBound, "acme", $"e{i}", DateTimeOffset.UtcNow, new Dictionary<string, object?> { ["n"] = i }));
        }

        await Eventually.WaitUntilAsync(() => DeadLetters(relay).Count == 45, "45 dead letters");
        await Eventually.WaitUntilAsync(() => receiver.Requests.Count == 1, "the head is being tried");
        var letters = DeadLetters(relay).List("vendor", 100);
        Assert.Multiple(() =>
        {
            Assert.That(hub.Queued("vendor"), Is.EqualTo(5));
            Assert.That(Counters(relay).QueueFull, Is.EqualTo(45));
            Assert.That(Counters(relay).DeadLettered("queue_full"), Is.EqualTo(45));
            Assert.That(letters.Select(l => (l.Error, l.Attempts)), Is.All.EqualTo((DeadLetterReasons.QueueFull, 0)));
            Assert.That(letters.Select(l => JsonDocument.Parse(l.Payload).RootElement.GetProperty("subject").GetString()), Is.EquivalentTo(Enumerable.Range(5, 45).Select(i => $"e{i}")));
            Assert.That(receiver.Requests.Single().Subject, Is.EqualTo("e0"));
        });
    }

    [Test]
    public async Task AgentBlackHoled_TheVendorGetsSessionDisconnected_WithinTheSilenceTimeoutPlusOneSecond()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        await using var relay = await RelayAsync(receiver.Webhook(events: [RelayEventTypes.SessionConnected, RelayEventTypes.SessionDisconnected]));
        await using var proxy = new FaultProxy(new IPEndPoint(IPAddress.Loopback, relay.Server.AgentUrl.Port));
        var interval = TimeSpan.FromSeconds(1);
        var tolerance = TimeSpan.FromSeconds(2);
        var session = await ConnectThroughAsync(relay, proxy, o =>
        {
            o.HeartbeatInterval = interval;
            o.HeartbeatTolerance = tolerance;
        });
        var sessionId = session.SessionId;
        await Eventually.WaitUntilAsync(() => session.LastHeartbeatRoundTrip is not null, "a heartbeat was answered");
        await Eventually.WaitUntilAsync(() => receiver.DeliveredOf(RelayEventTypes.SessionConnected).Count == 1, "connected delivered");

        var blackHoledAt = Stopwatch.GetTimestamp();
        proxy.BlackHole();
        await Eventually.WaitUntilAsync(() => receiver.DeliveredOf(RelayEventTypes.SessionDisconnected).Any(e => e.DataString("sessionId") == sessionId), "disconnected delivered");

        var disconnected = receiver.DeliveredOf(RelayEventTypes.SessionDisconnected).Single(e => e.DataString("sessionId") == sessionId);
        var elapsed = Stopwatch.GetElapsedTime(blackHoledAt, disconnected.ReceivedAt);
        var silence = interval + tolerance;
        TestContext.Out.WriteLine($"black-hole -> session.disconnected at the receiver: {elapsed.TotalMilliseconds:F0} ms (silence timeout {silence.TotalMilliseconds:F0} ms)");
        Assert.Multiple(() =>
        {
            Assert.That(elapsed, Is.LessThanOrEqualTo(silence + TimeSpan.FromSeconds(1)));
            Assert.That(disconnected.DataString("reason"), Does.StartWith("nothing received for"));
            Assert.That(disconnected.DataString("code"), Is.EqualTo("timed_out"));
        });
        proxy.Heal();
    }

    [Test]
    public async Task ConnectionReset_AgentComesBack_SessionReconnectedNamesThePreviousSession()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        await using var relay = await RelayAsync(receiver.Webhook(events: [RelayEventTypes.SessionConnected, RelayEventTypes.SessionDisconnected, RelayEventTypes.SessionReconnected]));
        await using var proxy = new FaultProxy(new IPEndPoint(IPAddress.Loopback, relay.Server.AgentUrl.Port));
        var session = await ConnectThroughAsync(relay, proxy, o =>
        {
            o.Reconnect.InitialDelay = TimeSpan.FromMilliseconds(100);
            o.Reconnect.MaxDelay = TimeSpan.FromMilliseconds(500);
        });
        var first = session.SessionId;

        proxy.ResetAll();
        await Eventually.WaitUntilAsync(() => receiver.DeliveredOf(RelayEventTypes.SessionReconnected).Count == 1, "reconnected delivered");

        var reconnected = receiver.DeliveredOf(RelayEventTypes.SessionReconnected).Single();
        Assert.Multiple(() =>
        {
            Assert.That(receiver.Delivered.Select(e => (e.Type, e.DataString("sessionId"))), Is.EqualTo(new[]
            {
                ("session.connected", first),
                ("session.disconnected", first),
                ("session.connected", session.SessionId),
                ("session.reconnected", session.SessionId),
            }));
            Assert.That(reconnected.DataString("previousSessionId"), Is.EqualTo(first));
            Assert.That(reconnected.DataString("clientId"), Is.EqualTo("test-agent"));
            Assert.That(reconnected.Data.GetProperty("downtimeSeconds").GetDouble(), Is.InRange(0, 10));
        });
        AssertCloudEvents(receiver.Delivered);
    }

    [Test]
    public async Task HundredRefusedConnectionsInABurst_AtMostTwoEvents_WhoseCountsSumTo100()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        await using var relay = await RelayAsync(receiver.Webhook(events: RelayEventTypes.ConnectionRefused), cloudEndpoints: "db");

        var closed = await Task.WhenAll(Enumerable.Range(0, 100).Select(_ => relay.ConnectAndWaitForCloseAsync("db"))).DefaultTimeout();
        int Sum() => receiver.Delivered.Sum(e => e.Data.GetProperty("count").GetInt32());
        await Eventually.WaitUntilAsync(() => Sum() == 100, "counts add up to 100");

        var events = receiver.Delivered;
        TestContext.Out.WriteLine($"100 refused connections -> {events.Count} event(s): counts {string.Join(", ", events.Select(e => e.Data.GetProperty("count").GetInt32()))}");
        Assert.Multiple(() =>
        {
            Assert.That(closed, Is.All.True, "every connection was refused");
            Assert.That(relay.Server.Counters.Refused(RefusalReason.NoAgent), Is.EqualTo(100));
            Assert.That(events, Has.Count.InRange(1, 2));
            Assert.That(events.Select(e => (e.Tenant, e.Subject, e.DataString("cloudEndpoint"), e.DataString("endpoint"), e.DataString("reason"))), Is.All.EqualTo(("acme", "db", "db", "db", "no_agent")));
        });
        AssertCloudEvents(events);
    }

    [Test]
    public async Task RevokeToken_PublishesTokenRevoked_ThenTheSessionsDisconnect()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        await using var relay = await RelayAsync(receiver.Webhook(tenant: "*", events: [RelayEventTypes.TokenRevoked, RelayEventTypes.SessionDisconnected]));
        var session = await relay.ConnectAgentAsync(TestRelay.AcmeRestrictedToken);
        var sessionId = session.SessionId;

        relay.Server.RevokeToken("acme-restricted");
        await Eventually.WaitUntilAsync(() => receiver.Delivered.Count == 2, "token.revoked and session.disconnected delivered");

        var (revoked, disconnected) = (receiver.Delivered[0], receiver.Delivered[1]);
        Assert.Multiple(() =>
        {
            Assert.That((revoked.Type, revoked.Tenant, revoked.Subject), Is.EqualTo(("token.revoked", "acme", "acme-restricted")));
            Assert.That(revoked.DataString("tokenName"), Is.EqualTo("acme-restricted"));
            Assert.That(revoked.DataString("reason"), Is.EqualTo("revoked by the operator"));
            Assert.That((disconnected.Type, disconnected.DataString("sessionId")), Is.EqualTo(("session.disconnected", sessionId)));
            Assert.That(disconnected.DataString("code"), Is.EqualTo("revoked"));
            Assert.That(disconnected.DataString("reason"), Is.EqualTo("its authtoken was revoked or changed"));
        });
        AssertCloudEvents(receiver.Delivered);
    }

    [Test]
    public async Task DeliveryLatency_200Events_PublishToReceipt()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        await using var relay = await RelayAsync(receiver.Webhook());
        var hub = Hub(relay);
        var latencies = new List<double>();
        for (var i = 0; i < 210; i++)
        {
            var publishedAt = Stopwatch.GetTimestamp();
            hub.Publish(new RelayEvent(RelayEventTypes.EndpointBound, "acme", $"e{i}", DateTimeOffset.UtcNow, new Dictionary<string, object?> { ["n"] = i }));
            await Eventually.WaitUntilAsync(() => receiver.Delivered.Count == i + 1, $"event {i} delivered");
            if (i >= 10)
            {
                // The first ten warm up the connection and the code paths.
                latencies.Add(Stopwatch.GetElapsedTime(publishedAt, receiver.Delivered[i].ReceivedAt).TotalMilliseconds);
            }
        }

        latencies.Sort();
        double Percentile(double p) => latencies[(int)Math.Ceiling(p * latencies.Count) - 1];
        TestContext.Out.WriteLine($"Publish -> receipt at the receiver over {latencies.Count} events, one at a time: p50 {Percentile(0.5):F2} ms, p90 {Percentile(0.9):F2} ms, p99 {Percentile(0.99):F2} ms, max {latencies[^1]:F2} ms");
        Assert.That(Percentile(0.5), Is.LessThan(250), "delivery is immediate, not batched");
    }
}
