using System.Collections.Concurrent;
using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Events;
using SiteLink.Relay.Security;
using SiteLink.Relay.Sessions;

namespace SiteLink.Relay.Tests;

/// <summary>The event hub without a network: CloudEvents bodies, signatures, ordering, subscription changes, bounds.</summary>
[TestFixture]
[Category("Events")]
internal sealed class EventHubTests
{
    private const string Secret = "whsec-0123456789abcdef";
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(20);

    private static RelayEvent Event(string tenant = "acme", string type = RelayEventTypes.SessionConnected, int n = 0) =>
        new(type, tenant, $"s_{n}", DateTimeOffset.UnixEpoch.AddSeconds(n), new Dictionary<string, object?> { ["n"] = n });

    private static WebhookSubscription Subscription(string id = "hook", string tenant = "acme", long version = 1, string url = "https://receiver.example/hook", params string[] events) =>
        new(id, tenant, new Uri(url), Secret, events.Length == 0 ? RelayEventTypes.All : events, version);

    private static RelayEventOptions Fast(int maxAttempts = 5, int queue = 1000) => new()
    {
        MaxAttempts = maxAttempts,
        MaxQueuedPerSubscription = queue,
        RetryBaseDelay = TimeSpan.FromMilliseconds(1),
        RetryMaxDelay = TimeSpan.FromMilliseconds(5),
        AttemptTimeout = TimeSpan.FromSeconds(5),
    };

    private static EventHub Hub(Receiver receiver, RelayEventOptions? options = null, IDeadLetterStore? store = null, EventCounters? counters = null, params WebhookSubscription[] configured) =>
        new(options ?? Fast(), "relay-1", configured, store ?? new InMemoryDeadLetterStore(), counters ?? new EventCounters(), TimeProvider.System, NullLogger<EventHub>.Instance, receiver);

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        using var timeout = new CancellationTokenSource(Limit);
        while (!condition())
        {
            try
            {
                await Task.Delay(5, timeout.Token);
            }
            catch (OperationCanceledException)
            {
                Assert.Fail($"Not true within {Limit}: {what}");
            }
        }
    }

    [Test]
    public void Sign_IsHmacSha256OfTimestampDotBody_LowercaseHex()
    {
        // Computed independently: python3 hmac.new(b'whsec-0123456789abcdef', b'1700000000.{"specversion":"1.0"}', sha256).
        var header = CloudEventFormat.Sign(Secret, 1_700_000_000, Encoding.UTF8.GetBytes("{\"specversion\":\"1.0\"}"));
        Assert.That(header, Is.EqualTo("t=1700000000,v1=f2752b4ec7917d00d54bc0003abe60d56201009b027b67a2cbf3dbeccf60a973"));
    }

    [Test]
    public void Create_WritesCloudEventsStructuredJson_WithTenantInDataAndAsExtension()
    {
        var time = new DateTimeOffset(2026, 11, 27, 17, 9, 55, 123, TimeSpan.FromHours(2));
        var published = CloudEventFormat.Create(new RelayEvent(RelayEventTypes.EndpointBound, "ACME", "db", time, new Dictionary<string, object?>
        {
            ["endpoint"] = "db",
            ["pooling"] = true,
            ["count"] = 3,
            ["tenant"] = "spoofed",
            ["metadata"] = new Dictionary<string, string> { ["region"] = "eu" },
            ["line"] = "a\r\nforged",
        }), "relay one");

        using var json = JsonDocument.Parse(published.Json);
        var root = json.RootElement;
        var data = root.GetProperty("data");
        Assert.Multiple(() =>
        {
            Assert.That(root.GetProperty("specversion").GetString(), Is.EqualTo("1.0"));
            Assert.That(root.GetProperty("id").GetString(), Does.StartWith("evt_").And.EqualTo(published.Id));
            Assert.That(root.GetProperty("source").GetString(), Is.EqualTo("sitelink://relay/relay%20one"));
            Assert.That(root.GetProperty("type").GetString(), Is.EqualTo("endpoint.bound"));
            Assert.That(root.GetProperty("subject").GetString(), Is.EqualTo("db"));
            Assert.That(root.GetProperty("time").GetString(), Is.EqualTo("2026-11-27T15:09:55.1230000Z"));
            Assert.That(root.GetProperty("datacontenttype").GetString(), Is.EqualTo("application/json"));
            Assert.That(root.GetProperty("tenant").GetString(), Is.EqualTo("acme"));
            Assert.That(data.GetProperty("tenant").GetString(), Is.EqualTo("acme"), "the event's tenant, not one its data claims");
            Assert.That(data.GetProperty("pooling").GetBoolean(), Is.True);
            Assert.That(data.GetProperty("count").GetInt32(), Is.EqualTo(3));
            Assert.That(data.GetProperty("metadata").GetProperty("region").GetString(), Is.EqualTo("eu"));
            Assert.That(data.GetProperty("line").GetString(), Is.EqualTo("a??forged"), "control characters never reach a receiver's logs");
            Assert.That(Enumerable.Range(0, 100).Select(_ => CloudEventFormat.Create(Event(), "r").Id).Distinct().Count(), Is.EqualTo(100), "ids are unique");
        });
    }

    [Test]
    public void Create_BoundsEveryValue_AndAnEventTooLargeKeepsOnlyItsTenant()
    {
        // 32 entries (the cap) of 32 strings of 256 characters (the caps) would still be 256 KiB.
        var many = Enumerable.Range(0, 100).ToDictionary(i => $"k{i}", i => (object?)Enumerable.Repeat(new string('x', 1000), 100).ToArray());
        var published = CloudEventFormat.Create(new RelayEvent("session.connected", "acme", "s", DateTimeOffset.UnixEpoch, many), "r");
        var small = CloudEventFormat.Create(new RelayEvent("session.connected", "acme", "s", DateTimeOffset.UnixEpoch, new Dictionary<string, object?>
        {
            ["long"] = new string('y', 10_000),
            ["list"] = Enumerable.Range(0, 100).ToArray(),
        }), "r");

        using var truncated = JsonDocument.Parse(published.Json);
        using var capped = JsonDocument.Parse(small.Json);
        Assert.Multiple(() =>
        {
            Assert.That(published.Body, Has.Length.LessThanOrEqualTo(CloudEventFormat.MaxEventBytes));
            Assert.That(truncated.RootElement.GetProperty("data").GetProperty("truncated").GetBoolean(), Is.True);
            Assert.That(truncated.RootElement.GetProperty("data").GetProperty("tenant").GetString(), Is.EqualTo("acme"));
            Assert.That(capped.RootElement.GetProperty("data").GetProperty("long").GetString(), Has.Length.EqualTo(CloudEventFormat.MaxStringLength + 1), "cut, with an ellipsis");
            Assert.That(capped.RootElement.GetProperty("data").GetProperty("list").GetArrayLength(), Is.EqualTo(CloudEventFormat.MaxEntries));
        });
    }

    [Test]
    public async Task Deliveries_OfOneSubscription_ArriveInPublishOrder_ThroughRetries()
    {
        // Every third event fails twice (503, then a connection error) before it is taken: the worker retries the head
        // and nothing behind it overtakes it.
        var receiver = new Receiver((request, body, attempt) => (EventNumber(body) % 3, attempt) switch
        {
            (0, 1) => Status(HttpStatusCode.ServiceUnavailable),
            (0, 2) => throw new HttpRequestException("connection refused"),
            _ => Status(HttpStatusCode.NoContent),
        });
        var counters = new EventCounters();
        await using var hub = Hub(receiver, counters: counters, configured: Subscription());

        for (var n = 0; n < 60; n++)
        {
            hub.Publish(Event(n: n));
        }

        await WaitUntilAsync(() => counters.Delivered == 60, "all 60 delivered");
        Assert.Multiple(() =>
        {
            Assert.That(receiver.Delivered.Select(d => EventNumber(d.Body)), Is.EqualTo(Enumerable.Range(0, 60)));
            Assert.That(counters.Retried, Is.EqualTo(40), "two retries for each of the 20 events that failed");
            Assert.That(receiver.Attempts.Where(a => EventNumber(a.Body) == 3).Select(a => a.Attempt), Is.EqualTo(new[] { 1, 2, 3 }), "SiteLink-Delivery-Attempt counts up");
        });
    }

    [Test]
    public async Task Deliveries_AreSigned_AndCarryTheirHeaders()
    {
        var receiver = new Receiver((_, _, _) => Status(HttpStatusCode.OK));
        await using var hub = Hub(receiver, configured: Subscription());
        hub.Publish(Event());
        await WaitUntilAsync(() => receiver.Delivered.Count == 1, "delivered");

        var request = receiver.Attempts.Single();
        var signature = request.Headers["SiteLink-Signature"];
        var timestamp = long.Parse(signature.Split(',')[0]["t=".Length..], System.Globalization.CultureInfo.InvariantCulture);
        Assert.Multiple(() =>
        {
            Assert.That(signature, Is.EqualTo(CloudEventFormat.Sign(Secret, timestamp, Encoding.UTF8.GetBytes(request.Body))));
            Assert.That(DateTimeOffset.FromUnixTimeSeconds(timestamp), Is.EqualTo(DateTimeOffset.UtcNow).Within(TimeSpan.FromMinutes(1)));
            Assert.That(request.Headers["SiteLink-Event-Id"], Is.EqualTo(JsonDocument.Parse(request.Body).RootElement.GetProperty("id").GetString()));
            Assert.That(request.Headers["SiteLink-Delivery-Attempt"], Is.EqualTo("1"));
            Assert.That(request.Headers["SiteLink-Subscription-Id"], Is.EqualTo("hook"));
            Assert.That(request.Headers["Content-Type"], Is.EqualTo("application/cloudevents+json; charset=utf-8"));
        });
    }

    [Test]
    public async Task Events_GoOnlyToSubscriptionsOfTheirTenantAndType_StarMeansEveryTenant()
    {
        var receiver = new Receiver((_, _, _) => Status(HttpStatusCode.OK));
        await using var hub = Hub(receiver, configured:
        [
            Subscription("acme-sessions", "acme", url: "https://r.example/acme", events: [RelayEventTypes.SessionConnected]),
            Subscription("vendor", "*", url: "https://r.example/vendor", events: [RelayEventTypes.SessionConnected, RelayEventTypes.TokenRevoked]),
        ]);

        hub.Publish(Event("acme"));
        hub.Publish(Event("globex"));
        hub.Publish(Event("acme", RelayEventTypes.EndpointBound));
        hub.Publish(Event("globex", RelayEventTypes.TokenRevoked));
        await WaitUntilAsync(() => receiver.Delivered.Count == 4, "four deliveries");
        await Task.Delay(50);

        var byPath = receiver.Attempts.ToLookup(a => a.Path, a => (JsonDocument.Parse(a.Body).RootElement.GetProperty("tenant").GetString(), JsonDocument.Parse(a.Body).RootElement.GetProperty("type").GetString()));
        Assert.Multiple(() =>
        {
            Assert.That(byPath["/acme"], Is.EqualTo(new[] { ("acme", "session.connected") }));
            Assert.That(byPath["/vendor"], Is.EquivalentTo(new[] { ("acme", "session.connected"), ("globex", "session.connected"), ("globex", "token.revoked") }));
        });
    }

    [Test]
    public async Task SetSubscriptions_KeepsUnchanged_HandsQueueToNewVersion_DeadLettersRemoved_StartsNew()
    {
        // The receiver holds every request until released: queues fill up behind the first event.
        var (receiver, release) = Held();
        var store = new InMemoryDeadLetterStore();
        var counters = new EventCounters();
        await using var hub = Hub(receiver, store: store, counters: counters);
        hub.SetSubscriptions([Subscription("kept", url: "https://r.example/kept"), Subscription("changed", url: "https://r.example/v1"), Subscription("removed", url: "https://r.example/removed")]);
        for (var n = 0; n < 3; n++)
        {
            hub.Publish(Event(n: n));
        }

        Assert.That(hub.Queued("kept"), Is.EqualTo(3));
        hub.SetSubscriptions([Subscription("kept", url: "https://r.example/kept"), Subscription("changed", version: 2, url: "https://r.example/v2"), Subscription("added", url: "https://r.example/added")]);
        await WaitUntilAsync(() => store.Count == 3, "the removed subscription's three events dead-lettered");
        Assert.Multiple(() =>
        {
            Assert.That(hub.Queued("kept"), Is.EqualTo(3), "unchanged: same queue");
            Assert.That(hub.Queued("changed"), Is.EqualTo(3), "new version: the queue carried over");
            Assert.That(hub.Queued("added"), Is.Zero);
            Assert.That(hub.Queued("removed"), Is.Null);
            Assert.That(store.List("removed", 10).Select(l => (l.Error, l.Attempts)), Is.All.EqualTo((DeadLetterReasons.SubscriptionRemoved, 0)));
            Assert.That(store.List("removed", 10).Select(l => EventNumber(l.Payload)), Is.EqualTo(new[] { 2, 1, 0 }), "newest first");
        });

        hub.Publish(Event(n: 3));
        release.SetResult();
        await WaitUntilAsync(() => counters.Delivered == 4 + 4 + 1, "kept and changed get 0-3, added gets 3");
        Assert.Multiple(() =>
        {
            Assert.That(receiver.Delivered.Where(d => d.Path == "/kept").Select(d => EventNumber(d.Body)), Is.EqualTo(new[] { 0, 1, 2, 3 }));
            Assert.That(receiver.Delivered.Where(d => d.Path == "/v2").Select(d => EventNumber(d.Body)), Is.EqualTo(new[] { 0, 1, 2, 3 }), "in order, with the new settings");
            Assert.That(receiver.Delivered.Where(d => d.Path == "/v1"), Is.Empty, "the old version's attempt was abandoned, not answered");
            Assert.That(receiver.Delivered.Where(d => d.Path == "/added").Select(d => EventNumber(d.Body)), Is.EqualTo(new[] { 3 }));
        });
    }

    [Test]
    public async Task SetSubscriptions_Invalid_ThrowsListingEveryProblem_NeverTheSecret_AndChangesNothing()
    {
        var receiver = new Receiver((_, _, _) => Status(HttpStatusCode.OK));
        await using var hub = Hub(receiver, configured: Subscription("configured"));
        var bad = new WebhookSubscription("bad id!", "", new Uri("ftp://r.example/"), "short-secret", ["session.exploded"], 1);
        var clash = Subscription("configured", url: "https://r.example/other");

        var error = Assert.Throws<ArgumentException>(() => hub.SetSubscriptions([bad, clash]))!;
        Assert.Multiple(() =>
        {
            Assert.That(error.Message, Does.Contain("Id 'bad id!'"));
            Assert.That(error.Message, Does.Contain("Tenant"));
            Assert.That(error.Message, Does.Contain("Url must be an absolute http:// or https:// URL"));
            Assert.That(error.Message, Does.Contain("Secret must be 16"));
            Assert.That(error.Message, Does.Contain("'session.exploded' is not an event type"));
            Assert.That(error.Message, Does.Contain("cannot replace one of Relay:Webhooks"));
            Assert.That(error.Message, Does.Not.Contain("short-secret"));
            Assert.That(hub.Queued("configured"), Is.Zero, "still there");
            Assert.That(Subscription().ToString(), Does.Not.Contain(Secret), "a subscription never prints its secret");
        });
    }

    [Test]
    public async Task QueueBound_AFullQueueDeadLettersTheOverflow_AndMemoryStaysBounded()
    {
        var (receiver, hang) = Held();
        var store = new InMemoryDeadLetterStore();
        var counters = new EventCounters();
        await using var hub = Hub(receiver, Fast(queue: 5), store, counters, Subscription());
        for (var n = 0; n < 50; n++)
        {
            hub.Publish(Event(n: n));
        }

        await WaitUntilAsync(() => store.Count == 45, "45 dead letters");
        Assert.Multiple(() =>
        {
            Assert.That(hub.Queued("hook"), Is.EqualTo(5));
            Assert.That(counters.QueueFull, Is.EqualTo(45));
            Assert.That(counters.DeadLettered("queue_full"), Is.EqualTo(45));
            Assert.That(store.List(null, 100).Select(l => l.Error).Distinct(), Is.EqualTo(new[] { DeadLetterReasons.QueueFull }));
            Assert.That(store.List(null, 100).Select(l => EventNumber(l.Payload)).Order(), Is.EqualTo(Enumerable.Range(5, 45)), "the first five were queued");
        });

        hang.SetResult();
    }

    [Test]
    public async Task Rejected_A4xxIsNotRetried_AndExhaustedAttemptsKeepTheLastError()
    {
        var receiver = new Receiver((_, body, _) => EventNumber(body) == 0 ? Status(HttpStatusCode.Gone) : Status(HttpStatusCode.BadGateway, "upstream down"));
        var store = new InMemoryDeadLetterStore();
        var counters = new EventCounters();
        await using var hub = Hub(receiver, Fast(maxAttempts: 3), store, counters, Subscription());
        hub.Publish(Event(n: 0));
        hub.Publish(Event(n: 1));

        await WaitUntilAsync(() => store.Count == 2, "both dead-lettered");
        var letters = store.List("hook", 10).ToDictionary(l => EventNumber(l.Payload));
        Assert.Multiple(() =>
        {
            Assert.That((letters[0].Attempts, letters[0].Error), Is.EqualTo((1, "HTTP 410 (Gone)")));
            Assert.That((letters[1].Attempts, letters[1].Error), Is.EqualTo((3, "HTTP 502 (Bad Gateway): upstream down")));
            Assert.That(counters.DeadLettered("rejected"), Is.EqualTo(1));
            Assert.That(counters.DeadLettered("attempts_exhausted"), Is.EqualTo(1));
            Assert.That(letters[1].EventType, Is.EqualTo("session.connected"));
            Assert.That(letters[1].Tenant, Is.EqualTo("acme"));
        });
    }

    [Test]
    public async Task Recent_NewestFirst_ByTenant_Bounded()
    {
        var receiver = new Receiver((_, _, _) => Status(HttpStatusCode.OK));
        await using var hub = Hub(receiver);
        for (var n = 0; n < EventHub.RecentCapacity + 10; n++)
        {
            hub.Publish(Event(n % 2 == 0 ? "acme" : "globex", n: n));
        }

        Assert.Multiple(() =>
        {
            Assert.That(hub.Recent(null, 3).Select(e => EventNumber(e.Json)), Is.EqualTo(new[] { 1009, 1008, 1007 }));
            Assert.That(hub.Recent("GLOBEX", 2).Select(e => EventNumber(e.Json)), Is.EqualTo(new[] { 1009, 1007 }));
            Assert.That(hub.Recent(null, int.MaxValue), Has.Count.EqualTo(EventHub.RecentCapacity));
        });
    }

    [Test]
    public async Task Publish_NeverThrows()
    {
        var receiver = new Receiver((_, _, _) => Status(HttpStatusCode.OK));
        await using var hub = Hub(receiver, configured: Subscription());
        Assert.DoesNotThrow(() => hub.Publish(null!));
        Assert.DoesNotThrow(() => hub.Publish(new RelayEvent("session.connected", null!, null!, default, null!)));
    }

    [Test]
    public void RefusalEvents_AFloodIsOneEventASecondPerKind_CarryingTheCount()
    {
        var time = new FakeTimeProvider();
        var sink = new ListSink();
        using var refusals = new RefusalEvents(sink, time);
        var db = new CloudEndpointOptions { Name = "public-db", Tenant = "Acme", Endpoint = "db" };
        for (var i = 0; i < 100; i++)
        {
            refusals.OnRefused(db, RefusalReason.NoAgent);
        }

        refusals.OnRefused(db, RefusalReason.StreamLimit);
        Assert.That(sink.Events, Is.Empty, "nothing before the second is over");
        time.Advance(RefusalEvents.Interval);
        refusals.OnRefused(db, RefusalReason.NoAgent);
        time.Advance(RefusalEvents.Interval);
        time.Advance(RefusalEvents.Interval);
        time.Advance(RefusalEvents.Interval);

        Assert.Multiple(() =>
        {
            Assert.That(sink.Events.Select(e => (e.Tenant, e.Subject, e.Data["reason"], e.Data["count"])), Is.EquivalentTo(new (string, string, object?, object?)[]
            {
                ("acme", "public-db", "no_agent", 100L),
                ("acme", "public-db", "stream_limit", 1L),
                ("acme", "public-db", "no_agent", 1L),
            }));
            Assert.That(sink.Events.Select(e => e.Type), Is.All.EqualTo(RelayEventTypes.ConnectionRefused));
        });
    }

    [Test]
    public void SessionEvents_ReconnectedAfterADisconnect_RemembersABoundedNumberOfAgents()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UnixEpoch);
        var sink = new ListSink();
        var events = new SessionEvents(sink, new RelayOptions { RelayId = "r1" }, time);
        var token = new TokenIdentity("acme", "acme", new EndpointAcl(["*"]));
        var first = new AgentSession("s_1", token, "agent-a", "p", "1.0", timeProvider: time);
        events.Connected(first, "10.0.0.1");
        time.Advance(TimeSpan.FromSeconds(30));
        events.Disconnected(first, "the connection was lost", "connection_lost", [new BoundEndpoint("db", "", new Dictionary<string, string>())]);
        time.Advance(TimeSpan.FromSeconds(4));
        events.Connected(new AgentSession("s_2", token, "agent-a", "p", "1.0", timeProvider: time), "10.0.0.1");

        Assert.That(sink.Events.Select(e => e.Type), Is.EqualTo(new[] { "session.connected", "endpoint.unbound", "session.disconnected", "session.connected", "session.reconnected" }));
        var disconnected = sink.Events[2].Data;
        var reconnected = sink.Events[4].Data;
        Assert.Multiple(() =>
        {
            Assert.That(disconnected["durationSeconds"], Is.EqualTo(30.0));
            Assert.That(reconnected["previousSessionId"], Is.EqualTo("s_1"));
            Assert.That(reconnected["downtimeSeconds"], Is.EqualTo(4.0));
            Assert.That(events.Remembered, Is.Zero, "a reconnected agent is forgotten");
        });

        for (var i = 0; i < SessionEvents.MaxRemembered + 5; i++)
        {
            events.Disconnected(new AgentSession($"s_x{i}", token, $"agent-{i}", "p", "1.0", timeProvider: time), "gone", "agent_closed", []);
        }

        sink.Events.Clear();
        events.Connected(new AgentSession("s_y", token, "agent-0", "p", "1.0", timeProvider: time), "10.0.0.1");
        events.Connected(new AgentSession("s_z", token, "agent-9", "p", "1.0", timeProvider: time), "10.0.0.1");
        Assert.Multiple(() =>
        {
            Assert.That(events.Remembered, Is.EqualTo(SessionEvents.MaxRemembered - 1));
            Assert.That(sink.Events.Select(e => e.Type), Is.EqualTo(new[] { "session.connected", "session.connected", "session.reconnected" }), "the oldest (agent-0) was forgotten, agent-9 was not");
        });
    }

    [Test]
    public void InMemoryDeadLetterStore_KeepsTheLastOnes()
    {
        var store = new InMemoryDeadLetterStore(3);
        for (var i = 0; i < 5; i++)
        {
            store.AddAsync(new DeadLetter(i % 2 == 0 ? "a" : "b", "acme", $"evt_{i}", "t", "{}", "e", 1, DateTimeOffset.UnixEpoch), CancellationToken.None).AsTask().Wait();
        }

        Assert.Multiple(() =>
        {
            Assert.That(store.List(null, 10).Select(l => l.EventId), Is.EqualTo(new[] { "evt_4", "evt_3", "evt_2" }));
            Assert.That(store.List("a", 10).Select(l => l.EventId), Is.EqualTo(new[] { "evt_4", "evt_2" }));
            Assert.That(store.List(null, 1), Has.Count.EqualTo(1));
            Assert.That(store.Count, Is.EqualTo(5));
        });
    }

    [Test]
    public void Validator_ChecksWebhooksAndDeliverySettings_WithoutQuotingSecrets()
    {
        var options = new RelayOptions { AgentListen = "127.0.0.1:0" };
        var token = new AuthTokenOptions { Name = "acme", Token = "0123456789abcdef0123", Tenant = "acme" };
        token.Allow.Add("*");
        options.Tokens.Add(token);
        var good = new WebhookOptions { Id = "ops", Tenant = "*", Url = "https://hooks.example/sitelink", Secret = "0123456789abcdef-secret" };
        good.Events.Add(RelayEventTypes.SessionDisconnected);
        options.Webhooks.Add(good);
        Assert.That(RelayOptionsValidator.Validate(options), Is.Empty);

        var bad = new WebhookOptions { Id = "ops", Tenant = "", Url = "https://user:pw@hooks.example/", Secret = "tiny-secret" };
        bad.Events.Add("session.nope");
        options.Webhooks.Add(bad);
        options.Webhooks.Add(new WebhookOptions { Id = "x", Tenant = "acme", Url = "/relative", Secret = "0123456789abcdef-secret" });
        options.Events.MaxQueuedPerSubscription = 0;
        options.Events.MaxAttempts = 0;
        options.Events.RetryBaseDelay = TimeSpan.FromMinutes(10);
        options.Events.AttemptTimeout = TimeSpan.Zero;
        options.Events.MaxSubscriptions = 2;

        var errors = string.Join("\n", RelayOptionsValidator.Validate(options));
        Assert.Multiple(() =>
        {
            foreach (var fragment in new[]
            {
                "Relay:Webhooks:1:Tenant", "Relay:Webhooks:1:Url must not hold credentials", "Relay:Webhooks:1:Secret must be 16",
                "Relay:Webhooks:1:Events 'session.nope'", "Relay:Webhooks:1:Id 'ops' is used by another webhook", "Relay:Webhooks:2:Url must be an absolute",
                "Relay:Webhooks:2:Events is empty", "MaxQueuedPerSubscription", "MaxAttempts", "RetryBaseDelay", "AttemptTimeout", "Relay:Webhooks has 3 entries",
            })
            {
                Assert.That(errors, Does.Contain(fragment));
            }

            Assert.That(errors, Does.Not.Contain("tiny-secret").And.Not.Contain("0123456789abcdef-secret").And.Not.Contain("pw@"));
        });
    }

    private static int EventNumber(string body) => JsonDocument.Parse(body).RootElement.GetProperty("data").GetProperty("n").GetInt32();

    /// <summary>A receiver that answers nothing until <c>Release</c> is set, then 200 to everything.</summary>
    private static (Receiver Receiver, TaskCompletionSource Release) Held()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        return (new Receiver(async (_, _, _) =>
        {
            await release.Task;
            return new HttpResponseMessage(HttpStatusCode.OK);
        }), release);
    }

    private static Task<HttpResponseMessage> Status(HttpStatusCode status, string body = "") =>
        Task.FromResult(new HttpResponseMessage(status) { Content = new StringContent(body) });

    private sealed class ListSink : IRelayEventSink
    {
        public List<RelayEvent> Events { get; } = [];

        public void Publish(RelayEvent relayEvent)
        {
            lock (Events)
            {
                Events.Add(relayEvent);
            }
        }
    }

    /// <summary>An HTTP handler standing in for receivers: records every attempt and answers as told.</summary>
    [Test]
    public void TenantBudget_GivesABurstThenItsRate_PerTenant()
    {
        var time = new FakeTimeProvider();
        var budget = new Security.TokenBuckets(perSecond: 2, burst: 5, time);
        Assert.That(Enumerable.Range(0, 8).Count(_ => budget.TryTake("evil")), Is.EqualTo(5), "the burst");
        Assert.That(budget.TryTake("good"), Is.True, "another tenant has its own budget");
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.That(Enumerable.Range(0, 8).Count(_ => budget.TryTake("evil")), Is.EqualTo(2), "then the rate");
        time.Advance(TimeSpan.FromMinutes(1));
        Assert.That(Enumerable.Range(0, 8).Count(_ => budget.TryTake("evil")), Is.EqualTo(5), "refilled to the burst, not beyond");
    }

    [Test]
    public async Task ATenantOverItsEventBudget_DoesNotCrowdOutOthers_InAVendorWideQueueOrTheRecentLog()
    {
        var receiver = new Receiver((_, _, _) => Task.Delay(Timeout.Infinite).ContinueWith(_ => new HttpResponseMessage(HttpStatusCode.OK), TaskScheduler.Default));
        var options = Fast(queue: 50);
        options.TenantEventBurst = 10;
        options.TenantEventsPerSecond = 0.1;
        var counters = new EventCounters();
        await using var hub = Hub(receiver, options, counters: counters, configured: Subscription("vendor", "*"));
        for (var i = 0; i < 1000; i++)
        {
            hub.Publish(Event("evil", RelayEventTypes.EndpointBound, i));
        }

        hub.Publish(Event("good", RelayEventTypes.SessionConnected));
        Assert.Multiple(() =>
        {
            Assert.That(counters.Suppressed, Is.EqualTo(990));
            Assert.That(hub.Recent("evil", 1000), Has.Count.EqualTo(10));
            Assert.That(hub.Recent("good", 10), Has.Count.EqualTo(1), "the other tenant's event was published");
            Assert.That(hub.Queued("vendor"), Is.EqualTo(11), "the vendor-wide queue holds the burst and the other tenant's event, nothing dead-lettered");
        });
    }

    private sealed class Receiver(Func<HttpRequestMessage, string, int, Task<HttpResponseMessage>> answer) : HttpMessageHandler
    {
        private readonly ConcurrentQueue<(string Path, string Body, int Attempt, Dictionary<string, string> Headers)> _attempts = new();
        private readonly ConcurrentQueue<(string Path, string Body)> _delivered = new();

        public IReadOnlyCollection<(string Path, string Body, int Attempt, Dictionary<string, string> Headers)> Attempts => _attempts;

        public IReadOnlyList<(string Path, string Body)> Delivered => [.. _delivered];

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var body = await request.Content!.ReadAsStringAsync(cancellationToken);
            var attempt = int.Parse(request.Headers.GetValues("SiteLink-Delivery-Attempt").Single(), System.Globalization.CultureInfo.InvariantCulture);
            var headers = request.Headers.Concat(request.Content.Headers).ToDictionary(h => h.Key, h => string.Join(", ", h.Value));
            _attempts.Enqueue((request.RequestUri!.AbsolutePath, body, attempt, headers));
            var response = await answer(request, body, attempt).WaitAsync(cancellationToken);
            if (response.IsSuccessStatusCode)
            {
                _delivered.Enqueue((request.RequestUri!.AbsolutePath, body));
            }

            return response;
        }
    }
}
