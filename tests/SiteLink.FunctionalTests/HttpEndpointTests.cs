using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Net.WebSockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Relay.Configuration;

namespace SiteLink.FunctionalTests;

/// <summary>
/// http and https cloud endpoints: requests routed by host name on a shared listener, forwarded by YARP over
/// tunnelled connections to a real web server behind the agent.
/// </summary>
[TestFixture]
[Category("HttpEndpoints")]
public sealed class HttpEndpointTests
{
    private static CloudEndpointOptions Http(string name, string tenant, string endpoint, params string[] hostnames)
    {
        // Idle keep-alive connections closed after 1 s, so the agents' graceful close at the end of a test is quick.
        var options = new CloudEndpointOptions { Name = name, Protocol = "http", Listen = "127.0.0.1:0", Tenant = tenant, Endpoint = endpoint, KeepAliveTimeout = TimeSpan.FromSeconds(1) };
        foreach (var hostname in hostnames)
        {
            options.Hostnames.Add(hostname);
        }

        return options;
    }

    /// <summary>An HttpClient whose connections all go to <paramref name="target"/>, whatever host the URI names.</summary>
    internal static HttpClient ClientTo(IPEndPoint target, Action<SocketsHttpHandler>? configure = null)
    {
        var handler = new SocketsHttpHandler
        {
            UseProxy = false,
            ConnectCallback = async (_, ct) =>
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                await socket.ConnectAsync(target, ct);
                return new NetworkStream(socket, ownsSocket: true);
            },
        };
        configure?.Invoke(handler);
        return new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(60) };
    }

    [Test]
    public async Task Requests_AreRoutedByHost_ToEachTenantsAgent_WithForwardedHeadersSetByTheRelay()
    {
        await using var relay = await TestRelay.StartAsync([], o =>
        {
            o.CloudEndpoints.Add(Http("acme-web", "acme", "web", "acme-web.relay.test"));
            o.CloudEndpoints.Add(Http("globex-web", "globex", "web", "*.globex.relay.test"));
        });
        await using var acmeWeb = await WebUpstream.StartAsync("acme");
        await using var globexWeb = await WebUpstream.StartAsync("globex");
        await (await relay.ConnectAgentAsync()).ForwardAsync("web", acmeWeb.Uri).DefaultTimeout();
        await (await relay.ConnectAgentAsync(TestRelay.GlobexToken)).ForwardAsync("web", globexWeb.Uri).DefaultTimeout();
        var port = relay.CloudEndpoint("acme-web").Port;
        using var client = ClientTo(relay.CloudEndpoint("acme-web"));

        using var spoofed = new HttpRequestMessage(HttpMethod.Get, $"http://acme-web.relay.test:{port}/headers");
        spoofed.Headers.Add("X-Forwarded-For", "6.6.6.6");
        spoofed.Headers.Add("Forwarded", "for=6.6.6.6");
        var acme = await (await client.SendAsync(spoofed).DefaultTimeout()).Content.ReadAsStringAsync();
        var globex = await client.GetStringAsync($"http://portal.globex.relay.test:{port}/headers").DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(relay.CloudEndpoint("globex-web"), Is.EqualTo(relay.CloudEndpoint("acme-web")), "one listener for both");
            Assert.That(acme, Does.Contain("Upstream: acme"));
            Assert.That(acme, Does.Contain("X-Forwarded-For: 127.0.0.1\n"), "the client's claim is replaced by what the relay saw");
            Assert.That(acme, Does.Contain("X-Forwarded-Proto: http\n"));
            Assert.That(acme, Does.Contain($"X-Forwarded-Host: acme-web.relay.test:{port}\n"));
            Assert.That(acme, Does.Not.Contain("6.6.6.6"));
            Assert.That(globex, Does.Contain("Upstream: globex"), "the wildcard routes to the other tenant's agent");
        });
    }

    [Test]
    public async Task TrustedForwardedHeaders_AreKept_WithTheRelaysViewAppended()
    {
        await using var relay = await TestRelay.StartAsync([], o =>
        {
            var behindProxy = Http("acme-web", "acme", "web", "acme-web.relay.test");
            behindProxy.TrustForwardedHeaders = true;
            o.CloudEndpoints.Add(behindProxy);
        });
        await using var web = await WebUpstream.StartAsync("acme");
        await (await relay.ConnectAgentAsync()).ForwardAsync("web", web.Uri).DefaultTimeout();
        using var client = ClientTo(relay.CloudEndpoint("acme-web"));

        using var request = new HttpRequestMessage(HttpMethod.Get, $"http://acme-web.relay.test:{relay.CloudEndpoint("acme-web").Port}/headers");
        request.Headers.Add("X-Forwarded-For", "198.51.100.20");
        var text = await (await client.SendAsync(request).DefaultTimeout()).Content.ReadAsStringAsync();

        Assert.That(text, Does.Contain("X-Forwarded-For: 198.51.100.20,127.0.0.1\n").Or.Contain("X-Forwarded-For: 198.51.100.20, 127.0.0.1\n"),
            "a trusted proxy's header is kept and the relay's view appended");
    }

    [Test]
    public async Task KeepAlive_ManyRequestsReuseOneTunnelledConnection()
    {
        await using var relay = await TestRelay.StartAsync([], o => o.CloudEndpoints.Add(Http("acme-web", "acme", "web", "acme-web.relay.test")));
        await using var web = await WebUpstream.StartAsync();
        await (await relay.ConnectAgentAsync()).ForwardAsync("web", web.Uri).DefaultTimeout();
        using var client = ClientTo(relay.CloudEndpoint("acme-web"));
        var url = $"http://acme-web.relay.test:{relay.CloudEndpoint("acme-web").Port}/bytes?size=1000";

        for (var i = 0; i < 50; i++)
        {
            var body = await client.GetByteArrayAsync(url).DefaultTimeout();
            Assert.That(body, Has.Length.EqualTo(1000));
        }

        Assert.Multiple(() =>
        {
            Assert.That(web.Connections, Is.EqualTo(1), "the upstream saw one connection for 50 requests");
            Assert.That(relay.Server.Counters.ConnectionsAccepted, Is.EqualTo(1), "one tunnelled connection");
        });
    }

    [Test]
    public async Task Errors_AreShortReadableAnswers_CountedByReason()
    {
        await using var relay = await TestRelay.StartAsync([], o =>
        {
            o.CloudEndpoints.Add(Http("acme-web", "acme", "web", "acme-web.relay.test"));
            o.CloudEndpoints.Add(Http("acme-nobody", "acme", "nobody", "nobody.relay.test"));
            o.CloudEndpoints.Add(Http("acme-dead", "acme", "dead", "dead.relay.test"));
        });
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("dead", Loopback.Tcp(((IPEndPoint)probe.LocalEndPoint!).Port)).DefaultTimeout();
        var port = relay.CloudEndpoint("acme-web").Port;
        using var client = ClientTo(relay.CloudEndpoint("acme-web"));

        var unknown = await client.GetAsync($"http://elsewhere.example:{port}/").DefaultTimeout();
        var noAgent = await client.GetAsync($"http://nobody.relay.test:{port}/").DefaultTimeout();
        var dead = await client.GetAsync($"http://dead.relay.test:{port}/").DefaultTimeout();
        var texts = await Task.WhenAll(unknown.Content.ReadAsStringAsync(), noAgent.Content.ReadAsStringAsync(), dead.Content.ReadAsStringAsync()).DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(unknown.StatusCode, Is.EqualTo(HttpStatusCode.NotFound));
            Assert.That(texts[0], Does.Contain("'elsewhere.example'"));
            Assert.That(noAgent.StatusCode, Is.EqualTo(HttpStatusCode.BadGateway));
            Assert.That(texts[1], Does.Contain("No agent is serving 'nobody'"));
            Assert.That(dead.StatusCode, Is.EqualTo(HttpStatusCode.BadGateway));
            Assert.That(texts[2], Does.Contain("could not reach its service"));
            Assert.That(texts, Has.All.Length.LessThan(400), "a short answer, no stack trace");
            Assert.That(relay.Server.Counters.HttpErrors("unknown_host"), Is.EqualTo(1));
            Assert.That(relay.Server.Counters.HttpErrors("no_agent"), Is.EqualTo(1));
            Assert.That(relay.Server.Counters.HttpErrors("agent_refused"), Is.EqualTo(1));
        });
    }

    [Test]
    public async Task AServiceThatNeverAnswers_Gets504_AfterTheEndpointsIdleTimeout()
    {
        await using var relay = await TestRelay.StartAsync([], o =>
        {
            var slow = Http("acme-web", "acme", "web", "acme-web.relay.test");
            slow.IdleTimeout = TimeSpan.FromSeconds(1);
            o.CloudEndpoints.Add(slow);
        });
        // Accepts, reads the request, and never answers.
        await using var silent = TestUpstream.Custom(async (socket, ct) => await Task.Delay(Timeout.Infinite, ct));
        await (await relay.ConnectAgentAsync()).ForwardAsync("web", silent.Uri).DefaultTimeout();
        using var client = ClientTo(relay.CloudEndpoint("acme-web"));

        var watch = System.Diagnostics.Stopwatch.StartNew();
        using var response = await client.GetAsync($"http://acme-web.relay.test:{relay.CloudEndpoint("acme-web").Port}/").DefaultTimeout();
        var text = await response.Content.ReadAsStringAsync();

        Assert.Multiple(() =>
        {
            Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.GatewayTimeout));
            Assert.That(text, Does.Contain("did not answer in time"));
            Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(8)), "after the 1 s idle timeout, not the client's own");
            Assert.That(relay.Server.Counters.HttpErrors("upstream_timeout"), Is.EqualTo(1));
        });
    }

    [Test]
    public async Task Bodies_StreamBothWays_1GiBUpAnd1GiBDown_WithSha256Checked()
    {
        const long size = 1024L * 1024 * 1024;
        await using var relay = await TestRelay.StartAsync([], o => o.CloudEndpoints.Add(Http("acme-web", "acme", "web", "acme-web.relay.test")));
        await using var web = await WebUpstream.StartAsync();
        await (await relay.ConnectAgentAsync()).ForwardAsync("web", web.Uri).DefaultTimeout();
        using var client = ClientTo(relay.CloudEndpoint("acme-web"));
        client.Timeout = TimeSpan.FromMinutes(3);
        var url = $"http://acme-web.relay.test:{relay.CloudEndpoint("acme-web").Port}";
        var block = WebUpstream.Pattern();
        using var expected = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        for (long sent = 0; sent < size; sent += block.Length)
        {
            expected.AppendData(block);
        }

        var expectedHash = Convert.ToHexString(expected.GetHashAndReset());

        var upload = await client.PostAsync($"{url}/sha256", new PatternContent(size)).WaitAsync(TimeSpan.FromMinutes(3));
        var uploaded = await upload.Content.ReadAsStringAsync();
        using var download = await client.GetAsync($"{url}/bytes?size={size}", HttpCompletionOption.ResponseHeadersRead).WaitAsync(TimeSpan.FromMinutes(3));
        await using var body = await download.Content.ReadAsStreamAsync();
        using var received = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[256 * 1024];
        long total = 0;
        int read;
        while ((read = await body.ReadAsync(buffer).AsTask().WaitAsync(TimeSpan.FromSeconds(30))) > 0)
        {
            received.AppendData(buffer, 0, read);
            total += read;
        }

        Assert.Multiple(() =>
        {
            Assert.That(uploaded, Is.EqualTo($"{expectedHash} {size}"), "the upstream received every byte of the upload");
            Assert.That(total, Is.EqualTo(size));
            Assert.That(Convert.ToHexString(received.GetHashAndReset()), Is.EqualTo(expectedHash), "the download arrived intact");
        });
    }

    [Test]
    public async Task WebSocket_UpgradesAndEchoesThroughTheTunnel()
    {
        await using var relay = await TestRelay.StartAsync([], o => o.CloudEndpoints.Add(Http("acme-web", "acme", "web", "acme-web.relay.test")));
        await using var web = await WebUpstream.StartAsync();
        await (await relay.ConnectAgentAsync()).ForwardAsync("web", web.Uri).DefaultTimeout();
        var target = relay.CloudEndpoint("acme-web");
        using var invoker = new HttpMessageInvoker(new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                await socket.ConnectAsync(target, ct);
                return new NetworkStream(socket, ownsSocket: true);
            },
        });
        using var ws = new ClientWebSocket();
        await ws.ConnectAsync(new Uri($"ws://acme-web.relay.test:{target.Port}/ws"), invoker, CancellationToken.None).DefaultTimeout();

        var messages = Enumerable.Range(0, 20).Select(i => SocketTestExtensions.RandomBytes(1 + (i * 5000))).ToArray();
        var echoed = new List<byte[]>();
        foreach (var message in messages)
        {
            await ws.SendAsync(message, WebSocketMessageType.Binary, endOfMessage: true, CancellationToken.None).DefaultTimeout();
            using var received = new MemoryStream();
            var buffer = new byte[16 * 1024];
            WebSocketReceiveResult result;
            do
            {
                result = await ws.ReceiveAsync(buffer, CancellationToken.None).DefaultTimeout();
                received.Write(buffer, 0, result.Count);
            }
            while (!result.EndOfMessage);
            echoed.Add(received.ToArray());
        }

        await ws.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", CancellationToken.None).DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(echoed, Is.EqualTo(messages));
            Assert.That(ws.CloseStatus, Is.EqualTo(WebSocketCloseStatus.NormalClosure));
        });
    }

    [Test]
    public async Task Https_PicksEachHostsCertificateBySni_SpeaksHttp2_AndRefusesAHostOtherThanTheTlsName()
    {
        using var folder = new CertificateFolder();
        var acmePfx = folder.Certificate("acme-api.relay.test");
        var globexPfx = folder.Certificate("*.globex.relay.test");
        await using var relay = await TestRelay.StartAsync([], o =>
        {
            var acme = Http("acme-api", "acme", "api", "acme-api.relay.test");
            acme.Protocol = "https";
            acme.CertificatePath = acmePfx;
            var globex = Http("globex-api", "globex", "api", "*.globex.relay.test");
            globex.Protocol = "https";
            globex.CertificatePath = globexPfx;
            o.CloudEndpoints.Add(acme);
            o.CloudEndpoints.Add(globex);
        });
        await using var acmeWeb = await WebUpstream.StartAsync("acme");
        await using var globexWeb = await WebUpstream.StartAsync("globex");
        await (await relay.ConnectAgentAsync()).ForwardAsync("api", acmeWeb.Uri).DefaultTimeout();
        await (await relay.ConnectAgentAsync(TestRelay.GlobexToken)).ForwardAsync("api", globexWeb.Uri).DefaultTimeout();
        var port = relay.CloudEndpoint("acme-api").Port;
        var subjects = new List<string>();
        using var client = ClientTo(relay.CloudEndpoint("acme-api"), h => h.SslOptions.RemoteCertificateValidationCallback = (_, certificate, _, _) =>
        {
            lock (subjects)
            {
                subjects.Add(certificate!.Subject);
            }

            // Trusted by pin: exactly the two certificates this test made.
            return folder.Thumbprints.Contains(certificate.GetCertHashString(HashAlgorithmName.SHA256));
        });

        using var acmeRequest = new HttpRequestMessage(HttpMethod.Get, $"https://acme-api.relay.test:{port}/headers") { Version = HttpVersion.Version20, VersionPolicy = HttpVersionPolicy.RequestVersionExact };
        using var acme = await client.SendAsync(acmeRequest).DefaultTimeout();
        var acmeText = await acme.Content.ReadAsStringAsync();
        var globexText = await client.GetStringAsync($"https://shop.globex.relay.test:{port}/headers").DefaultTimeout();
        // A TLS session set up for acme's name, then asking for globex's host: refused, not routed across tenants.
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(relay.CloudEndpoint("acme-api")).DefaultTimeout();
        await using var tls = new SslStream(new NetworkStream(socket), leaveInnerStreamOpen: false, (_, certificate, _, _) => folder.Thumbprints.Contains(certificate!.GetCertHashString(HashAlgorithmName.SHA256)));
        await tls.AuthenticateAsClientAsync("acme-api.relay.test").DefaultTimeout();
        await tls.WriteAsync(Encoding.ASCII.GetBytes($"GET /headers HTTP/1.1\r\nHost: shop.globex.relay.test:{port}\r\nConnection: close\r\n\r\n")).DefaultTimeout();
        using var reader = new StreamReader(tls);
        var statusLine = await reader.ReadLineAsync().DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(acme.Version, Is.EqualTo(HttpVersion.Version20), "HTTP/2 from the public client");
            Assert.That(acmeText, Does.Contain("Upstream: acme").And.Contain("X-Forwarded-Proto: https"));
            Assert.That(globexText, Does.Contain("Upstream: globex"));
            Assert.That(subjects, Has.Some.EqualTo("CN=acme-api.relay.test").And.Some.EqualTo("CN=*.globex.relay.test"), "each name got its own certificate");
            Assert.That(statusLine, Does.StartWith("HTTP/1.1 421"));
            Assert.That(relay.Server.Counters.HttpErrors("misdirected"), Is.EqualTo(1));
        });
    }

    /// <summary>A request body of <paramref name="size"/> bytes of <see cref="WebUpstream.Pattern"/>, streamed, never held.</summary>
    private sealed class PatternContent(long size) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            var block = WebUpstream.Pattern();
            for (long sent = 0; sent < size; sent += block.Length)
            {
                await stream.WriteAsync(block.AsMemory(0, (int)Math.Min(block.Length, size - sent)));
            }
        }

        protected override bool TryComputeLength(out long length)
        {
            length = size;
            return true;
        }
    }
}
