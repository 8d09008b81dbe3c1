using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Time.Testing;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>
/// C14, the admin API: a real relay with its admin listener (HTTPS, pinned certificate), called over real sockets as a
/// vendor's automation would, with real SDK agents connecting with the tokens it creates.
/// </summary>
[TestFixture]
[Category("AdminApi")]
public sealed class AdminApiTests
{
    private static async Task<(TestRelay Relay, AdminClient Admin)> StartAsync(TimeProvider? time = null)
    {
        var relay = await TestRelay.StartAsync([], AdminClient.Enable, time);
        return (relay, new AdminClient(relay.Server.AdminUrl!, relay.Server.CertificateSha256));
    }

    private static async Task<string> CreateTokenAsync(AdminClient admin, string tenant, string name, object? extra = null)
    {
        if ((await admin.GetAsync($"/v1/tenants/{tenant}")).Status == HttpStatusCode.NotFound)
        {
            await admin.ExpectAsync(HttpStatusCode.Created, HttpMethod.Post, "/v1/tenants", new { id = tenant, displayName = $"{tenant} Corp" });
        }

        var created = await admin.ExpectAsync(HttpStatusCode.Created, HttpMethod.Post, "/v1/tokens",
            extra ?? new { name, tenant, allow = new[] { "*" } });
        return (string)created!["secret"]!;
    }

    [Test]
    public async Task A_token_created_through_the_API_connects_an_agent_that_the_API_then_lists()
    {
        var (relay, admin) = await StartAsync();
        await using var _ = relay;
        using var __ = admin;
        var secret = await CreateTokenAsync(admin, "acme", "acme-prod");
        Assert.That(secret, Does.StartWith("sl_").And.Length.GreaterThan(40));

        var session = await relay.ConnectAgentAsync(secret, o =>
        {
            o.ClientId = "acme-site-1";
            o.Metadata["site"] = "berlin";
        });
        await session.BindHandlerAsync("billing", (connection, _) => Task.CompletedTask).DefaultTimeout();

        var sessions = await admin.ExpectAsync(HttpStatusCode.OK, HttpMethod.Get, "/v1/sessions?tenant=acme");
        var listed = sessions!["items"]!.AsArray().Single()!;
        Assert.Multiple(() =>
        {
            Assert.That((string)listed["id"]!, Is.EqualTo(session.SessionId));
            Assert.That((string)listed["agentId"]!, Is.EqualTo("acme-site-1"));
            Assert.That((string)listed["token"]!, Is.EqualTo("acme-prod"));
            Assert.That((string)listed["sdkVersion"]!, Is.Not.Empty);
            Assert.That((string)listed["metadata"]!["site"]!, Is.EqualTo("berlin"));
            Assert.That((string)listed["relay"]!, Is.EqualTo("test-relay"));
            Assert.That((string)listed["remoteAddress"]!, Does.Contain("127.0.0.1"));
            Assert.That((double?)listed["rttMs"], OperatingSystem.IsLinux() ? Is.GreaterThanOrEqualTo(0) : Is.Null);
            Assert.That(listed["binds"]!.AsArray().Select(b => (string)b!["name"]!), Is.EqualTo(new[] { "billing" }));
        });

        // The secret is never shown again.
        var token = await admin.ExpectAsync(HttpStatusCode.OK, HttpMethod.Get, "/v1/tokens/acme-prod");
        Assert.That(token!.ToJsonString(), Does.Not.Contain(secret[3..]));
        Assert.That((bool)token["active"]!, Is.True);
    }

    [Test]
    public async Task Revoking_a_token_ends_its_sessions_within_a_second_and_refuses_it_after()
    {
        var (relay, admin) = await StartAsync();
        await using var _ = relay;
        using var __ = admin;
        var secret = await CreateTokenAsync(admin, "acme", "acme-prod");
        var session = await relay.ConnectAgentAsync(secret, o => o.Reconnect.ShouldRetry = _ => false);
        var ended = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        session.StateChanged += (_, e) =>
        {
            if (e.State is TunnelSessionState.Faulted or TunnelSessionState.Closed or TunnelSessionState.Reconnecting)
            {
                ended.TrySetResult();
            }
        };

        var clock = Stopwatch.StartNew();
        var revoked = await admin.ExpectAsync(HttpStatusCode.OK, HttpMethod.Post, "/v1/tokens/acme-prod/revoke");
        await ended.Task.DefaultTimeout();
        var elapsed = clock.Elapsed;
        TestContext.Out.WriteLine($"revocation to the agent seeing its session end: {elapsed.TotalMilliseconds:F1} ms");
        Assert.That(elapsed, Is.LessThan(TimeSpan.FromSeconds(1)));
        Assert.That((bool)revoked!["active"]!, Is.False);
        Assert.That(relay.Server.SessionCount, Is.Zero);

        var refused = Assert.ThrowsAsync<TunnelAuthenticationException>(() => relay.ConnectAgentAsync(secret, o => o.Reconnect.ShouldRetry = _ => false));
        Assert.That(refused!.Message, Does.Contain("authtoken"));
    }

    [Test]
    public async Task Calls_without_a_valid_key_are_refused_with_problem_details_and_read_only_keys_cannot_write()
    {
        var (relay, admin) = await StartAsync();
        await using var _ = relay;
        using var __ = admin;
        using var anonymous = new AdminClient(relay.Server.AdminUrl!, relay.Server.CertificateSha256, key: null);
        var (status, body, response) = await anonymous.GetAsync("/v1/tenants");
        Assert.That(status, Is.EqualTo(HttpStatusCode.Unauthorized));
        Assert.That(response.Headers.WwwAuthenticate.ToString(), Does.StartWith("Bearer"));
        Assert.That(response.Content.Headers.ContentType!.MediaType, Is.EqualTo("application/problem+json"));
        Assert.That((int)body!["status"]!, Is.EqualTo(401));
        Assert.That((string)body["detail"]!, Does.Contain("Bearer"));

        using var wrong = new AdminClient(relay.Server.AdminUrl!, relay.Server.CertificateSha256, key: "not-a-key-0123456789abcdefghijklmnop");
        Assert.That((await wrong.GetAsync("/v1/tenants")).Status, Is.EqualTo(HttpStatusCode.Unauthorized));

        using var viewer = new AdminClient(relay.Server.AdminUrl!, relay.Server.CertificateSha256, AdminClient.ReadKey);
        Assert.That((await viewer.GetAsync("/v1/tenants")).Status, Is.EqualTo(HttpStatusCode.OK));
        var (forbidden, problem, _) = await viewer.PostAsync("/v1/tenants", new { id = "initech" });
        Assert.That(forbidden, Is.EqualTo(HttpStatusCode.Forbidden));
        Assert.That((string)problem!["title"]!, Is.EqualTo("Read-only credentials"));
        Assert.That((await admin.GetAsync("/v1/tenants/initech")).Status, Is.EqualTo(HttpStatusCode.NotFound), "the read-only key created nothing");

        // An address that keeps failing is answered 429 without its guesses being checked; valid callers elsewhere are unaffected.
        // (This test made 2 failures above; the bucket holds 20 and refills one a second.)
        var statuses = new List<HttpStatusCode>();
        var clock = Stopwatch.StartNew();
        for (var i = 0; i < 40; i++)
        {
            statuses.Add((await wrong.GetAsync("/v1/tenants")).Status);
        }

        Assert.That(statuses, Does.Contain(HttpStatusCode.TooManyRequests));
        Assert.That(statuses.Count(s => s == HttpStatusCode.Unauthorized), Is.LessThanOrEqualTo(20 + (int)Math.Ceiling(clock.Elapsed.TotalSeconds)),
            "at most the burst plus what refilled while the test ran was checked");
        Assert.That((await viewer.GetAsync("/v1/tenants")).Status, Is.EqualTo(HttpStatusCode.TooManyRequests), "the address, not the key, is throttled: it is not checked at all");
    }

    [Test]
    public async Task Invalid_requests_get_a_typed_problem_and_change_nothing()
    {
        var (relay, admin) = await StartAsync();
        await using var _ = relay;
        using var __ = admin;
        var (status, problem, response) = await admin.PostAsync("/v1/tenants", new { id = "Not A Valid Id!" });
        Assert.That(status, Is.EqualTo((HttpStatusCode)422));
        Assert.That(response.Content.Headers.ContentType!.MediaType, Is.EqualTo("application/problem+json"));
        Assert.That((string)problem!["type"]!, Is.EqualTo("urn:sitelink:problem:invalid"));
        Assert.That((string)problem["detail"]!, Does.Contain("lower-case"));

        Assert.That((await admin.PostAsync("/v1/tokens", new { name = "t1", tenant = "nobody", allow = new[] { "*" } })).Status, Is.EqualTo((HttpStatusCode)422));
        await admin.ExpectAsync(HttpStatusCode.Created, HttpMethod.Post, "/v1/tenants", new { id = "initech" });
        Assert.That((await admin.PostAsync("/v1/tokens", new { name = "t1", tenant = "initech", allow = Array.Empty<string>() })).Status, Is.EqualTo((HttpStatusCode)422));
        Assert.That((await admin.PostAsync("/v1/tokens", new { name = "t1", tenant = "initech", allow = new[] { "bad pattern" } })).Status, Is.EqualTo((HttpStatusCode)422));
        Assert.That((await admin.PostAsync("/v1/tenants", new { id = "initech" })).Status, Is.EqualTo(HttpStatusCode.Conflict));
        Assert.That((await admin.PostAsync("/v1/tenants", new { id = "acme" })).Status, Is.EqualTo(HttpStatusCode.Conflict), "a configured tenant exists too");

        // Malformed JSON and an oversized body are refused too; the relay keeps serving.
        using var malformed = new StringContent("{\"id\": ", System.Text.Encoding.UTF8, "application/json");
        Assert.That((await admin.Http.PostAsync("/v1/tenants", malformed).DefaultTimeout()).StatusCode, Is.EqualTo(HttpStatusCode.BadRequest));
        using var huge = new StringContent($"{{\"id\":\"{new string('a', 200_000)}\"}}", System.Text.Encoding.UTF8, "application/json");
        var tooLarge = await admin.Http.PostAsync("/v1/tenants", huge).DefaultTimeout();
        Assert.That((int)tooLarge.StatusCode, Is.EqualTo(413).Or.EqualTo(400));
        Assert.That((await admin.GetAsync("/v1/tenants")).Body!["items"]!.AsArray().Select(t => (string)t!["id"]!), Is.EqualTo(new[] { "acme", "globex", "initech" }));
        Assert.That((await admin.GetAsync("/v1/tokens/t1")).Status, Is.EqualTo(HttpStatusCode.NotFound));
    }

    [Test]
    public async Task Updates_with_a_stale_ETag_are_refused_412_and_listings_page()
    {
        var (relay, admin) = await StartAsync();
        await using var _ = relay;
        using var __ = admin;
        await CreateTokenAsync(admin, "acme", "token-00");
        var (_, _, read) = await admin.GetAsync("/v1/tokens/token-00");
        var etag = read.Headers.ETag!.Tag;

        var changed = await admin.SendAsync(HttpMethod.Put, "/v1/tokens/token-00", new { allow = new[] { "db-*" } }, ifMatch: etag);
        Assert.That(changed.Status, Is.EqualTo(HttpStatusCode.OK));
        var newTag = changed.Response.Headers.ETag!.Tag;
        Assert.That(newTag, Is.Not.EqualTo(etag));

        // Someone who read before that change is refused, and told the current version.
        var stale = await admin.SendAsync(HttpMethod.Put, "/v1/tokens/token-00", new { allow = new[] { "*" } }, ifMatch: etag);
        Assert.That(stale.Status, Is.EqualTo(HttpStatusCode.PreconditionFailed));
        Assert.That(stale.Response.Headers.ETag!.Tag, Is.EqualTo(newTag));
        Assert.That((await admin.GetAsync("/v1/tokens/token-00")).Body!["allow"]!.AsArray().Single()!.GetValue<string>(), Is.EqualTo("db-*"));
        Assert.That((await admin.SendAsync(HttpMethod.Delete, "/v1/tokens/token-00", ifMatch: etag)).Status, Is.EqualTo(HttpStatusCode.PreconditionFailed));

        for (var i = 1; i < 25; i++)
        {
            await CreateTokenAsync(admin, i % 2 == 0 ? "acme" : "globex", $"token-{i:D2}");
        }

        var names = new List<string>();
        string? cursor = null;
        do
        {
            var page = await admin.ExpectAsync(HttpStatusCode.OK, HttpMethod.Get, $"/v1/tokens?tenant=acme&limit=5{(cursor is null ? "" : $"&cursor={cursor}")}");
            names.AddRange(page!["items"]!.AsArray().Select(t => (string)t!["name"]!));
            cursor = (string?)page["next"];
        }
        while (cursor is not null);

        // 13 of the API's tokens are acme's, and so is the test relay's configured acme token pair.
        Assert.That(names.Count(n => n.StartsWith("token-", StringComparison.Ordinal)), Is.EqualTo(13));
        Assert.That(names, Is.Ordered.Using((IComparer<string>)StringComparer.Ordinal).And.Unique);
    }

    [Test]
    public async Task Every_call_is_audited_with_who_what_when_and_the_result()
    {
        var (relay, admin) = await StartAsync();
        await using var _ = relay;
        using var __ = admin;
        using var anonymous = new AdminClient(relay.Server.AdminUrl!, relay.Server.CertificateSha256, key: null);
        await anonymous.GetAsync("/v1/tokens");
        await CreateTokenAsync(admin, "initech", "initech-prod");
        await admin.PostAsync("/v1/tenants", new { id = "initech" });

        JsonArray entries = [];
        await Eventually.WaitUntilAsync(async () =>
        {
            entries = (await admin.GetAsync("/v1/audit?limit=50")).Body!["items"]!.AsArray();
            return entries.Count >= 5;
        }, "the audit entries were written");
        var summary = entries.Select(e => $"{e!["actor"]} {e["action"]} {e["status"]}").ToList();
        Assert.That(summary, Does.Contain("anonymous GET /v1/tokens 401"));
        Assert.That(summary, Does.Contain("key:ops POST /v1/tenants 201"));
        Assert.That(summary, Does.Contain("key:ops POST /v1/tokens 201"));
        Assert.That(summary, Does.Contain("key:ops POST /v1/tenants 409"));
        var conflict = entries.First(e => (int)e!["status"]! == 409)!;
        Assert.That((string)conflict["detail"]!, Does.Contain("exists"));
        Assert.That(DateTimeOffset.Parse((string)conflict["at"]!, System.Globalization.CultureInfo.InvariantCulture), Is.EqualTo(DateTimeOffset.UtcNow).Within(TimeSpan.FromMinutes(1)));
        // The audit log never holds a secret.
        Assert.That(entries.ToJsonString(), Does.Not.Contain(AdminClient.FullKey));
    }

    [Test]
    public async Task Admin_keys_created_through_the_API_work_until_deleted()
    {
        var (relay, admin) = await StartAsync();
        await using var _ = relay;
        using var __ = admin;
        var created = await admin.ExpectAsync(HttpStatusCode.Created, HttpMethod.Post, "/v1/admin-keys", new { name = "ci-bot", scope = "read" });
        using var bot = new AdminClient(relay.Server.AdminUrl!, relay.Server.CertificateSha256, (string)created!["secret"]!);
        Assert.That((await bot.GetAsync("/v1/status")).Status, Is.EqualTo(HttpStatusCode.OK));
        Assert.That((await bot.PostAsync("/v1/tenants", new { id = "x" })).Status, Is.EqualTo(HttpStatusCode.Forbidden));
        await admin.ExpectAsync(HttpStatusCode.NoContent, HttpMethod.Delete, "/v1/admin-keys/ci-bot");
        Assert.That((await bot.GetAsync("/v1/status")).Status, Is.EqualTo(HttpStatusCode.Unauthorized));

        // Keys from the configuration are listed, and read-only here.
        var keys = (await admin.GetAsync("/v1/admin-keys")).Body!["items"]!.AsArray();
        Assert.That(keys.Select(k => $"{k!["name"]}:{k["scope"]}:{k["source"]}"), Is.EquivalentTo(new[] { "ops:full:config", "viewer:read:config" }));
        Assert.That((await admin.SendAsync(HttpMethod.Delete, "/v1/admin-keys/ops")).Status, Is.EqualTo(HttpStatusCode.Conflict));
    }

    [Test]
    public async Task Configured_tokens_and_tenants_are_listed_read_only()
    {
        var (relay, admin) = await StartAsync();
        await using var _ = relay;
        using var __ = admin;
        var tokens = (await admin.GetAsync("/v1/tokens")).Body!["items"]!.AsArray();
        Assert.That(tokens.Select(t => (string)t!["name"]!), Is.EquivalentTo(new[] { "acme", "acme-restricted", "globex" }));
        Assert.That(tokens.All(t => (string)t!["source"]! == "config"));
        Assert.That((await admin.SendAsync(HttpMethod.Post, "/v1/tokens/acme/revoke")).Status, Is.EqualTo(HttpStatusCode.Conflict));
        Assert.That((await admin.SendAsync(HttpMethod.Delete, "/v1/tenants/acme")).Status, Is.EqualTo(HttpStatusCode.Conflict));
        // The configured tenant takes API-made tokens, which work beside the configured ones.
        var secret = await CreateTokenAsync(admin, "acme", "acme-api");
        var session = await relay.ConnectAgentAsync(secret);
        Assert.That(session.State, Is.EqualTo(TunnelSessionState.Connected));
    }

    [Test]
    public async Task A_session_can_be_kicked_and_the_agent_comes_back()
    {
        var (relay, admin) = await StartAsync();
        await using var _ = relay;
        using var __ = admin;
        var session = await relay.ConnectAgentAsync();
        var first = session.SessionId;
        await admin.ExpectAsync(HttpStatusCode.NoContent, HttpMethod.Delete, $"/v1/sessions/{first}");
        await Eventually.WaitUntilAsync(() => session.State == TunnelSessionState.Connected && session.SessionId != first, "the agent reconnected with a new session");
        Assert.That((await admin.GetAsync($"/v1/sessions/{first}")).Status, Is.EqualTo(HttpStatusCode.NotFound));
        Assert.That((await admin.GetAsync($"/v1/sessions/{session.SessionId}")).Status, Is.EqualTo(HttpStatusCode.OK));
    }

    [Test]
    public async Task An_expiring_token_ends_its_sessions_when_it_expires()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var (relay, admin) = await StartAsync(time);
        await using var _ = relay;
        using var __ = admin;
        var secret = await CreateTokenAsync(admin, "acme", "short-lived",
            new { name = "short-lived", tenant = "acme", allow = new[] { "*" }, expiresAt = time.GetUtcNow().AddHours(1) });
        var session = await relay.ConnectAgentAsync(secret, o => o.Reconnect.ShouldRetry = _ => false);
        Assert.That(relay.Server.SessionCount, Is.EqualTo(1));

        time.Advance(TimeSpan.FromMinutes(59));
        await Task.Delay(50);
        Assert.That(relay.Server.SessionCount, Is.EqualTo(1), "not yet expired");
        time.Advance(TimeSpan.FromMinutes(1) + TimeSpan.FromSeconds(1));
        await Eventually.WaitUntilAsync(() => relay.Server.SessionCount == 0, "the expired token's session ended");
        Assert.That((bool)(await admin.GetAsync("/v1/tokens/short-lived")).Body!["active"]!, Is.False);
    }

    [Test]
    public async Task Provisioning_a_customer_end_to_end_tenant_token_endpoint_subscription_agent_traffic_and_events()
    {
        var (relay, admin) = await StartAsync();
        await using var _ = relay;
        using var __ = admin;
        await using var receiver = await WebhookReceiver.StartAsync();
        await using var upstream = TestUpstream.Echo();

        await admin.ExpectAsync(HttpStatusCode.Created, HttpMethod.Post, "/v1/tenants", new { id = "initech", displayName = "Initech" });
        var subscription = await admin.ExpectAsync(HttpStatusCode.Created, HttpMethod.Post, "/v1/subscriptions",
            new { tenant = "initech", url = receiver.Url.AbsoluteUri, events = new[] { "session.connected", "endpoint.bound", "token.revoked" } });
        var signingSecret = (string)subscription!["secret"]!;
        var secret = (string)(await admin.ExpectAsync(HttpStatusCode.Created, HttpMethod.Post, "/v1/tokens", new { name = "initech-site-1", tenant = "initech", allow = new[] { "web" } }))!["secret"]!;
        var endpoint = await admin.ExpectAsync(HttpStatusCode.Created, HttpMethod.Post, "/v1/endpoints",
            new { name = "initech-web", tenant = "initech", endpoint = "web", listen = "127.0.0.1:0" });
        var address = System.Net.IPEndPoint.Parse((string)endpoint!["address"]!);

        var session = await relay.ConnectAgentAsync(secret, o => o.ClientId = "initech-agent");
        await session.ForwardAsync("web", upstream.Uri).DefaultTimeout();
        using (var client = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp))
        {
            await client.ConnectAsync(address).DefaultTimeout();
            var (sent, received, length) = await client.EchoRandomAsync(2 * 1024 * 1024);
            Assert.That(length, Is.EqualTo(2 * 1024 * 1024));
            Assert.That(received, Is.EqualTo(sent), "SHA-256 of the bytes that came back");
        }

        // The vendor's receiver got the events, signed with the subscription's secret.
        await Eventually.WaitUntilAsync(() => receiver.DeliveredOf("endpoint.bound").Count == 1 && receiver.DeliveredOf("session.connected").Count == 1, "the events were delivered");
        foreach (var delivered in receiver.Delivered)
        {
            Assert.That(WebhookReceiver.VerifySignature(delivered.Headers["SiteLink-Signature"], System.Text.Encoding.UTF8.GetBytes(delivered.Body), signingSecret, DateTimeOffset.UtcNow, TimeSpan.FromMinutes(5)), Is.True);
            Assert.That(delivered.Tenant, Is.EqualTo("initech"));
        }

        Assert.That(receiver.DeliveredOf("session.connected")[0].DataString("clientId"), Is.EqualTo("initech-agent"));
        var events = (await admin.GetAsync("/v1/events?tenant=initech")).Body!["items"]!.AsArray();
        Assert.That(events.Select(e => (string)e!["type"]!), Does.Contain("session.connected").And.Contain("endpoint.bound"));
        var connections = (await admin.GetAsync("/v1/connections?tenant=initech")).Body!.AsArray();
        Assert.That((string)connections.Single()!["endpoint"]!, Is.EqualTo("initech-web"));

        // A policy added at runtime: new connections from 127.0.0.1 are refused, the endpoint's listener stays.
        var (_, _, read) = await admin.GetAsync("/v1/endpoints/initech-web");
        var updated = await admin.SendAsync(HttpMethod.Put, "/v1/endpoints/initech-web", new
        {
            name = "initech-web", tenant = "initech", endpoint = "web", listen = address.ToString(),
            policy = new { onConnect = new[] { new { type = "restrict-ips", deny = new[] { "127.0.0.0/8" } } } },
        }, ifMatch: read.Headers.ETag!.Tag);
        Assert.That(updated.Status, Is.EqualTo(HttpStatusCode.OK), updated.Body?.ToJsonString());
        Assert.That(await SocketTestExtensions.ConnectAndWaitForCloseAsync(address), Is.True, "closed without data");
        Assert.That(relay.Server.Counters.PolicyDenials("on_connect[0]:restrict-ips"), Is.EqualTo(1), "refused by the new rule, not by a missing listener");

        // Deleted: the port no longer accepts.
        await admin.ExpectAsync(HttpStatusCode.NoContent, HttpMethod.Delete, "/v1/endpoints/initech-web");
        using (var gone = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp))
        {
            Assert.ThrowsAsync<System.Net.Sockets.SocketException>(() => gone.ConnectAsync(address).DefaultTimeout());
        }

        await admin.ExpectAsync(HttpStatusCode.OK, HttpMethod.Post, "/v1/tokens/initech-site-1/revoke");
        await Eventually.WaitUntilAsync(() => receiver.DeliveredOf("token.revoked").Count == 1, "token.revoked was delivered");
        Assert.That((await admin.GetAsync($"/v1/subscriptions/{(string)subscription["subscription"]!["id"]!}/dead-letters")).Body!["items"]!.AsArray(), Is.Empty);
    }

    [Test]
    public async Task Endpoints_that_cannot_exist_or_start_are_refused_and_nothing_changes()
    {
        var (relay, admin) = await StartAsync();
        await using var _ = relay;
        using var __ = admin;
        using var busy = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        busy.Bind(new System.Net.IPEndPoint(IPAddress.Loopback, 0));
        busy.Listen();
        await admin.ExpectAsync(HttpStatusCode.Created, HttpMethod.Post, "/v1/tenants", new { id = "initech" });

        var inUse = await admin.PostAsync("/v1/endpoints", new { name = "initech-db", tenant = "initech", endpoint = "db", listen = busy.LocalEndPoint!.ToString() });
        Assert.That(inUse.Status, Is.EqualTo((HttpStatusCode)422), inUse.Body?.ToJsonString());
        Assert.That((string)inUse.Body!["type"]!, Is.EqualTo("urn:sitelink:problem:cannot-start"));
        Assert.That((await admin.GetAsync("/v1/endpoints/initech-db")).Status, Is.EqualTo(HttpStatusCode.NotFound), "the refused endpoint was not kept");

        Assert.That((await admin.PostAsync("/v1/endpoints", new { name = "initech-db", tenant = "nobody", endpoint = "db", listen = "127.0.0.1:0" })).Status, Is.EqualTo((HttpStatusCode)422));
        Assert.That((await admin.PostAsync("/v1/endpoints", new { name = "initech-db", tenant = "initech", endpoint = "db", listen = "not-an-address" })).Status, Is.EqualTo((HttpStatusCode)422));
        Assert.That((await admin.PostAsync("/v1/endpoints", new { name = "initech-db", tenant = "initech", endpoint = "db", listen = "127.0.0.1:0", protocol = "gopher" })).Status, Is.EqualTo((HttpStatusCode)422));
        Assert.That((await admin.PostAsync("/v1/subscriptions", new { tenant = "initech", url = "ftp://example.invalid/", events = new[] { "session.connected" } })).Status, Is.EqualTo((HttpStatusCode)422));
        Assert.That((await admin.PostAsync("/v1/subscriptions", new { tenant = "initech", url = "http://127.0.0.1:1/", events = new[] { "no.such.event" } })).Status, Is.EqualTo((HttpStatusCode)422));
        Assert.That((await admin.GetAsync("/v1/endpoints?tenant=initech")).Body!["items"]!.AsArray(), Is.Empty);
    }

    [Test]
    public async Task JWTs_from_the_vendors_identity_provider_grant_read_or_full_access_by_scope()
    {
        await using var jwks = await JwtPolicyTests.JwksServer.StartAsync();
        var key = JwtPolicyTests.NewKey("k1");
        jwks.Publish(key);
        await using var relay = await TestRelay.StartAsync([], o =>
        {
            AdminClient.Enable(o);
            o.Admin.Jwt = new Relay.Configuration.AdminJwtOptions { Issuer = JwtPolicyTests.Issuer, JwksUrl = jwks.Url.AbsoluteUri };
            o.Admin.Jwt.Audiences.Add("sitelink-admin");
        });
        AdminClient As(string token) => new(relay.Server.AdminUrl!, relay.Server.CertificateSha256, token);

        using var admin = As(JwtPolicyTests.Token(key, subject: "alice", audience: "sitelink-admin", scope: "openid sitelink.admin"));
        await admin.ExpectAsync(HttpStatusCode.Created, HttpMethod.Post, "/v1/tenants", new { id = "initech" });
        using var reader = As(JwtPolicyTests.Token(key, subject: "bob", audience: "sitelink-admin", scope: "sitelink.read"));
        Assert.That((await reader.GetAsync("/v1/tenants/initech")).Status, Is.EqualTo(HttpStatusCode.OK));
        Assert.That((await reader.PostAsync("/v1/tenants", new { id = "globex2" })).Status, Is.EqualTo(HttpStatusCode.Forbidden));

        // Another audience, another scope, another signer, expired: not accepted.
        using var otherAudience = As(JwtPolicyTests.Token(key, audience: "someone-else", scope: "sitelink.admin"));
        using var noScope = As(JwtPolicyTests.Token(key, audience: "sitelink-admin", scope: "openid profile"));
        using var forged = As(JwtPolicyTests.Token(JwtPolicyTests.NewKey("k1"), audience: "sitelink-admin", scope: "sitelink.admin"));
        using var expired = As(JwtPolicyTests.Token(key, audience: "sitelink-admin", scope: "sitelink.admin", expiresIn: TimeSpan.FromMinutes(-10)));
        foreach (var (client, why) in new[] { (otherAudience, "audience"), (noScope, "scope"), (forged, "signature"), (expired, "expired") })
        {
            var (status, problem, _) = await client.GetAsync("/v1/tenants");
            Assert.That(status, Is.EqualTo(HttpStatusCode.Unauthorized), why);
            Assert.That((string)problem!["detail"]!, Does.StartWith("the token was not accepted"), why);
        }

        // The audit log names the token's subject.
        await Eventually.WaitUntilAsync(async () => (await admin.GetAsync("/v1/audit")).Body!["items"]!.AsArray()
            .Any(e => (string)e!["actor"]! == "jwt:alice" && (string)e["action"]! == "POST /v1/tenants"), "alice's call is audited");
        Assert.That((await admin.GetAsync("/v1/audit")).Body!["items"]!.AsArray().Any(e => (string)e!["actor"]! == "jwt:bob" && (int)e["status"]! == 403), Is.True);
    }
}
