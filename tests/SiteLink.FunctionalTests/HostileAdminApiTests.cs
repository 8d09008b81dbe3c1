using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Relay.Configuration;

namespace SiteLink.FunctionalTests;

/// <summary>
/// The admin API against callers that are careless or hostile — with a valid key too: malformed and null-riddled
/// bodies, echoed junk, concurrent writes racing the API's own checks, settings the relay cannot honour, secrets a
/// read-only key must not see, and a flood of bad credentials from one address. A real relay, real sockets.
/// </summary>
[TestFixture]
[Category("AdminApi")]
[Category("Hostile")]
public sealed class HostileAdminApiTests
{
    private static async Task<(TestRelay Relay, AdminClient Admin)> StartAsync(Action<RelayOptions>? configure = null)
    {
        var relay = await TestRelay.StartAsync([], o =>
        {
            AdminClient.Enable(o);
            configure?.Invoke(o);
        });
        return (relay, new AdminClient(relay.Server.AdminUrl!, relay.Server.CertificateSha256));
    }

    private static async Task<(HttpStatusCode Status, JsonNode? Body)> SendRawAsync(AdminClient admin, HttpMethod method, string path, string json)
    {
        using var request = new HttpRequestMessage(method, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        // A body past the relay's limit is refused (413) before it is read; asking first (Expect: 100-continue) keeps the
        // client from writing into a connection the relay has already answered and closed (a broken pipe, now and then).
        request.Headers.ExpectContinue = json.Length > 16 * 1024;
        using var response = await admin.Http.SendAsync(request).DefaultTimeout();
        var text = await response.Content.ReadAsStringAsync().DefaultTimeout();
        return (response.StatusCode, text.Length == 0 ? null : JsonNode.Parse(text));
    }

    private static async Task<JsonArray> AuditAsync(AdminClient admin, int expectedAtLeast)
    {
        JsonArray entries = [];
        await Eventually.WaitUntilAsync(async () =>
        {
            entries = (await admin.GetAsync("/v1/audit?limit=500")).Body!["items"]!.AsArray();
            return entries.Count >= expectedAtLeast;
        }, "the audit entries were written");
        return entries;
    }

    [Test]
    public async Task A_read_only_key_never_sees_a_configured_oidc_client_secret()
    {
        const string ClientSecret = "oidc-client-secret-never-shown-0123456789";
        var (relay, admin) = await StartAsync(o =>
        {
            var endpoint = new CloudEndpointOptions { Name = "app", Protocol = "http", Listen = "127.0.0.1:0", Tenant = "acme", Endpoint = "app" };
            endpoint.Hostnames.Add("app.relay.test");
            endpoint.Policy.OnHttpRequest.Add(new PolicyRuleOptions { Type = "oidc", Authority = "http://127.0.0.1:1/", ClientId = "relay", ClientSecret = ClientSecret });
            o.CloudEndpoints.Add(endpoint);
        });
        await using var _ = relay;
        using var __ = admin;
        using var viewer = new AdminClient(relay.Server.AdminUrl!, relay.Server.CertificateSha256, AdminClient.ReadKey);

        var list = await viewer.ExpectAsync(HttpStatusCode.OK, HttpMethod.Get, "/v1/endpoints");
        var one = await viewer.ExpectAsync(HttpStatusCode.OK, HttpMethod.Get, "/v1/endpoints/app");
        Assert.Multiple(() =>
        {
            Assert.That(list!.ToJsonString(), Does.Not.Contain(ClientSecret));
            Assert.That(one!.ToJsonString(), Does.Not.Contain(ClientSecret));
            // The rest of the rule is still shown: only the secret is withheld.
            Assert.That((string)one!["spec"]!["policy"]!["onHttpRequest"]![0]!["clientId"]!, Is.EqualTo("relay"));
        });
    }

    [Test]
    public async Task A_read_only_key_sees_no_password_hash_nor_added_header_value_and_a_full_key_sees_them()
    {
        var hash = TrafficPolicyTests.PasswordHash("correct horse battery staple");
        const string Injected = "Bearer service-credential-0123456789";
        var (relay, admin) = await StartAsync(o =>
        {
            var endpoint = new CloudEndpointOptions { Name = "app", Protocol = "http", Listen = "127.0.0.1:0", Tenant = "acme", Endpoint = "app" };
            endpoint.Hostnames.Add("app.relay.test");
            var basic = new PolicyRuleOptions { Type = "basic-auth", Realm = "app" };
            basic.Users.Add(new BasicAuthUserOptions { Name = "alice", PasswordHash = hash });
            endpoint.Policy.OnHttpRequest.Add(basic);
            var headers = new PolicyRuleOptions { Type = "add-headers" };
            headers.Headers["Authorization"] = Injected;
            endpoint.Policy.OnHttpRequest.Add(headers);
            o.CloudEndpoints.Add(endpoint);
        });
        await using var _ = relay;
        using var __ = admin;
        using var viewer = new AdminClient(relay.Server.AdminUrl!, relay.Server.CertificateSha256, AdminClient.ReadKey);

        // Values compared as JSON values (a hash's '+' and '/' are escaped in the JSON text).
        static (string? User, string? Hash, string? Header) Rules(System.Text.Json.Nodes.JsonNode? endpoint)
        {
            var rules = endpoint!["spec"]!["policy"]!["onHttpRequest"]!.AsArray();
            return ((string?)rules[0]!["users"]![0]!["name"], (string?)rules[0]!["users"]![0]!["passwordHash"], (string?)rules[1]!["headers"]!["Authorization"]);
        }

        var one = Rules(await viewer.ExpectAsync(HttpStatusCode.OK, HttpMethod.Get, "/v1/endpoints/app"));
        var listed = Rules((await viewer.ExpectAsync(HttpStatusCode.OK, HttpMethod.Get, "/v1/endpoints"))!["items"]!.AsArray().Single(e => (string)e!["spec"]!["name"]! == "app"));
        foreach (var (user, passwordHash, header) in new[] { one, listed })
        {
            Assert.That(user, Is.EqualTo("alice"), "the rest of the rule is shown");
            Assert.That(passwordHash, Is.EqualTo("(hidden from read-only credentials)"));
            Assert.That(header, Is.EqualTo("(hidden from read-only credentials)"));
        }

        // A full key may write the endpoint back, so it reads it whole.
        Assert.That(Rules(await admin.ExpectAsync(HttpStatusCode.OK, HttpMethod.Get, "/v1/endpoints/app")), Is.EqualTo(("alice", hash, Injected)));
    }

    [TestCase("{\"onConnect\":[null]}")]
    [TestCase("{\"onConnect\":[{\"type\":null}]}")]
    [TestCase("{\"onConnect\":null}")]
    [TestCase("{\"onHttpRequest\":[{\"type\":\"restrict-ips\",\"allow\":[null]}]}")]
    [TestCase("{\"onHttpRequest\":[{\"type\":\"restrict-ips\",\"deny\":null}]}")]
    [TestCase("{\"onHttpRequest\":[{\"type\":\"basic-auth\",\"users\":[null]}]}")]
    [TestCase("{\"onHttpRequest\":[{\"type\":\"basic-auth\",\"users\":[{\"name\":null,\"passwordHash\":null}]}]}")]
    [TestCase("{\"onHttpRequest\":[{\"type\":\"add-headers\",\"headers\":{\"X-A\":null}}]}")]
    [TestCase("{\"onHttpRequest\":[{\"type\":\"remove-headers\",\"names\":[null]}]}")]
    [TestCase("{\"onHttpRequest\":[{\"type\":\"rate-limit\",\"capacity\":1,\"perSecond\":1,\"key\":null}]}")]
    [TestCase("{\"onHttpResponse\":[{\"type\":\"add-headers\",\"headers\":{\"X-A\":null}}]}")]
    public async Task A_policy_with_nulls_is_refused_with_a_typed_problem_not_a_500_and_audited_as_refused(string policy)
    {
        var (relay, admin) = await StartAsync();
        await using var _ = relay;
        using var __ = admin;

        var (status, problem) = await SendRawAsync(admin, HttpMethod.Post, "/v1/endpoints",
            $"{{\"name\":\"web\",\"tenant\":\"acme\",\"endpoint\":\"web\",\"protocol\":\"http\",\"hostnames\":[\"web.relay.test\"],\"listen\":\"127.0.0.1:0\",\"policy\":{policy}}}");
        Assert.That((int)status, Is.EqualTo(400).Or.EqualTo(422), problem?.ToJsonString());
        Assert.That((string?)problem?["type"], Does.StartWith("urn:sitelink:problem:"), problem?.ToJsonString());
        Assert.That((string?)problem?["detail"], Is.Not.Empty);
        Assert.That((await admin.GetAsync("/v1/endpoints/web")).Status, Is.EqualTo(HttpStatusCode.NotFound), "nothing was kept");

        // The audit log says what the caller was answered, not 200.
        var entry = (await AuditAsync(admin, 1)).First(e => (string)e!["action"]! == "POST /v1/endpoints")!;
        Assert.That((int)entry["status"]!, Is.EqualTo((int)status));
    }

    [TestCase("{\"id\": ", "/v1/tenants")]
    [TestCase("{\"id\": 5}", "/v1/tenants")]
    [TestCase("[]", "/v1/tenants")]
    [TestCase("{\"name\":\"t\",\"tenant\":\"acme\",\"allow\":\"*\"}", "/v1/tokens")]
    [TestCase("{\"name\":\"web\",\"tenant\":\"acme\",\"endpoint\":\"web\",\"listen\":\"127.0.0.1:0\",\"idleTimeout\":\"soon\"}", "/v1/endpoints")]
    public async Task Malformed_or_mistyped_JSON_gets_a_typed_problem_that_says_what_is_wrong(string json, string path)
    {
        var (relay, admin) = await StartAsync();
        await using var _ = relay;
        using var __ = admin;

        var (status, problem) = await SendRawAsync(admin, HttpMethod.Post, path, json);
        Assert.That(status, Is.EqualTo(HttpStatusCode.BadRequest));
        Assert.That((string?)problem?["type"], Is.EqualTo("urn:sitelink:problem:malformed"), problem?.ToJsonString());
        Assert.That((string?)problem?["detail"], Does.Contain("JSON"), problem?.ToJsonString());
        var entry = (await AuditAsync(admin, 1)).First(e => (string)e!["action"]! == $"POST {path}")!;
        Assert.That((string)entry["detail"]!, Does.Contain("JSON"), "the audit log says why too");
    }

    [Test]
    public async Task A_query_parameter_of_the_wrong_type_and_an_oversized_body_get_typed_problems()
    {
        var (relay, admin) = await StartAsync();
        await using var _ = relay;
        using var __ = admin;

        var (status, problem, _) = await admin.GetAsync("/v1/tokens?limit=lots");
        Assert.That(status, Is.EqualTo(HttpStatusCode.BadRequest));
        Assert.That((string?)problem?["type"], Is.EqualTo("urn:sitelink:problem:malformed"), problem?.ToJsonString());
        Assert.That((string?)problem?["detail"], Does.Contain("limit"));

        var (tooLarge, tooLargeProblem) = await SendRawAsync(admin, HttpMethod.Post, "/v1/tenants", $"{{\"id\":\"{new string('a', 100_000)}\"}}");
        Assert.That(tooLarge, Is.EqualTo(HttpStatusCode.RequestEntityTooLarge));
        Assert.That((string?)tooLargeProblem?["type"], Is.EqualTo("urn:sitelink:problem:too-large"), tooLargeProblem?.ToJsonString());
    }

    [Test]
    public async Task Echoed_input_is_capped_and_cleaned_in_the_answer_and_the_audit_log()
    {
        var (relay, admin) = await StartAsync();
        await using var _ = relay;
        using var __ = admin;

        var junk = "\u001b[31m\r\nFAKE LOG LINE\u202e" + new string('p', 20_000);
        var (status, problem, _) = await admin.PostAsync("/v1/endpoints", new { name = "web", tenant = "acme", endpoint = "web", listen = junk, protocol = junk });
        Assert.That((int)status, Is.EqualTo(422));
        var detail = (string)problem!["detail"]!;
        var audited = (string)(await AuditAsync(admin, 1)).First(e => (string)e!["action"]! == "POST /v1/endpoints")!["detail"]!;
        Assert.Multiple(() =>
        {
            Assert.That(detail.Length, Is.LessThanOrEqualTo(1100));
            Assert.That(detail.Where(IsUnsafe), Is.Empty, "no control or formatting character is echoed");
            Assert.That(audited.Length, Is.LessThanOrEqualTo(1100));
            Assert.That(audited.Where(IsUnsafe), Is.Empty, "no control or formatting character is audited");
        });
    }

    private static bool IsUnsafe(char c) => char.IsControl(c) || char.GetUnicodeCategory(c) == System.Globalization.UnicodeCategory.Format;

    [Test]
    public async Task Parallel_subscriptions_for_one_tenant_never_exceed_its_cap()
    {
        var (relay, admin) = await StartAsync();
        await using var _ = relay;
        using var __ = admin;
        await admin.ExpectAsync(HttpStatusCode.Created, HttpMethod.Post, "/v1/tenants", new { id = "initech" });

        var statuses = await Task.WhenAll(Enumerable.Range(0, 30).Select(async i =>
            (await admin.PostAsync("/v1/subscriptions", new { tenant = "initech", url = $"http://127.0.0.1:9/hook-{i}", events = new[] { "session.connected" } })).Status)).DefaultTimeout();

        var stored = (await admin.GetAsync("/v1/subscriptions?tenant=initech")).Body!["items"]!.AsArray().Count;
        Assert.Multiple(() =>
        {
            Assert.That(statuses.Count(s => s == HttpStatusCode.Created), Is.EqualTo(10), string.Join(",", statuses));
            Assert.That(statuses.Where(s => s != HttpStatusCode.Created), Is.All.EqualTo(HttpStatusCode.Conflict));
            Assert.That(stored, Is.EqualTo(10));
        });
    }

    [TestCase("sqlite")]
    [TestCase("postgres")]
    public async Task A_tenant_deleted_while_its_tokens_endpoints_and_subscriptions_are_created_leaves_nothing_orphaned(string provider)
    {
        // PostgreSQL's I/O is asynchronous: calls overlap on it as on a busy relay (SQLite's runs on the calling thread).
        await using var postgres = provider == "postgres" ? await PostgresServer.StartAsync() : null;
        var database = postgres is null ? null : await postgres.CreateDatabaseAsync();
        var (relay, admin) = await StartAsync(o =>
        {
            if (database is not null)
            {
                o.Store.Provider = "postgres";
                o.Store.ConnectionString = database;
            }
        });
        await using var _ = relay;
        using var __ = admin;

        for (var round = 0; round < 24; round++)
        {
            var tenant = $"doomed-{round}";
            await admin.ExpectAsync(HttpStatusCode.Created, HttpMethod.Post, "/v1/tenants", new { id = tenant });
            // A connection ready for each call (HTTP/1.1: one call at a time on each), so they reach the relay together.
            await Task.WhenAll(Enumerable.Range(0, 13).Select(_ => admin.GetAsync("/v1/status"))).DefaultTimeout();
            // The delete goes out among the creates, at another place each round.
            var creates = new List<Task<(HttpStatusCode Status, JsonNode? Body, HttpResponseMessage Response)>>();
            Task<(HttpStatusCode Status, JsonNode? Body, HttpResponseMessage Response)>? delete = null;
            for (var i = 0; i < 12; i++)
            {
                if (i == round % 12)
                {
                    delete = admin.SendAsync(HttpMethod.Delete, $"/v1/tenants/{tenant}");
                }

                creates.Add(i switch
                {
                    10 => admin.PostAsync("/v1/endpoints", new { name = $"{tenant}-web", tenant, endpoint = "web", listen = "127.0.0.1:0" }),
                    11 => admin.PostAsync("/v1/subscriptions", new { tenant, url = "http://127.0.0.1:9/hook", events = new[] { "session.connected" } }),
                    _ => admin.PostAsync("/v1/tokens", new { name = $"{tenant}-t{i}", tenant, allow = new[] { "*" } }),
                });
            }

            var created = (await Task.WhenAll(creates).DefaultTimeout()).Count(r => r.Status == HttpStatusCode.Created);
            var deleted = (await delete!.DefaultTimeout()).Status;
            // Either the tenant went (and nothing was created for it) or it stayed (with what was created).
            var tokens = (await admin.GetAsync($"/v1/tokens?tenant={tenant}")).Body!["items"]!.AsArray().Count;
            var endpoints = (await admin.GetAsync($"/v1/endpoints?tenant={tenant}")).Body!["items"]!.AsArray().Count;
            var subscriptions = (await admin.GetAsync($"/v1/subscriptions?tenant={tenant}")).Body!["items"]!.AsArray().Count;
            var exists = (await admin.GetAsync($"/v1/tenants/{tenant}")).Status == HttpStatusCode.OK;
            Assert.That(tokens + endpoints + subscriptions, Is.EqualTo(created), $"round {round}: what was answered 201 is what is stored");
            Assert.That(exists || created == 0, Is.True, $"round {round}: tenant deleted ({deleted}) yet {created} resources were created for it");
            Assert.That(exists, Is.EqualTo(deleted != HttpStatusCode.NoContent), $"round {round}: delete answered {deleted}");
        }
    }

    [Test]
    public async Task An_idle_timeout_too_long_for_the_relay_s_timers_is_refused_rather_than_breaking_every_connection()
    {
        var (relay, admin) = await StartAsync();
        await using var _ = relay;
        using var __ = admin;
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("web", upstream.Uri).DefaultTimeout();

        var (status, body, _) = await admin.PostAsync("/v1/endpoints", new { name = "web", tenant = "acme", endpoint = "web", listen = "127.0.0.1:0", idleTimeout = "100.00:00:00" });
        if (status == HttpStatusCode.Created)
        {
            // Accepted: then it must work.
            using var client = new Socket(SocketType.Stream, ProtocolType.Tcp);
            await client.ConnectAsync(IPEndPoint.Parse((string)body!["address"]!)).DefaultTimeout();
            var (sent, received, length) = await client.EchoRandomAsync(64 * 1024).DefaultTimeout();
            Assert.That(length, Is.EqualTo(64 * 1024), "the endpoint accepted an idle timeout it cannot keep: the connection failed");
            Assert.That(received, Is.EqualTo(sent));
        }
        else
        {
            Assert.That((int)status, Is.EqualTo(422), body?.ToJsonString());
            Assert.That((string)body!["detail"]!, Does.Contain("IdleTimeout"));
        }

        // The longest accepted idle timeout works, and so does infinite.
        var longest = await admin.ExpectAsync(HttpStatusCode.Created, HttpMethod.Post, "/v1/endpoints",
            new { name = "web-long", tenant = "acme", endpoint = "web", listen = "127.0.0.1:0", idleTimeout = "24.00:00:00" });
        using (var client = new Socket(SocketType.Stream, ProtocolType.Tcp))
        {
            await client.ConnectAsync(IPEndPoint.Parse((string)longest!["address"]!)).DefaultTimeout();
            var (sent, received, length) = await client.EchoRandomAsync(64 * 1024).DefaultTimeout();
            Assert.That(length, Is.EqualTo(64 * 1024));
            Assert.That(received, Is.EqualTo(sent));
        }
    }

    [Test]
    public async Task Fifty_parallel_creates_of_one_name_make_one_and_fifty_parallel_updates_with_one_ETag_let_one_win()
    {
        var (relay, admin) = await StartAsync();
        await using var _ = relay;
        using var __ = admin;

        var creates = await Task.WhenAll(Enumerable.Range(0, 50).Select(async _ =>
            (await admin.PostAsync("/v1/tenants", new { id = "initech" })).Status)).DefaultTimeout();
        Assert.That(creates.Count(s => s == HttpStatusCode.Created), Is.EqualTo(1));
        Assert.That(creates.Where(s => s != HttpStatusCode.Created), Is.All.EqualTo(HttpStatusCode.Conflict));

        var tokens = await Task.WhenAll(Enumerable.Range(0, 50).Select(async _ =>
            (await admin.PostAsync("/v1/tokens", new { name = "initech-prod", tenant = "initech", allow = new[] { "*" } })).Status)).DefaultTimeout();
        Assert.That(tokens.Count(s => s == HttpStatusCode.Created), Is.EqualTo(1));
        Assert.That(tokens.Where(s => s != HttpStatusCode.Created), Is.All.EqualTo(HttpStatusCode.Conflict));

        var etag = (await admin.GetAsync("/v1/tokens/initech-prod")).Response.Headers.ETag!.Tag;
        var updates = await Task.WhenAll(Enumerable.Range(0, 50).Select(async i =>
            (await admin.SendAsync(HttpMethod.Put, "/v1/tokens/initech-prod", new { allow = new[] { $"svc-{i}" } }, ifMatch: etag)).Status)).DefaultTimeout();
        Assert.That(updates.Count(s => s == HttpStatusCode.OK), Is.EqualTo(1));
        Assert.That(updates.Where(s => s != HttpStatusCode.OK), Is.All.EqualTo(HttpStatusCode.PreconditionFailed));
        Assert.That((await admin.GetAsync("/v1/tenants?limit=500")).Body!["items"]!.AsArray().Count(t => (string)t!["id"]! == "initech"), Is.EqualTo(1));
    }

    [Test]
    public async Task A_flood_of_bad_keys_from_one_address_does_not_lock_out_another_address()
    {
        var (relay, admin) = await StartAsync();
        await using var _ = relay;
        using var __ = admin;
        using var attacker = From(relay, IPAddress.Parse("127.0.0.2"), "not-a-key-0123456789abcdefghijklmnop");
        using var elsewhere = From(relay, IPAddress.Parse("127.0.0.3"), AdminClient.ReadKey);

        var statuses = new List<HttpStatusCode>();
        for (var i = 0; i < 30; i++)
        {
            using var response = await attacker.GetAsync("/v1/tenants").DefaultTimeout();
            statuses.Add(response.StatusCode);
        }

        // Twenty guesses are checked (and audited), then the address is answered 429.
        Assert.That(statuses.Take(20), Is.All.EqualTo(HttpStatusCode.Unauthorized));
        Assert.That(statuses.Skip(20), Has.Some.EqualTo(HttpStatusCode.TooManyRequests));
        using var served = await elsewhere.GetAsync("/v1/tenants").DefaultTimeout();
        Assert.That(served.StatusCode, Is.EqualTo(HttpStatusCode.OK), "another address is unaffected");
        Assert.That((await admin.GetAsync("/v1/status")).Status, Is.EqualTo(HttpStatusCode.OK));
    }

    [Test]
    public async Task Every_address_that_keeps_failing_is_throttled_after_its_burst()
    {
        var (relay, admin) = await StartAsync();
        await using var _ = relay;
        using var __ = admin;
        var unthrottled = new List<string>();
        for (var a = 10; a < 40; a++)
        {
            using var attacker = From(relay, IPAddress.Parse($"127.0.0.{a}"), "not-a-key-0123456789abcdefghijklmnop");
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var checkedGuesses = 0;
            var throttled = false;
            for (var i = 0; i < 30; i++)
            {
                using var response = await attacker.GetAsync("/v1/tenants").DefaultTimeout();
                checkedGuesses += response.StatusCode == HttpStatusCode.Unauthorized ? 1 : 0;
                throttled |= response.StatusCode == HttpStatusCode.TooManyRequests;
            }

            // The burst, plus what refilled (one a second) while this address tried.
            if (!throttled || checkedGuesses > 20 + (int)Math.Ceiling(clock.Elapsed.TotalSeconds))
            {
                unthrottled.Add($"127.0.0.{a}: {checkedGuesses} checked in {clock.Elapsed.TotalSeconds:F1} s");
            }
        }

        Assert.That(unthrottled, Is.Empty);
    }

    /// <summary>An admin client whose connections come from <paramref name="source"/> (a loopback address of its own).</summary>
    private static HttpClient From(TestRelay relay, IPAddress source, string key)
    {
        var pin = relay.Server.CertificateSha256;
        var handler = new SocketsHttpHandler
        {
            SslOptions = { RemoteCertificateValidationCallback = AdminClient.PinnedTo(pin) },
            ConnectCallback = async (context, cancellationToken) =>
            {
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
                try
                {
                    socket.Bind(new IPEndPoint(source, 0));
                    await socket.ConnectAsync(context.DnsEndPoint, cancellationToken);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        };
        var client = new HttpClient(handler) { BaseAddress = relay.Server.AdminUrl, Timeout = TimeSpan.FromSeconds(30) };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        return client;
    }
}
