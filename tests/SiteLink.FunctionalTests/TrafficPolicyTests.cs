using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;
using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Hosting;
using SiteLink.Relay.Security;

namespace SiteLink.FunctionalTests;

/// <summary>C13: a cloud endpoint's traffic policy, evaluated at the relay before the agent is asked for anything.</summary>
[TestFixture]
[Category("TrafficPolicy")]
public sealed class TrafficPolicyTests
{
    private static readonly IPAddress Allowed = IPAddress.Parse("127.0.0.2");
    private static readonly IPAddress Denied = IPAddress.Parse("127.0.0.3");

    /// <summary>A TCP client whose source address is <paramref name="from"/> (any of 127.0.0.0/8 works on loopback).</summary>
    private static async Task<Socket> ConnectFromAsync(IPAddress from, IPEndPoint to)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        socket.Bind(new IPEndPoint(from, 0));
        await socket.ConnectAsync(to).DefaultTimeout();
        return socket;
    }

    /// <summary>
    /// Whether a connection from <paramref name="from"/> to an echo endpoint is denied now: reset or closed (true), or
    /// its byte echoed back (false). Unlike waiting for a close, it answers either way.
    /// </summary>
    private static async Task<bool> DeniedEchoAsync(IPAddress from, IPEndPoint to)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(from, 0));
        try
        {
            await socket.ConnectAsync(to).DefaultTimeout();
            await socket.SendAsync(new byte[] { 42 });
            var one = new byte[1];
            return await socket.ReceiveAsync(one.AsMemory()).AsTask().DefaultTimeout() == 0;
        }
        catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionReset or SocketError.ConnectionRefused)
        {
            return true;
        }
    }

    /// <summary>An HttpClient whose connections go to <paramref name="to"/> from <paramref name="from"/>.</summary>
    private static HttpClient HttpFrom(IPAddress from, IPEndPoint to) => new(new SocketsHttpHandler
    {
        UseProxy = false,
        ConnectCallback = async (_, ct) =>
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            socket.Bind(new IPEndPoint(from, 0));
            await socket.ConnectAsync(to, ct);
            return new NetworkStream(socket, ownsSocket: true);
        },
    }) { Timeout = TimeSpan.FromSeconds(30) };

    private static async Task AssertEchoesAsync(Socket socket, int size = 1024 * 1024)
    {
        var (sent, received, length) = await socket.EchoRandomAsync(size);
        Assert.That(length, Is.EqualTo(size));
        Assert.That(received, Is.EqualTo(sent));
    }

    private static PolicyRuleOptions Rule(string type, Action<PolicyRuleOptions>? configure = null)
    {
        var rule = new PolicyRuleOptions { Type = type };
        configure?.Invoke(rule);
        return rule;
    }

    [Test]
    public async Task TcpEndpoint_RestrictIps_DeniedClientIsResetBeforeTheAgentHearsOfIt()
    {
        await using var relay = await TestRelay.StartAsync(["echo"], o => o.CloudEndpoints[0].Policy.OnConnect.Add(Rule("restrict-ips", r =>
        {
            r.Allow.Add("127.0.0.0/8");
            r.Deny.Add("127.0.0.3");
        })));
        await using var upstream = TestUpstream.Echo();
        await (await relay.ConnectAgentAsync()).ForwardAsync("echo", upstream.Uri).DefaultTimeout();

        using (var allowed = await ConnectFromAsync(Allowed, relay.CloudEndpoint("echo")))
        {
            await AssertEchoesAsync(allowed);
        }

        var closed = await SocketTestExtensions.ConnectAndWaitForCloseAsync(from: Denied, to: relay.CloudEndpoint("echo"));

        Assert.Multiple(() =>
        {
            Assert.That(closed, Is.True, "the denied client's connection is closed");
            Assert.That(upstream.Accepted, Is.EqualTo(1), "only the allowed client reached the customer's network");
            Assert.That(relay.Server.Counters.PolicyDenials("on_connect[0]:restrict-ips"), Is.EqualTo(1));
            Assert.That(relay.Logs.Entries.Select(e => e.Message), Has.Some.Contain("127.0.0.3").And.Contain("denied by policy rule 'on_connect[0]:restrict-ips'").And.Contain("denied range"));
        });
    }

    [Test]
    public async Task TcpEndpoint_RateLimit_ABurstPerClient_ThenRefused_OtherClientsUnaffected()
    {
        await using var relay = await TestRelay.StartAsync(["echo"], o => o.CloudEndpoints[0].Policy.OnConnect.Add(Rule("rate-limit", r =>
        {
            r.Name = "three-then-wait";
            r.Capacity = 3;
            r.PerSecond = 0.01;
        })));
        await using var upstream = TestUpstream.Echo();
        await (await relay.ConnectAgentAsync()).ForwardAsync("echo", upstream.Uri).DefaultTimeout();

        for (var i = 0; i < 3; i++)
        {
            using var socket = await ConnectFromAsync(Allowed, relay.CloudEndpoint("echo"));
            await AssertEchoesAsync(socket, 64 * 1024);
        }

        var refused = await SocketTestExtensions.ConnectAndWaitForCloseAsync(from: Allowed, to: relay.CloudEndpoint("echo"));
        using var other = await ConnectFromAsync(Denied, relay.CloudEndpoint("echo"));
        await AssertEchoesAsync(other, 64 * 1024);

        Assert.Multiple(() =>
        {
            Assert.That(refused, Is.True, "the fourth connection in the burst is refused");
            Assert.That(upstream.Accepted, Is.EqualTo(4), "three from one client, one from another");
            Assert.That(relay.Server.Counters.PolicyDenials("three-then-wait"), Is.EqualTo(1));
        });
    }

    private static CloudEndpointOptions HttpEndpoint(Action<TrafficPolicyOptions> policy)
    {
        var endpoint = new CloudEndpointOptions
        {
            Name = "web", Protocol = "http", Listen = "127.0.0.1:0", Tenant = "acme", Endpoint = "web", KeepAliveTimeout = TimeSpan.FromSeconds(1),
        };
        endpoint.Hostnames.Add("web.relay.test");
        policy(endpoint.Policy);
        return endpoint;
    }

    /// <summary>A basic-auth PasswordHash made as the documented format says (PBKDF2-HMAC-SHA256, base64 salt and hash).</summary>
    internal static string PasswordHash(string password)
    {
        var salt = RandomNumberGenerator.GetBytes(16);
        var hash = Rfc2898DeriveBytes.Pbkdf2(Encoding.UTF8.GetBytes(password), salt, 10_000, HashAlgorithmName.SHA256, 32);
        return $"pbkdf2-sha256$10000${Convert.ToBase64String(salt)}${Convert.ToBase64String(hash)}";
    }

    private static string Basic(string user, string password) => Convert.ToBase64String(Encoding.UTF8.GetBytes($"{user}:{password}"));

    [Test]
    public async Task HttpEndpoint_BasicAuth_IpRules_AndHeaderRules()
    {
        var hash = PasswordHash("correct horse");
        await using var relay = await TestRelay.StartAsync([], o => o.CloudEndpoints.Add(HttpEndpoint(policy =>
        {
            policy.OnConnect.Add(Rule("restrict-ips", r => r.Deny.Add("127.0.0.3/32")));
            policy.OnHttpRequest.Add(Rule("basic-auth", r =>
            {
                r.Realm = "acme admin";
                r.Users.Add(new BasicAuthUserOptions { Name = "ops", PasswordHash = hash });
            }));
            policy.OnHttpRequest.Add(Rule("add-headers", r => r.Headers["X-Authenticated-User"] = "${auth.user} from ${client.ip}"));
            policy.OnHttpRequest.Add(Rule("remove-headers", r => r.Names.Add("Authorization")));
            policy.OnHttpResponse.Add(Rule("add-headers", r => r.Headers["X-Relay-Policy"] = "on"));
            policy.OnHttpResponse.Add(Rule("remove-headers", r => r.Names.Add("Server")));
        })));
        await using var web = await WebUpstream.StartAsync("acme");
        await (await relay.ConnectAgentAsync()).ForwardAsync("web", web.Uri).DefaultTimeout();
        var endpoint = relay.CloudEndpoint("web");
        var url = $"http://web.relay.test:{endpoint.Port}/all-headers";
        using var client = HttpFrom(Allowed, endpoint);
        using var denied = HttpFrom(Denied, endpoint);

        using var anonymous = await client.GetAsync(url).DefaultTimeout();
        using var wrongRequest = new HttpRequestMessage(HttpMethod.Get, url) { Headers = { Authorization = new AuthenticationHeaderValue("Basic", Basic("ops", "wrong")) } };
        using var wrong = await client.SendAsync(wrongRequest).DefaultTimeout();
        using var rightRequest = new HttpRequestMessage(HttpMethod.Get, url) { Headers = { Authorization = new AuthenticationHeaderValue("Basic", Basic("ops", "correct horse")) } };
        // A client claiming an identity itself: replaced by the one the relay established.
        rightRequest.Headers.Add("X-Authenticated-User", "admin");
        using var right = await client.SendAsync(rightRequest).DefaultTimeout();
        var seenUpstream = await right.Content.ReadAsStringAsync();
        using var deniedRequest = new HttpRequestMessage(HttpMethod.Get, url) { Headers = { Authorization = new AuthenticationHeaderValue("Basic", Basic("ops", "correct horse")) } };
        using var fromDenied = await denied.SendAsync(deniedRequest).DefaultTimeout();

        Assert.Multiple(async () =>
        {
            Assert.That(anonymous.StatusCode, Is.EqualTo(HttpStatusCode.Unauthorized));
            Assert.That(anonymous.Headers.WwwAuthenticate.ToString(), Does.Contain("Basic realm=\"acme admin\""));
            Assert.That(wrong.StatusCode, Is.EqualTo(HttpStatusCode.Unauthorized));
            Assert.That(right.StatusCode, Is.EqualTo(HttpStatusCode.OK));
            Assert.That(seenUpstream, Does.Contain("X-Authenticated-User: ops from 127.0.0.2\n"), "the identity passed on as a header");
            Assert.That(seenUpstream, Does.Not.Contain("Authorization"), "the credentials never leave the relay");
            Assert.That(right.Headers.GetValues("X-Relay-Policy"), Is.EqualTo(new[] { "on" }));
            Assert.That(right.Headers.Contains("Server"), Is.False, "removed from the upstream's response");
            Assert.That(fromDenied.StatusCode, Is.EqualTo(HttpStatusCode.Forbidden));
            Assert.That(await fromDenied.Content.ReadAsStringAsync(), Does.Contain("rule 'on_connect[0]:restrict-ips'"));
            Assert.That(web.Connections, Is.EqualTo(1), "only the authorised request reached the upstream");
            Assert.That(relay.Server.Counters.PolicyDenials("on_http_request[0]:basic-auth"), Is.EqualTo(2));
            Assert.That(relay.Logs.Entries.Select(e => e.Message), Has.None.Contain("correct horse").And.None.Contain(Basic("ops", "correct horse")), "never a password in the log");
        });
    }

    [Test]
    public async Task HttpEndpoint_DenyRule_AnswersItsStatusAndBody()
    {
        await using var relay = await TestRelay.StartAsync([], o => o.CloudEndpoints.Add(HttpEndpoint(policy =>
            policy.OnHttpRequest.Add(Rule("deny", r =>
            {
                r.Status = 451;
                r.Body = "closed for maintenance\n";
            })))));
        await using var web = await WebUpstream.StartAsync("acme");
        await (await relay.ConnectAgentAsync()).ForwardAsync("web", web.Uri).DefaultTimeout();
        using var client = HttpFrom(Allowed, relay.CloudEndpoint("web"));

        using var response = await client.GetAsync($"http://web.relay.test:{relay.CloudEndpoint("web").Port}/").DefaultTimeout();

        Assert.Multiple(async () =>
        {
            Assert.That((int)response.StatusCode, Is.EqualTo(451));
            Assert.That(await response.Content.ReadAsStringAsync(), Is.EqualTo("closed for maintenance\n"));
            Assert.That(web.Connections, Is.Zero);
        });
    }

    [Test]
    public async Task InvalidPolicy_RelayRefusesToStart_ListingEveryProblem()
    {
        var ex = Assert.ThrowsAsync<RelayConfigurationException>(() => TestRelay.StartAsync(["echo"], o =>
        {
            var policy = o.CloudEndpoints[0].Policy;
            policy.OnConnect.Add(Rule("restrict-ips", r => r.Allow.Add("10.0.0.1/8")));
            policy.OnConnect.Add(Rule("rate-limit", r => r.Capacity = 0));
            policy.OnConnect.Add(Rule("teleport"));
            policy.OnHttpRequest.Add(Rule("basic-auth", r => r.Users.Add(new BasicAuthUserOptions { Name = "ops", PasswordHash = "hunter2" })));
        }));

        Assert.That(ex!.Message, Does.Contain("OnConnect[0]:Allow[0] '10.0.0.1/8' has bits set past its /8 prefix: write 10.0.0.0/8 for the range, or 10.0.0.1/32")
            .And.Contain("OnConnect[1]:Capacity must be from 1")
            .And.Contain("OnConnect[1]:PerSecond must be from 0.001")
            .And.Contain("OnConnect[2]:Type 'teleport' is not one of restrict-ips, rate-limit")
            .And.Contain("OnHttpRequest[0]:Users[0]:PasswordHash of 'ops' is not pbkdf2-sha256")
            .And.Contain("OnHttpRequest and OnHttpResponse apply to http and https endpoints")
            .And.Not.Contain("hunter2"));
    }

    [Test]
    public async Task PolicyEditedInTheConfigurationFile_AppliesToNewConnections_EstablishedOnesGoOn_ABadEditIsRefusedWhole()
    {
        const string token = "acme-policy-token-q3Vx9LmT2pRkA7bYz1W";
        var directory = Directory.CreateTempSubdirectory("sitelink-policy-reload-");
        try
        {
            var path = Path.Combine(directory.FullName, "relay.json");
            void Write(object[] onConnect) => File.WriteAllText(path, JsonSerializer.Serialize(new
            {
                Relay = new
                {
                    RelayId = "policy-relay",
                    AgentListen = "127.0.0.1:0",
                    Tokens = new[] { new { Name = "acme", Token = token, Tenant = "acme", Allow = new[] { "*" } } },
                    CloudEndpoints = new[] { new { Name = "echo", Listen = "127.0.0.1:0", Tenant = "acme", Endpoint = "echo", Policy = new { OnConnect = onConnect } } },
                },
            }));
            Write([]);
            var logs = new TestLogSink();
            var (started, certificate) = await FileRelay.StartAsync(path, logs);
            await using var app = started;
            var cloud = RelayApplication.CloudEndpoints(app)["echo"];
            await using var upstream = TestUpstream.Echo();
            await using var agent = await TunnelSession.ConnectAsync(new TunnelSessionOptions
            {
                RelayUrl = RelayApplication.AgentUrl(app, tls: true),
                AuthToken = token,
                PinnedCertificateSha256 = RelayCertificate.Sha256Of(certificate),
            }).DefaultTimeout();
            await agent.ForwardAsync("echo", upstream.Uri).DefaultTimeout();
            using var established = await ConnectFromAsync(Denied, cloud);
            await established.SendAllAsync("before "u8.ToArray());

            // The operator denies 127.0.0.3.
            Write([new { Type = "restrict-ips", Deny = new[] { "127.0.0.3" } }]);
            await Eventually.WaitUntilAsync(() => DeniedEchoAsync(Denied, cloud), "a new connection from 127.0.0.3 is denied");
            using (var allowed = await ConnectFromAsync(Allowed, cloud))
            {
                await AssertEchoesAsync(allowed, 256 * 1024);
            }

            // A bad edit: refused as a whole, every problem named, the policy in force stays.
            Write([new { Type = "restrict-ips", Deny = new[] { "127.0.0.300" } }, new { Type = "rate-limit", Capacity = 0, PerSecond = 1 }]);
            await Eventually.WaitUntilAsync(() => logs.Entries.Any(e => e.EventId.Id == 41), "the bad edit was refused");
            var refusal = logs.Entries.First(e => e.EventId.Id == 41).Message;

            await established.SendAllAsync("after"u8.ToArray());
            established.Shutdown(SocketShutdown.Send);
            var echoed = await established.ReadToEndAsync().DefaultTimeout();

            Assert.Multiple(async () =>
            {
                Assert.That(Encoding.ASCII.GetString(echoed), Is.EqualTo("before after"), "the connection open before the change went on");
                Assert.That(refusal, Does.Contain("OnConnect[0]:Deny[0] '127.0.0.300'").And.Contain("OnConnect[1]:Capacity must be from 1"));
                Assert.That(await DeniedEchoAsync(Denied, cloud), Is.True, "the last good policy is still in force");
                Assert.That(await DeniedEchoAsync(Allowed, cloud), Is.False);
                Assert.That(logs.Entries.Count(e => e.EventId.Id == 42), Is.EqualTo(1), "one reload applied");
            });
        }
        finally
        {
            directory.Delete(recursive: true);
        }
    }
}
