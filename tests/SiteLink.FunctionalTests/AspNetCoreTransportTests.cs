using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SiteLink.AspNetCore;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>
/// SiteLink.AspNetCore: an ASP.NET Core application served by Kestrel over the tunnelled connections of an endpoint,
/// with no local port, reached by HttpClient through the relay's raw TCP cloud endpoint.
/// </summary>
[TestFixture]
[Category("AspNetCore")]
public sealed class AspNetCoreTransportTests
{
    private const int LargeResponseBytes = 64 * 1024 * 1024;
    private static readonly IPAddress PublicClientAddress = IPAddress.Parse("127.0.0.2");

    /// <summary>A minimal-API application whose only address is the SiteLink endpoint (unless the test adds one).</summary>
    private static WebApplication BuildApp(
        TestRelay relay,
        Action<KestrelServerOptions> kestrel,
        Action<WebApplication> routes,
        string token = TestRelay.AcmeToken,
        bool addSession = true,
        Action<SiteLinkTransportOptions>? transport = null)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { EnvironmentName = "Production" });
        builder.Logging.ClearProviders();
        relay.Logs.AddTo(builder.Logging);
        if (addSession)
        {
            builder.Services.AddSiteLink(o =>
            {
                o.RelayUrl = relay.Server.AgentUrl;
                o.AuthToken = token;
                o.PinnedCertificateSha256 = relay.Server.CertificateSha256;
                o.ClientId = "aspnetcore-agent";
                o.Reconnect.InitialDelay = TimeSpan.FromMilliseconds(100);
                o.Reconnect.MaxDelay = TimeSpan.FromMilliseconds(300);
            });
        }

        builder.WebHost.UseSiteLink(o => transport?.Invoke(o));
        builder.WebHost.ConfigureKestrel(kestrel);
        var app = builder.Build();
        routes(app);
        return app;
    }

    /// <summary>Starts the test routes on the SiteLink endpoint "api" only.</summary>
    internal static async Task<WebApplication> StartApiAsync(TestRelay relay)
    {
        var app = BuildApp(relay, k => k.ListenSiteLink("api"), Routes);
        await app.StartAsync().DefaultTimeout();
        return app;
    }

    private static void Routes(WebApplication app)
    {
        app.MapGet("/echo/{id:int}", (int id) => $"echo {id}");
        app.MapGet("/who", (HttpContext context) =>
        {
            var info = context.Features.Get<ISiteLinkConnectionFeature>()?.Info;
            return $"{context.Connection.RemoteIpAddress} {context.Connection.RemotePort} {info?.EndpointName} {info?.StreamId} {context.Request.Protocol} {context.Request.IsHttps}";
        });
        app.MapGet("/large", async (HttpContext context) =>
        {
            context.Response.ContentType = "application/octet-stream";
            await foreach (var block in DeterministicBlocks(LargeResponseBytes))
            {
                await context.Response.Body.WriteAsync(block, context.RequestAborted);
            }
        });
        app.MapPost("/sha256", async (HttpContext context) =>
        {
            var (total, sha256) = await HashAsync(context.Request.Body, context.RequestAborted);
            return $"{total} {sha256}";
        });
    }

    /// <summary>Reads <paramref name="stream"/> to its end: how many bytes, and their SHA-256 in hex.</summary>
    private static async Task<(long Total, string Sha256)> HashAsync(Stream stream, CancellationToken cancellationToken)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[64 * 1024];
        long total = 0;
        int read;
        while ((read = await stream.ReadAsync(buffer, cancellationToken)) > 0)
        {
            hash.AppendData(buffer, 0, read);
            total += read;
        }

        return (total, Convert.ToHexString(hash.GetHashAndReset()));
    }

    /// <summary>The same pseudo-random bytes on both ends, in 64 KiB blocks.</summary>
    private static async IAsyncEnumerable<byte[]> DeterministicBlocks(int total)
    {
        var random = new Random(20260101);
        for (var sent = 0; sent < total; sent += 64 * 1024)
        {
            var block = new byte[Math.Min(64 * 1024, total - sent)];
            random.NextBytes(block);
            yield return block;
            await Task.Yield();
        }
    }

    internal static HttpClient ClientFor(TestRelay relay, string cloudEndpoint, HttpMessageHandler? handler = null) =>
        new(handler ?? new SocketsHttpHandler(), disposeHandler: true)
        {
            BaseAddress = new Uri($"http://{relay.CloudEndpoint(cloudEndpoint)}/"),
            Timeout = TaskTimeoutExtensions.Limit,
        };

    private static ICollection<string> Addresses(WebApplication app) =>
        app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses;

    [Test]
    public async Task MinimalApi_ServedOnlyThroughTheTunnel_AnswersFiftyConcurrentRequests()
    {
        await using var relay = await TestRelay.StartAsync(["api"]);
        await using var app = await StartApiAsync(relay);

        // Kestrel lists every address it bound: the SiteLink endpoint is the only one (no TCP port, not even the default).
        Assert.That(Addresses(app), Is.EqualTo(new[] { "http://sitelink:/api" }));

        using var client = ClientFor(relay, "api");
        var replies = await Task.WhenAll(Enumerable.Range(0, 50).Select(i => client.GetStringAsync($"echo/{i}"))).DefaultTimeout();
        Assert.That(replies, Is.EqualTo(Enumerable.Range(0, 50).Select(i => $"echo {i}")));

        // The connections now sit idle in the client's pool: stopping closes them gracefully without waiting for the
        // client to notice (the relay delivers the close, then ends each tunnelled connection).
        var stopping = System.Diagnostics.Stopwatch.StartNew();
        await app.StopAsync().DefaultTimeout();
        Assert.That(stopping.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)));
    }

    [Test]
    public async Task LargeResponse_StreamedThroughTheTunnel_ArrivesWholeByHash()
    {
        await using var relay = await TestRelay.StartAsync(["api"]);
        await using var app = await StartApiAsync(relay);

        using var expected = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        await foreach (var block in DeterministicBlocks(LargeResponseBytes))
        {
            expected.AppendData(block);
        }

        using var client = ClientFor(relay, "api");
        using var response = await client.GetAsync("large", HttpCompletionOption.ResponseHeadersRead).DefaultTimeout();
        response.EnsureSuccessStatusCode();
        await using var body = await response.Content.ReadAsStreamAsync().DefaultTimeout();
        var (total, sha256) = await HashAsync(body, CancellationToken.None).DefaultTimeout();

        Assert.That(total, Is.EqualTo(LargeResponseBytes));
        Assert.That(sha256, Is.EqualTo(Convert.ToHexString(expected.GetHashAndReset())));
        await app.StopAsync().DefaultTimeout();
    }

    [Test]
    public async Task RequestBody_UploadedThroughTheTunnel_ArrivesWholeByHash()
    {
        await using var relay = await TestRelay.StartAsync(["api"]);
        await using var app = await StartApiAsync(relay);

        var payload = RandomNumberGenerator.GetBytes(8 * 1024 * 1024 + 123);
        using var client = ClientFor(relay, "api");
        using var content = new ByteArrayContent(payload);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        using var response = await client.PostAsync("sha256", content).DefaultTimeout();
        response.EnsureSuccessStatusCode();

        Assert.That(await response.Content.ReadAsStringAsync().DefaultTimeout(), Is.EqualTo($"{payload.Length} {Convert.ToHexString(SHA256.HashData(payload))}"));
        await app.StopAsync().DefaultTimeout();
    }

    [Test]
    public async Task RemoteEndPoint_IsThePublicClient_AddressAndPort()
    {
        await using var relay = await TestRelay.StartAsync(["api"]);
        await using var app = await StartApiAsync(relay);

        // The public client connects from 127.0.0.2 (not the relay's or the agent's 127.0.0.1), from a port it records.
        IPEndPoint? clientEnd = null;
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (context, cancellationToken) =>
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                socket.Bind(new IPEndPoint(PublicClientAddress, 0));
                await socket.ConnectAsync(context.DnsEndPoint, cancellationToken);
                clientEnd = (IPEndPoint)socket.LocalEndPoint!;
                return new NetworkStream(socket, ownsSocket: true);
            },
        };
        using var client = ClientFor(relay, "api", handler);

        var who = (await client.GetStringAsync("who").DefaultTimeout()).Split(' ');

        Assert.That(clientEnd, Is.Not.Null);
        Assert.Multiple(() =>
        {
            Assert.That(who[0], Is.EqualTo(PublicClientAddress.ToString()), "HttpContext.Connection.RemoteIpAddress");
            Assert.That(who[1], Is.EqualTo(clientEnd!.Port.ToString(System.Globalization.CultureInfo.InvariantCulture)), "HttpContext.Connection.RemotePort");
            Assert.That(who[2], Is.EqualTo("api"), "ISiteLinkConnectionFeature: endpoint");
            Assert.That(who[3], Is.Not.Empty, "ISiteLinkConnectionFeature: the relay's stream id");
            Assert.That(who[4], Is.EqualTo("HTTP/1.1"));
        });
        await app.StopAsync().DefaultTimeout();
    }

    [Test]
    public async Task Http2WithTls_EndsInTheApplication_NegotiatedByAlpnThroughARawTcpEndpoint()
    {
        await using var relay = await TestRelay.StartAsync(["api-tls"]);
        using var certificate = SelfSignedCertificate("api.sitelink.test");
        await using var app = BuildApp(relay, k => k.ListenSiteLink("api-tls", listen =>
        {
            listen.Protocols = HttpProtocols.Http1AndHttp2;
            listen.UseHttps(certificate);
        }), Routes);
        await app.StartAsync().DefaultTimeout();
        Assert.That(Addresses(app), Is.EqualTo(new[] { "https://sitelink:/api-tls" }));

        var expectedHash = certificate.GetCertHashString(HashAlgorithmName.SHA256);
        var handler = new SocketsHttpHandler
        {
            SslOptions = new SslClientAuthenticationOptions
            {
                // Trusts exactly the application's certificate: TLS ends in the application, not at the relay.
                RemoteCertificateValidationCallback = (_, presented, _, _) =>
                    presented is not null && string.Equals(presented.GetCertHashString(HashAlgorithmName.SHA256), expectedHash, StringComparison.OrdinalIgnoreCase),
            },
        };
        using var client = new HttpClient(handler)
        {
            BaseAddress = new Uri($"https://{relay.CloudEndpoint("api-tls")}/"),
            DefaultRequestVersion = HttpVersion.Version20,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Timeout = TaskTimeoutExtensions.Limit,
        };

        // Concurrent requests share one HTTP/2 connection (one tunnelled connection) as streams.
        var replies = await Task.WhenAll(Enumerable.Range(0, 20).Select(i => client.GetStringAsync($"echo/{i}"))).DefaultTimeout();
        Assert.That(replies, Is.EqualTo(Enumerable.Range(0, 20).Select(i => $"echo {i}")));
        using var response = await client.GetAsync("who").DefaultTimeout();
        var who = (await response.Content.ReadAsStringAsync().DefaultTimeout()).Split(' ');
        Assert.Multiple(() =>
        {
            Assert.That(response.Version, Is.EqualTo(HttpVersion.Version20));
            Assert.That(who[4], Is.EqualTo("HTTP/2"));
            Assert.That(who[5], Is.EqualTo("True"), "Request.IsHttps");
            Assert.That(who[0], Is.EqualTo("127.0.0.1"), "RemoteIpAddress through TLS too");
        });
        await app.StopAsync().DefaultTimeout();
    }

    [Test]
    public async Task GracefulStop_WithARequestInFlight_CompletesIt_ThenRefusesNewConnections()
    {
        await using var relay = await TestRelay.StartAsync(["api"]);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = BuildApp(relay, k => k.ListenSiteLink("api"), a =>
        {
            a.MapGet("/slow", async (HttpContext context) =>
            {
                started.TrySetResult();
                await release.Task;
                await context.Response.WriteAsync(new string('x', 256 * 1024));
            });
        });
        await app.StartAsync().DefaultTimeout();
        var session = app.Services.GetRequiredService<ITunnelSession>();

        using var client = ClientFor(relay, "api");
        var inFlight = client.GetStringAsync("slow");
        await started.Task.DefaultTimeout();

        var stopping = app.StopAsync();
        // Kestrel unbinds first: the endpoint leaves the session while the request is still running.
        await Eventually.WaitUntilAsync(() => session.Endpoints.All(e => e.Name != "api"), "the endpoint unbound by the stopping server");
        Assert.That(stopping.IsCompleted, Is.False, "the stop waits for the request in flight");
        Assert.That(await relay.ConnectAndWaitForCloseAsync("api"), Is.True, "a new public connection is refused while stopping");

        release.SetResult();
        Assert.That(await inFlight.DefaultTimeout(), Has.Length.EqualTo(256 * 1024));
        await stopping.DefaultTimeout();
    }

    [Test]
    public async Task TcpAddress_NextToTheSiteLinkEndpoint_KeepsKestrelsSocketTransport()
    {
        await using var relay = await TestRelay.StartAsync(["api"]);
        await using var app = BuildApp(relay, k =>
        {
            k.Listen(IPAddress.Loopback, 0);
            k.ListenSiteLink("api");
        }, Routes);
        await app.StartAsync().DefaultTimeout();

        var tcp = Addresses(app).Single(a => a.StartsWith("http://127.0.0.1:", StringComparison.Ordinal));
        using var direct = new HttpClient { BaseAddress = new Uri(tcp), Timeout = TaskTimeoutExtensions.Limit };
        using var tunnelled = ClientFor(relay, "api");
        Assert.Multiple(async () =>
        {
            Assert.That(await direct.GetStringAsync("echo/1").DefaultTimeout(), Is.EqualTo("echo 1"));
            Assert.That(await tunnelled.GetStringAsync("echo/2").DefaultTimeout(), Is.EqualTo("echo 2"));
        });
        await app.StopAsync().DefaultTimeout();
    }

    [Test]
    public async Task EndpointTheRelayRefuses_FailsTheStart_WithTunnelBindException()
    {
        await using var relay = await TestRelay.StartAsync(["api"]);
        // This token may bind db-* only; the session connects in the background as the server starts.
        await using var app = BuildApp(relay, k => k.ListenSiteLink("api"), Routes, token: TestRelay.AcmeRestrictedToken);

        var error = Assert.ThrowsAsync<TunnelBindException>(async () => await app.StartAsync().DefaultTimeout());
        Assert.That(error!.Code, Is.EqualTo(BindErrorCode.Denied));
        Assert.That(error.Message, Does.Contain("'api'"));
    }

    [Test]
    public async Task EndpointTheRelayRefuses_OnAConnectedSessionGivenExplicitly_FailsTheStart()
    {
        await using var relay = await TestRelay.StartAsync(["api"]);
        var session = await relay.ConnectAgentAsync(TestRelay.AcmeRestrictedToken);
        await using var app = BuildApp(relay, k => k.ListenSiteLink("api"), Routes, addSession: false, transport: o => o.Session = session);

        var error = Assert.ThrowsAsync<TunnelBindException>(async () => await app.StartAsync().DefaultTimeout());
        Assert.That(error!.Code, Is.EqualTo(BindErrorCode.Denied));
    }

    [Test]
    public async Task NoSessionRegistered_FailsTheStart_SayingWhatToCall()
    {
        await using var relay = await TestRelay.StartAsync(["api"]);
        await using var app = BuildApp(relay, k => k.ListenSiteLink("api"), Routes, addSession: false);

        var error = Assert.ThrowsAsync<InvalidOperationException>(async () => await app.StartAsync().DefaultTimeout());
        Assert.That(error!.Message, Does.Contain("no ITunnelSession is registered").And.Contain("AddSiteLink()").And.Contain("'api'"));
    }

    [Test]
    public async Task UnreachableRelay_StartsAfterTheBindTimeout_AndSaysTheEndpointIsNotBoundYet()
    {
        await using var relay = await TestRelay.StartAsync(["api"]);
        using var closed = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        closed.Bind(new IPEndPoint(IPAddress.Loopback, 0));   // bound, never listening: connections are refused
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { EnvironmentName = "Production" });
        builder.Logging.ClearProviders();
        relay.Logs.AddTo(builder.Logging);
        builder.Services.AddSiteLink(o =>
        {
            o.RelayUrl = new Uri($"https://{closed.LocalEndPoint}");
            o.AuthToken = TestRelay.AcmeToken;
            o.PinnedCertificateSha256 = relay.Server.CertificateSha256;
        });
        builder.WebHost.UseSiteLink(o => o.BindTimeout = TimeSpan.FromMilliseconds(300));
        builder.WebHost.ConfigureKestrel(k => k.ListenSiteLink("api"));
        await using var app = builder.Build();

        await app.StartAsync().DefaultTimeout();

        Assert.That(relay.Logs.Contains("SiteLink.AspNetCore", new EventId(2)), Is.True, "the warning that the endpoint is not bound yet");
        await app.StopAsync().DefaultTimeout();
    }

    [Test]
    public void PublicSurface_IsTheDocumentedSetOfTypes()
    {
        var exported = typeof(SiteLinkEndPoint).Assembly.GetExportedTypes().Select(t => t.FullName).Order().ToArray();

        Assert.That(exported, Is.EqualTo(new[]
        {
            "Microsoft.AspNetCore.Hosting.SiteLinkKestrelServerOptionsExtensions",
            "Microsoft.AspNetCore.Hosting.SiteLinkWebHostBuilderExtensions",
            "SiteLink.AspNetCore.ISiteLinkConnectionFeature",
            "SiteLink.AspNetCore.SiteLinkEndPoint",
            "SiteLink.AspNetCore.SiteLinkTransportOptions",
        }));
    }

    [Test]
    public void SiteLinkEndPoint_IsNamedByItsEndpoint()
    {
        var endPoint = new SiteLinkEndPoint("api");
        Assert.Multiple(() =>
        {
            Assert.That(endPoint.ToString(), Is.EqualTo("sitelink:/api"));
            Assert.That(endPoint, Is.EqualTo(new SiteLinkEndPoint("api")));
            Assert.That(endPoint.GetHashCode(), Is.EqualTo(new SiteLinkEndPoint("api").GetHashCode()));
            Assert.That(endPoint, Is.Not.EqualTo(new SiteLinkEndPoint("API")));
            Assert.That(endPoint.AddressFamily, Is.EqualTo(AddressFamily.Unspecified));
            Assert.That(() => new SiteLinkEndPoint(" "), Throws.ArgumentException);
        });
    }

    [Test]
    public void TransportOptions_RejectNonsenseWhenSet()
    {
        var options = new SiteLinkTransportOptions();
        Assert.Multiple(() =>
        {
            Assert.That(options.BindTimeout, Is.EqualTo(TimeSpan.FromSeconds(10)));
            Assert.That(() => options.BindTimeout = TimeSpan.FromSeconds(-2), Throws.InstanceOf<ArgumentOutOfRangeException>());
            Assert.That(() => options.BindTimeout = Timeout.InfiniteTimeSpan, Throws.Nothing);
            Assert.That(() => options.MaxReadBufferSize = 0, Throws.InstanceOf<ArgumentOutOfRangeException>());
            Assert.That(() => options.MaxWriteBufferSize = -1, Throws.InstanceOf<ArgumentOutOfRangeException>());
        });
    }

    private static X509Certificate2 SelfSignedCertificate(string dnsName)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={dnsName}", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName(dnsName);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], critical: false));
        using var ephemeral = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
        // Through PKCS#12, so the key is usable by the TLS stack on every platform.
        return X509CertificateLoader.LoadPkcs12(ephemeral.Export(X509ContentType.Pkcs12), null);
    }
}
