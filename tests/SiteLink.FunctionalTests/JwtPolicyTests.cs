using System.Net;
using System.Net.Http.Headers;
using System.Security.Claims;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Relay.Configuration;

namespace SiteLink.FunctionalTests;

/// <summary>C13: a jwt rule, with its keys served as a real JWKS document by a local Kestrel (and rotated).</summary>
[TestFixture]
[Category("TrafficPolicy")]
public sealed class JwtPolicyTests
{
    internal const string Issuer = "https://idp.test";
    internal const string Audience = "relay-api";

    /// <summary>An identity provider's key set on http://127.0.0.1:PORT/jwks: whatever keys it is told to publish.</summary>
    internal sealed class JwksServer : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private volatile string _document = """{"keys":[]}""";

        private JwksServer(WebApplication app) => _app = app;

        public Uri Url { get; private set; } = null!;

        public int Fetches;

        public static async Task<JwksServer> StartAsync()
        {
            var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
            builder.WebHost.UseKestrelCore().ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
            builder.Logging.ClearProviders();
            var app = builder.Build();
            var server = new JwksServer(app);
            app.Run(async context =>
            {
                Interlocked.Increment(ref server.Fetches);
                context.Response.ContentType = "application/json";
                await context.Response.WriteAsync(server._document);
            });
            server.Url = new Uri(await app.StartAndGetAddressAsync(), "/jwks");
            return server;
        }

        public void Publish(params RsaSecurityKey[] keys) => _document = JsonSerializer.Serialize(new
        {
            keys = keys.Select(k => JsonWebKeyConverter.ConvertFromRSASecurityKey(k)).Select(k => new { kty = "RSA", use = "sig", alg = "RS256", kid = k.KeyId, n = k.N, e = k.E }),
        });

        public ValueTask DisposeAsync() => _app.DisposeAsync();
    }

    internal static RsaSecurityKey NewKey(string id) => new(RSA.Create(2048)) { KeyId = id };

    internal static string Token(RsaSecurityKey key, string subject = "alice", string issuer = Issuer, string audience = Audience, string scope = "read write", TimeSpan? expiresIn = null)
    {
        var now = DateTime.UtcNow;
        var expires = now + (expiresIn ?? TimeSpan.FromMinutes(5));
        return new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
        {
            Issuer = issuer,
            Audience = audience,
            Subject = new ClaimsIdentity([new Claim("sub", subject), new Claim("scope", scope)]),
            IssuedAt = expires.AddMinutes(-10),
            NotBefore = expires.AddMinutes(-10),
            Expires = expires,
            SigningCredentials = new SigningCredentials(key, SecurityAlgorithms.RsaSha256),
        });
    }

    private static string Base64Url(string json) => Base64UrlEncoder.Encode(Encoding.UTF8.GetBytes(json));

    /// <summary>A relay whose http endpoint "api" has the jwt rule (then the subject as a header, the token removed), its agent, the service, the key set, a client.</summary>
    private sealed record Setup(TestRelay Relay, WebUpstream Web, JwksServer Jwks, HttpClient Client, string Url) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            Client.Dispose();
            await Relay.DisposeAsync();
            await Web.DisposeAsync();
            await Jwks.DisposeAsync();
        }
    }

    private static async Task<Setup> StartAsync(Action<TrafficPolicyOptions>? afterJwt = null)
    {
        var jwks = await JwksServer.StartAsync();
        var relay = await TestRelay.StartAsync([], o =>
        {
            var endpoint = new CloudEndpointOptions { Name = "api", Protocol = "http", Listen = "127.0.0.1:0", Tenant = "acme", Endpoint = "api", KeepAliveTimeout = TimeSpan.FromSeconds(1) };
            endpoint.Hostnames.Add("api.relay.test");
            var jwt = new PolicyRuleOptions { Type = "jwt", Issuer = Issuer, JwksUrl = jwks.Url.ToString(), JwksRefreshInterval = TimeSpan.FromSeconds(1), ClockSkew = TimeSpan.FromSeconds(30) };
            jwt.Audiences.Add(Audience);
            jwt.RequiredClaims["scope"] = "read";
            endpoint.Policy.OnHttpRequest.Add(jwt);
            afterJwt?.Invoke(endpoint.Policy);
            var add = new PolicyRuleOptions { Type = "add-headers" };
            add.Headers["X-Subject"] = "${auth.user}";
            endpoint.Policy.OnHttpRequest.Add(add);
            var remove = new PolicyRuleOptions { Type = "remove-headers" };
            remove.Names.Add("Authorization");
            endpoint.Policy.OnHttpRequest.Add(remove);
            o.CloudEndpoints.Add(endpoint);
        });
        var web = await WebUpstream.StartAsync("api");
        await (await relay.ConnectAgentAsync()).ForwardAsync("api", web.Uri).DefaultTimeout();
        var target = relay.CloudEndpoint("api");
        var client = new HttpClient(new SocketsHttpHandler
        {
            UseProxy = false,
            ConnectCallback = async (_, ct) =>
            {
                var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp) { NoDelay = true };
                await socket.ConnectAsync(target, ct);
                return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
            },
        }) { Timeout = TimeSpan.FromSeconds(30) };
        return new Setup(relay, web, jwks, client, $"http://api.relay.test:{target.Port}/all-headers");
    }

    private static async Task<(HttpStatusCode Status, string Body, string Challenge)> GetAsync(HttpClient client, string url, string? token)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, url);
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        using var response = await client.SendAsync(request).DefaultTimeout();
        return (response.StatusCode, await response.Content.ReadAsStringAsync(), response.Headers.WwwAuthenticate.ToString());
    }

    [Test]
    public async Task GoodTokensPass_WithTheSubjectPassedOn_EveryBadOneIsRefusedWithItsReason()
    {
        await using var setup = await StartAsync();
        var (relay, web, jwks, client, url) = setup;
        var key = NewKey("k1");
        jwks.Publish(key);
        var good = Token(key);
        var parts = good.Split('.');
        var tampered = $"{parts[0]}.{Base64Url("""{"sub":"mallory","scope":"read","iss":"https://idp.test","aud":"relay-api","exp":4102444800}""")}.{parts[2]}";
        var unsigned = $"{Base64Url("""{"alg":"none","typ":"JWT"}""")}.{parts[1]}.";

        // The request's activity (ASP.NET Core's, in the relay) carries who it was.
        var subjects = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using var listener = new System.Diagnostics.ActivityListener
        {
            ShouldListenTo = source => source.Name == "Microsoft.AspNetCore",
            Sample = (ref System.Diagnostics.ActivityCreationOptions<System.Diagnostics.ActivityContext> _) => System.Diagnostics.ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = activity =>
            {
                if (activity.GetTagItem("enduser.id") is string subject)
                {
                    subjects.Enqueue(subject);
                }
            },
        };
        System.Diagnostics.ActivitySource.AddActivityListener(listener);
        var ok = await GetAsync(client, url, good);
        var cases = new Dictionary<string, (HttpStatusCode Status, string Body, string Challenge)>
        {
            ["no token"] = await GetAsync(client, url, null),
            ["expired"] = await GetAsync(client, url, Token(key, expiresIn: TimeSpan.FromMinutes(-2))),
            ["wrong audience"] = await GetAsync(client, url, Token(key, audience: "another-api")),
            ["wrong issuer"] = await GetAsync(client, url, Token(key, issuer: "https://evil.test")),
            ["unsigned"] = await GetAsync(client, url, unsigned),
            ["tampered"] = await GetAsync(client, url, tampered),
            ["unknown key"] = await GetAsync(client, url, Token(NewKey("k-stranger"))),
            ["missing scope"] = await GetAsync(client, url, Token(key, scope: "write")),
        };

        Assert.Multiple(() =>
        {
            Assert.That(ok.Status, Is.EqualTo(HttpStatusCode.OK));
            Assert.That(ok.Body, Does.Contain("X-Subject: alice\n"), "the token's subject passed on");
            Assert.That(ok.Body, Does.Not.Contain("Authorization"), "the token never leaves the relay");
            Assert.That(subjects, Does.Contain("alice"), "the subject on the request's activity (enduser.id)");
            foreach (var (name, answer) in cases)
            {
                Assert.That(answer.Status, Is.EqualTo(name == "missing scope" ? HttpStatusCode.Forbidden : HttpStatusCode.Unauthorized), name);
                Assert.That(answer.Challenge, Does.StartWith("Bearer realm=\"api\""), name);
            }

            Assert.That(cases["expired"].Challenge, Does.Contain("expired"));
            Assert.That(cases["wrong audience"].Challenge, Does.Contain("wrong audience"));
            Assert.That(cases["wrong issuer"].Challenge, Does.Contain("wrong issuer"));
            Assert.That(cases["missing scope"].Challenge, Does.Contain("insufficient_scope"));
            Assert.That(web.Connections, Is.EqualTo(1), "only the good request reached the service");
            var log = string.Join("\n", relay.Logs.Entries.Select(e => e.Message));
            Assert.That(log, Does.Contain("invalid token: expired").And.Contain("invalid token: wrong audience").And.Contain("the token has no claim scope=read"));
            Assert.That(log, Does.Not.Contain(parts[2]), "never a token in the log");
        });
    }

    [Test]
    public async Task KeyRotation_ANewKeyIdIsPickedUp_WithoutARestart()
    {
        await using var setup = await StartAsync();
        var (relay, web, jwks, client, url) = setup;
        var first = NewKey("2026-11");
        jwks.Publish(first);
        Assert.That((await GetAsync(client, url, Token(first))).Status, Is.EqualTo(HttpStatusCode.OK));
        var fetchesBefore = Volatile.Read(ref jwks.Fetches);

        // The identity provider rotates: a new key id, the old one withdrawn.
        var second = NewKey("2026-12");
        jwks.Publish(second);
        var token = Token(second);
        await Eventually.WaitUntilAsync(async () => (await GetAsync(client, url, token)).Status == HttpStatusCode.OK, "a token signed with the new key is accepted");

        Assert.That(Volatile.Read(ref jwks.Fetches), Is.GreaterThan(fetchesBefore), "the key set was fetched again");
        Assert.That(Volatile.Read(ref jwks.Fetches), Is.LessThan(fetchesBefore + 20), "at most one fetch per JwksRefreshInterval, not one per request");
    }

    [Test]
    public async Task RequestRateLimit_PerTokenSubject_EachSubjectHasItsOwnBudget()
    {
        await using var setup = await StartAsync(policy => policy.OnHttpRequest.Add(new PolicyRuleOptions { Type = "rate-limit", Key = "subject", Capacity = 2, PerSecond = 0.01 }));
        var (relay, _, jwks, client, url) = setup;
        var key = NewKey("k1");
        jwks.Publish(key);
        var alice = Token(key, subject: "alice");
        var bob = Token(key, subject: "bob");

        var aliceAnswers = new List<HttpStatusCode>();
        for (var i = 0; i < 3; i++)
        {
            aliceAnswers.Add((await GetAsync(client, url, alice)).Status);
        }

        var bobAnswer = (await GetAsync(client, url, bob)).Status;

        Assert.Multiple(() =>
        {
            Assert.That(aliceAnswers, Is.EqualTo(new[] { HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.TooManyRequests }), "alice's budget of two, from one client address");
            Assert.That(bobAnswer, Is.EqualTo(HttpStatusCode.OK), "bob, from the same address, has his own");
            Assert.That(relay.Logs.Entries.Select(e => e.Message), Has.Some.Contain("user 'alice' is past the rate limit"));
        });
    }
}
