using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Relay.Configuration;

namespace SiteLink.FunctionalTests;

/// <summary>
/// Cloud endpoints created, changed and removed while the relay runs (what the admin API applies): listeners and
/// host-name routes start and stop without a restart, established connections of the endpoints concerned finish as
/// they started, those of the others are not touched. A real relay, real SDK agents, real sockets.
/// </summary>
[TestFixture]
[Category("AdminApi")]
public sealed class RuntimeEndpointTests
{
    // Log events of CloudEndpointHost (Diagnostics/RelayLog).
    private const int Started = 50;
    private const int Stopped = 51;
    private const int Replaced = 52;
    private const int Updated = 53;
    private const int NotApplied = 54;
    private const int ListenerStopped = 55;
    private const string HostCategory = "SiteLink.Relay.CloudEndpoints.CloudEndpointHost";

    private static CloudEndpointOptions Tcp(string name, string endpoint, string listen = "127.0.0.1:0") =>
        new() { Name = name, Listen = listen, Tenant = "acme", Endpoint = endpoint };

    private static CloudEndpointOptions Shared(string name, string protocol, string endpoint, string hostname, string listen = "127.0.0.1:0")
    {
        // Idle keep-alive tunnelled connections closed after 1 s, so the agents' graceful close at the end is quick.
        var options = new CloudEndpointOptions { Name = name, Protocol = protocol, Listen = listen, Tenant = "acme", Endpoint = endpoint, KeepAliveTimeout = TimeSpan.FromSeconds(1) };
        options.Hostnames.Add(hostname);
        return options;
    }

    private static async Task ApplyAsync(TestRelay relay, params CloudEndpointOptions[] endpoints)
    {
        var problems = await relay.Server.ApplyRuntimeCloudEndpointsAsync(endpoints).DefaultTimeout();
        Assert.That(problems, Is.Empty, string.Join("; ", problems.Select(p => $"{p.Endpoint}: {p.Message}")));
    }

    private static int Events(TestRelay relay, int id) => relay.Logs.Entries.Count(e => e.Category == HostCategory && e.EventId.Id == id);

    /// <summary>Sends a few bytes through an echo and reads them back: the connection is bridged to the agent.</summary>
    private static async Task AssertEchoesAsync(Socket socket)
    {
        var ping = RandomNumberGenerator.GetBytes(16);
        await socket.SendAllAsync(ping).DefaultTimeout();
        var echoed = new byte[ping.Length];
        for (var read = 0; read < echoed.Length;)
        {
            var n = await socket.ReceiveAsync(echoed.AsMemory(read), SocketFlags.None).DefaultTimeout();
            Assert.That(n, Is.Positive, "the echo closed early");
            read += n;
        }

        Assert.That(echoed, Is.EqualTo(ping));
    }

    [Test]
    public async Task TcpEndpoint_AddedAtRuntime_CarriesVerifiedBytes_AndRemoved_RefusesNewConnections_WhileAnEstablishedOneGoesOn()
    {
        await using var relay = await TestRelay.StartAsync([]);
        await using var echo = TestUpstream.Echo();
        await (await relay.ConnectAgentAsync()).ForwardAsync("db", echo.Uri).DefaultTimeout();

        await ApplyAsync(relay, Tcp("rt-db", "db"));
        var address = relay.CloudEndpoint("rt-db");
        using (var client = await relay.ConnectClientAsync("rt-db"))
        {
            var (sent, received, length) = await client.EchoRandomAsync(2 * 1024 * 1024).DefaultTimeout();
            Assert.Multiple(() =>
            {
                Assert.That(length, Is.EqualTo(2 * 1024 * 1024));
                Assert.That(received, Is.EqualTo(sent), "2 MiB echoed through the endpoint added at runtime");
            });
        }

        using var established = await relay.ConnectClientAsync("rt-db");
        await AssertEchoesAsync(established);
        await Eventually.WaitUntilAsync(() => relay.Server.CloudEndpointConnections.GetValueOrDefault("rt-db") == 1, "one connection open on rt-db");

        await ApplyAsync(relay);

        var refused = await SocketTestExtensions.ConnectAndWaitForCloseAsync(address).DefaultTimeout();
        var (sentAfter, receivedAfter, lengthAfter) = await established.EchoRandomAsync(1024 * 1024).DefaultTimeout();
        Assert.Multiple(() =>
        {
            Assert.That(refused, Is.True, "the removed endpoint's port takes no new connection");
            Assert.That(() => relay.CloudEndpoint("rt-db"), Throws.InstanceOf<KeyNotFoundException>(), "no longer bound");
            Assert.That(relay.Server.CloudEndpointConnections, Does.Not.ContainKey("rt-db"));
            Assert.That(lengthAfter, Is.EqualTo(1024 * 1024));
            Assert.That(receivedAfter, Is.EqualTo(sentAfter), "the connection opened before the removal carried 1 MiB more, verified, until it closed");
            Assert.That(Events(relay, Started), Is.EqualTo(1));
            Assert.That(Events(relay, Stopped), Is.EqualTo(1));
        });
    }

    [Test]
    public async Task HttpEndpoints_OnOneListener_AStreamingRequestOnAFinishes_WhileBIsRemovedAndCIsAdded()
    {
        await using var relay = await TestRelay.StartAsync([]);
        await using var webA = await WebUpstream.StartAsync("a");
        await using var webB = await WebUpstream.StartAsync("b");
        await using var webC = await WebUpstream.StartAsync("c");
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("web-a", webA.Uri).DefaultTimeout();
        await session.ForwardAsync("web-b", webB.Uri).DefaultTimeout();
        await session.ForwardAsync("web-c", webC.Uri).DefaultTimeout();
        var a = Shared("rt-a", "http", "web-a", "a.relay.test");
        await ApplyAsync(relay, a, Shared("rt-b", "http", "web-b", "b.relay.test"));
        var listener = relay.CloudEndpoint("rt-a");
        var port = listener.Port;
        using var client = HttpEndpointTests.ClientTo(listener);
        var beforeB = await client.GetStringAsync($"http://b.relay.test:{port}/headers").DefaultTimeout();

        const int size = 16 * 1024 * 1024;
        using var streaming = await client.GetAsync($"http://a.relay.test:{port}/bytes?size={size}", HttpCompletionOption.ResponseHeadersRead).DefaultTimeout();
        using var body = new StreamedBody(await streaming.Content.ReadAsStreamAsync().DefaultTimeout());
        await body.ReadAsync(atLeast: 1024 * 1024);

        await Eventually.WaitUntilAsync(() => relay.Server.CloudEndpointConnections.GetValueOrDefault("rt-a") == 1, "A's request in flight");
        await ApplyAsync(relay, a, Shared("rt-c", "http", "web-c", "c.relay.test"));

        var c = await client.GetStringAsync($"http://c.relay.test:{port}/headers").DefaultTimeout();
        using var b = await client.GetAsync($"http://b.relay.test:{port}/headers").DefaultTimeout();
        await body.ReadAsync();

        Assert.Multiple(() =>
        {
            Assert.That(beforeB, Does.Contain("Upstream: b"));
            Assert.That(body.Length, Is.EqualTo(size), "A's streaming response completed");
            Assert.That(body.Sha256(), Is.EqualTo(ExpectedBytesHash(size)), "with the upstream's exact bytes");
            Assert.That(relay.CloudEndpoint("rt-c"), Is.EqualTo(listener), "C joined the same listener");
            Assert.That(relay.CloudEndpoint("rt-a"), Is.EqualTo(listener));
            Assert.That(c, Does.Contain("Upstream: c"), "C routes");
            Assert.That(b.StatusCode, Is.EqualTo(HttpStatusCode.NotFound), "B is gone");
            Assert.That(Events(relay, ListenerStopped), Is.Zero, "the shared listener never stopped");
        });
    }

    [Test]
    public async Task TheLastHttpEndpointOfAListener_Removed_StopsTheListener_ItsRequestInFlightFinishes()
    {
        await using var relay = await TestRelay.StartAsync([]);
        await using var web = await WebUpstream.StartAsync("web");
        await (await relay.ConnectAgentAsync()).ForwardAsync("web", web.Uri).DefaultTimeout();
        await ApplyAsync(relay, Shared("rt-web", "http", "web", "web.relay.test"));
        var listener = relay.CloudEndpoint("rt-web");
        using var client = HttpEndpointTests.ClientTo(listener);
        const int size = 8 * 1024 * 1024;
        using var streaming = await client.GetAsync($"http://web.relay.test:{listener.Port}/bytes?size={size}", HttpCompletionOption.ResponseHeadersRead).DefaultTimeout();
        using var body = new StreamedBody(await streaming.Content.ReadAsStreamAsync().DefaultTimeout());
        await body.ReadAsync(atLeast: 1);

        await ApplyAsync(relay);
        var refused = await SocketTestExtensions.ConnectAndWaitForCloseAsync(listener).DefaultTimeout();
        await body.ReadAsync();

        Assert.Multiple(() =>
        {
            Assert.That(refused, Is.True, "the listener, left without endpoints, stopped accepting");
            Assert.That(body.Length, Is.EqualTo(size), "the request in flight finished");
            Assert.That(body.Sha256(), Is.EqualTo(ExpectedBytesHash(size)), "with the upstream's exact bytes");
            Assert.That(Events(relay, ListenerStopped), Is.EqualTo(1));
        });
    }

    /// <summary>A response body read as it streams in, hashed as it goes.</summary>
    private sealed class StreamedBody(Stream body) : IDisposable
    {
        private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        private readonly byte[] _buffer = new byte[64 * 1024];

        public long Length { get; private set; }

        /// <summary>Reads until <paramref name="atLeast"/> bytes came in all, or the body ended.</summary>
        public async Task ReadAsync(long atLeast = long.MaxValue)
        {
            while (Length < atLeast)
            {
                var read = await body.ReadAsync(_buffer).AsTask().DefaultTimeout();
                if (read == 0)
                {
                    return;
                }

                _hash.AppendData(_buffer, 0, read);
                Length += read;
            }
        }

        public byte[] Sha256() => _hash.GetHashAndReset();

        public void Dispose()
        {
            _hash.Dispose();
            body.Dispose();
        }
    }

    /// <summary>The SHA-256 of what WebUpstream's /bytes?size=<paramref name="size"/> sends.</summary>
    private static byte[] ExpectedBytesHash(long size)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var block = WebUpstream.Pattern();
        for (long sent = 0; sent < size; sent += block.Length)
        {
            hash.AppendData(block, 0, (int)Math.Min(block.Length, size - sent));
        }

        return hash.GetHashAndReset();
    }

    [Test]
    public async Task TlsEndpoints_AddedAndRemovedOnASharedListener_WhileAnotherEndpointsConnectionKeepsFlowing()
    {
        await using var relay = await TestRelay.StartAsync([]);
        await using var db = new TlsUpstream("db", "db.relay.test");
        await using var other = new TlsUpstream("other", "other.relay.test");
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("db", db.Uri).DefaultTimeout();
        await session.ForwardAsync("other", other.Uri).DefaultTimeout();
        var dbEndpoint = Shared("rt-db", "tls", "db", "db.relay.test");
        await ApplyAsync(relay, dbEndpoint);
        var listener = relay.CloudEndpoint("rt-db");

        await using var flowing = await TlsClientAsync(listener, "db.relay.test", db.Thumbprint);
        using var stop = new CancellationTokenSource();
        var flow = KeepEchoingAsync(flowing, stop.Token);

        await ApplyAsync(relay, dbEndpoint, Shared("rt-other", "tls", "other", "other.relay.test"));
        var pong = await PingAsync(listener, "other.relay.test", other.Thumbprint);
        await ApplyAsync(relay, dbEndpoint);
        var refused = await HandshakeFailsAsync(listener, "other.relay.test", other.Thumbprint);
        await ApplyAsync(relay, dbEndpoint, Shared("rt-other", "tls", "other", "other.relay.test"));
        var pongAgain = await PingAsync(listener, "other.relay.test", other.Thumbprint);
        await stop.CancelAsync();
        var echoed = await flow.DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(pong, Is.EqualTo("PONG other"), "the tls endpoint added on the shared listener routes by its name");
            Assert.That(refused, Is.True, "once removed, its name is refused on the listener");
            Assert.That(pongAgain, Is.EqualTo("PONG other"), "and routes again when added back");
            Assert.That(relay.CloudEndpoint("rt-other"), Is.EqualTo(listener), "the same listener throughout");
            Assert.That(echoed, Is.GreaterThanOrEqualTo(256 * 1024), "rt-db's connection carried verified bytes all along");
            Assert.That(Events(relay, ListenerStopped), Is.Zero);
        });
    }

    private static async Task<SslStream> TlsClientAsync(IPEndPoint target, string serverName, string thumbprint)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(target).DefaultTimeout();
        var tls = new SslStream(new NetworkStream(socket, ownsSocket: true), leaveInnerStreamOpen: false,
            (_, certificate, _, _) => certificate!.GetCertHashString(HashAlgorithmName.SHA256) == thumbprint);
        await tls.AuthenticateAsClientAsync(serverName).DefaultTimeout();
        return tls;
    }

    /// <summary>Echoes random 16 KiB blocks through <paramref name="tls"/>, each checked, until stopped and at least 16 were; returns the bytes verified.</summary>
    private static async Task<long> KeepEchoingAsync(SslStream tls, CancellationToken stop)
    {
        long verified = 0;
        var echoed = new byte[16 * 1024];
        while (!stop.IsCancellationRequested || verified < 16 * echoed.Length)
        {
            var block = RandomNumberGenerator.GetBytes(echoed.Length);
            // Not cancelled by the stop: a block under way is finished and checked.
            await tls.WriteAsync(block, CancellationToken.None).AsTask().DefaultTimeout();
            await tls.ReadExactlyAsync(echoed, CancellationToken.None).AsTask().DefaultTimeout();
            Assert.That(echoed, Is.EqualTo(block));
            verified += block.Length;
        }

        return verified;
    }

    private static async Task<string> PingAsync(IPEndPoint target, string serverName, string thumbprint)
    {
        await using var tls = await TlsClientAsync(target, serverName, thumbprint);
        await tls.WriteAsync("PING"u8.ToArray()).AsTask().DefaultTimeout();
        using var reader = new StreamReader(tls);
        return await reader.ReadLineAsync().DefaultTimeout() ?? "";
    }

    private static async Task<bool> HandshakeFailsAsync(IPEndPoint target, string serverName, string thumbprint)
    {
        try
        {
            await using var tls = await TlsClientAsync(target, serverName, thumbprint);
            return false;
        }
        catch (Exception ex) when (ex is IOException or System.Security.Authentication.AuthenticationException)
        {
            return true;
        }
    }

    [Test]
    public async Task Update_PolicyAndTarget_InPlace_NewConnectionsFollow_AnEstablishedOneIsUnaffected()
    {
        await using var relay = await TestRelay.StartAsync([]);
        await using var first = TestUpstream.Echo();
        await using var second = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("db", first.Uri).DefaultTimeout();
        await session.ForwardAsync("db2", second.Uri).DefaultTimeout();
        await ApplyAsync(relay, Tcp("rt-db", "db"));
        var address = relay.CloudEndpoint("rt-db");
        using var established = await relay.ConnectClientAsync("rt-db");
        await AssertEchoesAsync(established);

        var denying = Tcp("rt-db", "db");
        var rule = new PolicyRuleOptions { Type = "restrict-ips" };
        rule.Deny.Add("127.0.0.0/8");
        denying.Policy.OnConnect.Add(rule);
        await ApplyAsync(relay, denying);
        var denied = await SocketTestExtensions.ConnectAndWaitForCloseAsync(address).DefaultTimeout();
        await AssertEchoesAsync(established);

        await ApplyAsync(relay, Tcp("rt-db", "db2"));
        using (var retargeted = await relay.ConnectClientAsync("rt-db"))
        {
            await AssertEchoesAsync(retargeted);
        }

        var (sent, received, _) = await established.EchoRandomAsync(1024 * 1024).DefaultTimeout();
        Assert.Multiple(() =>
        {
            Assert.That(denied, Is.True, "a new connection meets the deny rule");
            Assert.That(relay.Server.Counters.PolicyDenials("on_connect[0]:restrict-ips"), Is.EqualTo(1));
            Assert.That(received, Is.EqualTo(sent), "the established connection went on through both updates");
            Assert.That(first.Accepted, Is.EqualTo(1), "the old target saw only the established connection");
            Assert.That(second.Accepted, Is.EqualTo(1), "the new connection went to the new target");
            Assert.That(relay.CloudEndpoint("rt-db"), Is.EqualTo(address), "updated in place: the same listener");
            Assert.That(Events(relay, Updated), Is.EqualTo(2));
            Assert.That(Events(relay, Replaced) + Events(relay, Stopped), Is.Zero);
        });
    }

    [Test]
    public async Task HttpEndpoint_TargetChanged_TheNextRequestGoesToTheNewService_OnAKeepAliveConnectionToo()
    {
        await using var relay = await TestRelay.StartAsync([]);
        await using var blue = await WebUpstream.StartAsync("blue");
        await using var green = await WebUpstream.StartAsync("green");
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("blue", blue.Uri).DefaultTimeout();
        await session.ForwardAsync("green", green.Uri).DefaultTimeout();
        await ApplyAsync(relay, Shared("rt-web", "http", "blue", "web.relay.test"));
        var listener = relay.CloudEndpoint("rt-web");
        using var client = HttpEndpointTests.ClientTo(listener, h => h.MaxConnectionsPerServer = 1);
        var url = $"http://web.relay.test:{listener.Port}/headers";
        var before = await client.GetStringAsync(url).DefaultTimeout();

        await ApplyAsync(relay, Shared("rt-web", "http", "green", "web.relay.test"));
        var after = await client.GetStringAsync(url).DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(before, Does.Contain("Upstream: blue"));
            Assert.That(after, Does.Contain("Upstream: green"), "the same public connection's next request went to the new target");
            Assert.That(relay.CloudEndpoint("rt-web"), Is.EqualTo(listener));
            Assert.That(Events(relay, Replaced), Is.EqualTo(1), "a new route (a new forwarding client) on the same listener");
            Assert.That(Events(relay, ListenerStopped), Is.Zero);
        });
    }

    [Test]
    public async Task Problems_AreReportedPerEndpoint_AndTheOthersApplied()
    {
        await using var relay = await TestRelay.StartAsync(["db"]);
        await using var echo = TestUpstream.Echo();
        await using var web = await WebUpstream.StartAsync("web");
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("db", echo.Uri).DefaultTimeout();
        await session.ForwardAsync("web", web.Uri).DefaultTimeout();
        using var busy = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        busy.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        busy.Listen();
        var busyPort = ((IPEndPoint)busy.LocalEndPoint!).Port;
        var badCertificate = Shared("rt-cert", "https", "web", "secure.relay.test");
        badCertificate.CertificatePath = Path.Combine(Path.GetTempPath(), $"sitelink-missing-{Guid.NewGuid():N}.pfx");
        var login = Shared("rt-login", "http", "web", "login.relay.test");
        login.Policy.OnHttpRequest.Add(new PolicyRuleOptions { Type = "oidc", Authority = "https://login.example", ClientId = "relay" });

        var problems = await relay.Server.ApplyRuntimeCloudEndpointsAsync(
        [
            Tcp("rt-busy", "db", $"127.0.0.1:{busyPort}"),
            Shared("rt-one", "http", "web", "one.relay.test"),
            Shared("rt-two", "http", "web", "one.relay.test"),
            Tcp("db", "db"),
            Tcp("rt-fine", "db"),
            badCertificate,
            login,
            Tcp("rt-invalid", "-bad"),
        ]).DefaultTimeout();
        var byName = problems.ToDictionary(p => p.Endpoint, p => p.Message);

        using (var fine = await relay.ConnectClientAsync("rt-fine"))
        {
            await AssertEchoesAsync(fine);
        }

        using (var configured = await relay.ConnectClientAsync("db"))
        {
            await AssertEchoesAsync(configured);
        }

        using var client = HttpEndpointTests.ClientTo(relay.CloudEndpoint("rt-one"));
        var one = await client.GetStringAsync($"http://one.relay.test:{relay.CloudEndpoint("rt-one").Port}/headers").DefaultTimeout();
        Assert.Multiple(() =>
        {
            Assert.That(byName.Keys, Is.EquivalentTo(new[] { "rt-busy", "rt-two", "db", "rt-cert", "rt-login", "rt-invalid" }));
            Assert.That(byName["rt-busy"], Does.Contain($"127.0.0.1:{busyPort}").And.Contain("in use").IgnoreCase);
            Assert.That(byName["rt-two"], Does.Contain("'one.relay.test' is served by another cloud endpoint"));
            Assert.That(byName["db"], Does.Contain("configuration has a cloud endpoint of this name"));
            Assert.That(byName["rt-cert"], Does.Contain("CertificatePath").And.Contain("cannot be loaded"));
            Assert.That(byName["rt-login"], Does.Contain("oidc rules are set in the relay's configuration file"));
            Assert.That(byName["rt-invalid"], Does.Contain("Endpoint '-bad' is not a valid internal endpoint name"));
            Assert.That(relay.Server.CloudEndpointConnections.Keys, Is.EquivalentTo(new[] { "db", "rt-one", "rt-fine" }), "exactly the configured endpoint and the two good ones run");
            Assert.That(one, Does.Contain("Upstream: web"));
            Assert.That(Events(relay, NotApplied), Is.EqualTo(6), "each problem logged");
        });
    }

    [Test]
    public async Task ApplyingTheSameListAgain_StartsNothingNew()
    {
        using var folder = new CertificateFolder();
        await using var relay = await TestRelay.StartAsync([]);
        await using var echo = TestUpstream.Echo();
        await using var web = await WebUpstream.StartAsync("web");
        await using var db = new TlsUpstream("db", "db.relay.test");
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("echo", echo.Uri).DefaultTimeout();
        await session.ForwardAsync("web", web.Uri).DefaultTimeout();
        await session.ForwardAsync("db", db.Uri).DefaultTimeout();
        CloudEndpointOptions[] List()
        {
            var secure = Shared("rt-secure", "https", "web", "secure.relay.test");
            secure.CertificatePath = Path.Combine(folder.FullName, "secure.relay.test.pfx");
            var denyOthers = new PolicyRuleOptions { Type = "restrict-ips" };
            denyOthers.Allow.Add("127.0.0.0/8");
            secure.Policy.OnConnect.Add(denyOthers);
            return [Tcp("rt-echo", "echo"), Shared("rt-web", "http", "web", "web.relay.test"), secure, Shared("rt-db", "tls", "db", "db.relay.test")];
        }

        folder.Certificate("secure.relay.test");
        await ApplyAsync(relay, List());
        var bound = Snapshot(relay);
        using var https = HttpEndpointTests.ClientTo(relay.CloudEndpoint("rt-secure"), h => h.SslOptions.RemoteCertificateValidationCallback =
            (_, certificate, _, _) => folder.Thumbprints.Contains(certificate!.GetCertHashString(HashAlgorithmName.SHA256)));
        var secureUrl = $"https://secure.relay.test:{relay.CloudEndpoint("rt-secure").Port}/headers";
        var before = await https.GetStringAsync(secureUrl).DefaultTimeout();
        var events = relay.Logs.Entries.Count;

        // The same settings in new objects, twice.
        await ApplyAsync(relay, List());
        await ApplyAsync(relay, List());
        var after = await https.GetStringAsync(secureUrl).DefaultTimeout();

        using var echoClient = await relay.ConnectClientAsync("rt-echo");
        await AssertEchoesAsync(echoClient);
        Assert.Multiple(() =>
        {
            Assert.That(Snapshot(relay), Is.EqualTo(bound), "every endpoint on the listener it had");
            Assert.That(relay.Logs.Entries.Skip(events).Where(e => e.Category == HostCategory).Select(e => e.Message), Is.Empty,
                "nothing started, stopped, replaced or updated");
            Assert.That(before, Does.Contain("Upstream: web").And.Contain("X-Forwarded-Proto: https"), "the https endpoint read its certificate when applied");
            Assert.That(after, Does.Contain("Upstream: web"));
        });
    }

    private static Dictionary<string, string> Snapshot(TestRelay relay) =>
        new[] { "rt-echo", "rt-web", "rt-secure", "rt-db" }.ToDictionary(n => n, n => relay.CloudEndpoint(n).ToString());

    [Test]
    public async Task AnEndpointMovedToAnotherAddress_StartsThereBeforeTheOldListenerStops()
    {
        await using var relay = await TestRelay.StartAsync([]);
        await using var web = await WebUpstream.StartAsync("web");
        await (await relay.ConnectAgentAsync()).ForwardAsync("web", web.Uri).DefaultTimeout();
        await ApplyAsync(relay, Shared("rt-web", "http", "web", "web.relay.test"));
        var before = relay.CloudEndpoint("rt-web");

        await ApplyAsync(relay, Shared("rt-web", "http", "web", "web.relay.test", listen: "127.0.0.2:0"));
        var after = relay.CloudEndpoint("rt-web");
        using var client = HttpEndpointTests.ClientTo(after);
        var text = await client.GetStringAsync($"http://web.relay.test:{after.Port}/headers").DefaultTimeout();
        var oldRefused = await SocketTestExtensions.ConnectAndWaitForCloseAsync(before).DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(after.Address, Is.EqualTo(IPAddress.Parse("127.0.0.2")));
            Assert.That(text, Does.Contain("Upstream: web"));
            Assert.That(oldRefused, Is.True, "the old listener, left empty, stopped");
            Assert.That(Events(relay, Replaced), Is.EqualTo(1));
            Assert.That(Events(relay, ListenerStopped), Is.EqualTo(1));
        });
    }
}
