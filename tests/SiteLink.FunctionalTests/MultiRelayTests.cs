using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>C9: one session connected to several relays at once (RelayUrls), each on its own.</summary>
[TestFixture]
[Category("MultiRelay")]
public sealed class MultiRelayTests
{
    private string _folder = "";

    [SetUp]
    public void SetUp() => _folder = Directory.CreateTempSubdirectory("sitelink-multirelay-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_folder, recursive: true);

    /// <summary>Two relays with one certificate (as replicas or points of presence of one vendor have), so one pin trusts both.</summary>
    private async Task<(TestRelay A, TestRelay B)> StartTwoAsync(params string[] cloudEndpoints)
    {
        var certificate = Path.Combine(_folder, "relay.pfx");
        var a = await TestRelay.StartAsync(cloudEndpoints, o => { o.RelayId = "relay-a"; o.Region = "eu"; o.Tls.DevelopmentCertificatePath = certificate; });
        var b = await TestRelay.StartAsync(cloudEndpoints, o => { o.RelayId = "relay-b"; o.Region = "us"; o.Tls.DevelopmentCertificatePath = certificate; });
        Assert.That(b.Server.CertificateSha256, Is.EqualTo(a.Server.CertificateSha256));
        return (a, b);
    }

    private static TunnelSessionOptions Options(TestRelay a, params Uri[] urls)
    {
        var options = a.AgentOptions();
        options.RelayUrl = null;
        foreach (var url in urls)
        {
            options.RelayUrls.Add(url);
        }

        // Quick to notice a dead relay, with room for a busy 2-core machine to answer a heartbeat late.
        options.HeartbeatInterval = TimeSpan.FromMilliseconds(500);
        options.HeartbeatTolerance = TimeSpan.FromMilliseconds(1500);
        options.Reconnect.InitialDelay = TimeSpan.FromMilliseconds(100);
        options.Reconnect.MaxDelay = TimeSpan.FromMilliseconds(500);
        options.ConnectTimeout = TimeSpan.FromSeconds(1);
        return options;
    }

    private static Uri Through(FaultProxy proxy) => new($"https://127.0.0.1:{proxy.Port}");

    private static FaultProxy ProxyTo(TestRelay relay) => new(new IPEndPoint(IPAddress.Loopback, relay.Server.AgentUrl.Port));

    /// <summary>Sends <paramref name="size"/> random bytes through a cloud endpoint to an echo upstream and checks them.</summary>
    private static async Task AssertEchoesAsync(TestRelay relay, string endpoint, int size = 1024 * 1024)
    {
        using var socket = await relay.ConnectClientAsync(endpoint);
        var (sent, received, length) = await socket.EchoRandomAsync(size);
        Assert.That(length, Is.EqualTo(size), $"bytes echoed through {relay.Server.AgentUrl}");
        Assert.That(received, Is.EqualTo(sent), $"SHA-256 of what came back through {relay.Server.AgentUrl}");
    }

    [Test]
    public async Task TwoRelays_EndpointBoundOnEach_BytesFlowThroughBoth()
    {
        var (a, b) = await StartTwoAsync("echo");
        await using var relayA = a;
        await using var relayB = b;
        await using var upstream = TestUpstream.Echo();
        await using var session = await TunnelSession.ConnectAsync(Options(a, a.Server.AgentUrl, b.Server.AgentUrl)).DefaultTimeout();

        var endpoint = await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();
        await AssertEchoesAsync(a, "echo");
        await AssertEchoesAsync(b, "echo");

        Assert.Multiple(() =>
        {
            Assert.That(session.State, Is.EqualTo(TunnelSessionState.Connected));
            Assert.That(endpoint.IsBound, Is.True);
            Assert.That(session.Endpoints.Select(e => e.Name), Is.EqualTo(new[] { "echo" }));
            Assert.That(a.Server.FindEndpoint("acme", "echo"), Is.Not.Null);
            Assert.That(b.Server.FindEndpoint("acme", "echo"), Is.Not.Null);
            Assert.That(session.Relays.Select(r => (r.RelayId, r.Region, r.State)), Is.EqualTo(new[]
            {
                ("relay-a", "eu", TunnelSessionState.Connected),
                ("relay-b", "us", TunnelSessionState.Connected),
            }));
            Assert.That(session.Relays.Select(r => r.SessionId).Distinct().Count(), Is.EqualTo(2), "each relay gave its own session id");
        });

        // Unbinding unbinds on every relay.
        await endpoint.DisposeAsync().DefaultTimeout();
        Assert.Multiple(() =>
        {
            Assert.That(a.Server.FindEndpoint("acme", "echo"), Is.Null);
            Assert.That(b.Server.FindEndpoint("acme", "echo"), Is.Null);
            Assert.That(session.Endpoints, Is.Empty);
        });
    }

    [Test]
    public async Task LosingOneRelay_LosesNothingOnTheOther_AndItComesBackBoundAgain()
    {
        var (a, b) = await StartTwoAsync("echo");
        await using var relayA = a;
        await using var relayB = b;
        await using var upstream = TestUpstream.Echo();
        await using var proxy = ProxyTo(a);
        await using var session = await TunnelSession.ConnectAsync(Options(a, Through(proxy), b.Server.AgentUrl)).DefaultTimeout();
        var states = new StateRecorder(session);
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();
        await AssertEchoesAsync(a, "echo");

        // A long transfer through relay B runs across relay A's outage.
        using var transfer = await b.ConnectClientAsync("echo");
        var payload = RandomNumberGenerator.GetBytes(8 * 1024 * 1024);
        var receiving = transfer.HashToEndAsync();
        await transfer.SendAllAsync(payload.AsMemory(0, payload.Length / 2)).DefaultTimeout();

        proxy.BlackHole();
        await Eventually.WaitUntilAsync(() => session.Relays[0].State == TunnelSessionState.Reconnecting, "relay A's connection was declared dead");
        Assert.Multiple(() =>
        {
            Assert.That(session.State, Is.EqualTo(TunnelSessionState.Connected), "still connected through relay B");
            Assert.That(session.Relays[1].State, Is.EqualTo(TunnelSessionState.Connected));
        });
        await AssertEchoesAsync(b, "echo", 256 * 1024);

        await transfer.SendAllAsync(payload.AsMemory(payload.Length / 2)).DefaultTimeout();
        transfer.Shutdown(SocketShutdown.Send);
        var (hash, length) = await receiving.DefaultTimeout();
        Assert.That(length, Is.EqualTo(payload.Length));
        Assert.That(hash, Is.EqualTo(SHA256.HashData(payload)), "the transfer through relay B lost nothing while relay A was gone");

        proxy.Heal();
        await Eventually.WaitUntilAsync(() => session.Relays[0].State == TunnelSessionState.Connected && a.Server.FindEndpoint("acme", "echo") is not null,
            "relay A reconnected and the endpoint was bound there again");
        await AssertEchoesAsync(a, "echo");
        Assert.That(states.Count(TunnelSessionState.Reconnecting), Is.Zero, "the session as a whole never stopped being connected");
    }

    [Test]
    public async Task OneRelayUnreachableAtStart_ConnectSucceedsThroughTheOther_AndTheFirstJoinsLater()
    {
        var (a, b) = await StartTwoAsync("echo");
        await using var relayA = a;
        await using var relayB = b;
        await using var upstream = TestUpstream.Echo();
        await using var proxy = ProxyTo(a);
        proxy.BlackHole();
        var options = Options(a, Through(proxy), b.Server.AgentUrl);
        options.Endpoints.Add(new ForwardEndpointOptions { Name = "echo", Upstream = upstream.Uri.ToString() });

        await using var session = await TunnelSession.ConnectAsync(options).DefaultTimeout();
        Assert.Multiple(() =>
        {
            Assert.That(session.State, Is.EqualTo(TunnelSessionState.Connected));
            Assert.That(session.Relays[0].State, Is.Not.EqualTo(TunnelSessionState.Connected));
            Assert.That(session.Relays[1].State, Is.EqualTo(TunnelSessionState.Connected));
        });
        await AssertEchoesAsync(b, "echo");

        proxy.Heal();
        await Eventually.WaitUntilAsync(() => a.Server.FindEndpoint("acme", "echo") is not null, "relay A joined and bound the declared endpoint");
        await AssertEchoesAsync(a, "echo");
    }

    [Test]
    public async Task AllRelaysUnreachable_ConnectFailsWithTheFirstRelaysError_AndBadTokenIsNotRetried()
    {
        var (a, b) = await StartTwoAsync();
        await using var relayA = a;
        await using var relayB = b;
        var closedPort = RealServers.FreePort();
        var otherClosedPort = closedPort;
        while (otherClosedPort == closedPort)
        {
            otherClosedPort = RealServers.FreePort();
        }

        var unreachable = Assert.ThrowsAsync<TunnelConnectionException>(() =>
            TunnelSession.ConnectAsync(Options(a, new Uri($"https://127.0.0.1:{closedPort}"), new Uri($"https://127.0.0.1:{otherClosedPort}"))).DefaultTimeout());
        var badToken = Options(a, a.Server.AgentUrl, b.Server.AgentUrl);
        badToken.AuthToken = "not-the-token-0123456789abcdef";
        var rejected = Assert.ThrowsAsync<TunnelAuthenticationException>(() => TunnelSession.ConnectAsync(badToken).DefaultTimeout());

        Assert.Multiple(() =>
        {
            Assert.That(unreachable!.Message, Does.Contain(closedPort.ToString(System.Globalization.CultureInfo.InvariantCulture)));
            Assert.That(rejected, Is.Not.Null);
            Assert.That(a.Server.SessionCount + b.Server.SessionCount, Is.Zero);
        });
    }

    [Test]
    public async Task Listener_AcceptsConnectionsFromEveryRelay_HandlerServesThroughEvery()
    {
        var (a, b) = await StartTwoAsync("jobs", "status");
        await using var relayA = a;
        await using var relayB = b;
        await using var session = await TunnelSession.ConnectAsync(Options(a, a.Server.AgentUrl, b.Server.AgentUrl)).DefaultTimeout();
        var listener = await session.ListenAsync("jobs").DefaultTimeout();
        await session.BindHandlerAsync("status", (c, ct) => c.Stream.WriteAsync("ok"u8.ToArray(), ct).AsTask()).DefaultTimeout();

        foreach (var relay in new[] { a, b })
        {
            using var client = await relay.ConnectClientAsync("jobs");
            await using var accepted = await listener.AcceptAsync().AsTask().DefaultTimeout();
            await client.SendAllAsync("ping"u8.ToArray());
            var buffer = new byte[4];
            await accepted.Stream.ReadExactlyAsync(buffer).AsTask().DefaultTimeout();
            Assert.That(buffer, Is.EqualTo("ping"u8.ToArray()), $"accepted from {relay.Server.AgentUrl}");

            using var status = await relay.ConnectClientAsync("status");
            Assert.That(await status.ReadToEndAsync().DefaultTimeout(), Is.EqualTo("ok"u8.ToArray()));
        }

        await listener.DisposeAsync().DefaultTimeout();
        Assert.ThrowsAsync<ObjectDisposedException>(() => listener.AcceptAsync().AsTask().DefaultTimeout());
    }

    [Test]
    public async Task CloseAsync_ClosesEveryRelayConnection()
    {
        var (a, b) = await StartTwoAsync("echo");
        await using var relayA = a;
        await using var relayB = b;
        var session = await TunnelSession.ConnectAsync(Options(a, a.Server.AgentUrl, b.Server.AgentUrl)).DefaultTimeout();
        await session.BindHandlerAsync("echo", (_, _) => Task.CompletedTask).DefaultTimeout();

        await session.CloseAsync().DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(session.State, Is.EqualTo(TunnelSessionState.Closed));
            Assert.That(session.Relays.Select(r => r.State), Is.All.EqualTo(TunnelSessionState.Closed));
        });
        await Eventually.WaitUntilAsync(() => a.Server.SessionCount == 0 && b.Server.SessionCount == 0, "both relays saw the session end");
    }

    [Test]
    public async Task InAHost_RelayUrlsFromConfiguration_HealthCheckReportsEachRelay()
    {
        var (a, b) = await StartTwoAsync("echo");
        await using var relayA = a;
        await using var relayB = b;
        await using var upstream = TestUpstream.Echo();
        await using var proxy = ProxyTo(b);
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["SiteLink:RelayUrls:0"] = a.Server.AgentUrl.ToString(),
            ["SiteLink:RelayUrls:1"] = Through(proxy).ToString(),
            ["SiteLink:AuthToken"] = TestRelay.AcmeToken,
            ["SiteLink:PinnedCertificateSha256"] = a.Server.CertificateSha256,
            ["SiteLink:HeartbeatInterval"] = "00:00:00.500",
            ["SiteLink:HeartbeatTolerance"] = "00:00:01.500",
            ["SiteLink:ConnectTimeout"] = "00:00:01",
            ["SiteLink:Endpoints:0:Name"] = "echo",
            ["SiteLink:Endpoints:0:Upstream"] = upstream.Uri.ToString(),
        });
        builder.Services.AddSiteLink().AddHealthCheck();
        using var host = builder.Build();
        var session = host.Services.GetRequiredService<ITunnelSession>();
        var health = host.Services.GetRequiredService<HealthCheckService>();
        await host.StartAsync().DefaultTimeout();
        await Eventually.WaitUntilAsync(() => session.Relays.Count == 2 && session.Relays.All(r => r.State == TunnelSessionState.Connected)
            && a.Server.FindEndpoint("acme", "echo") is not null && b.Server.FindEndpoint("acme", "echo") is not null, "both relays connected, echo bound on each");
        await AssertEchoesAsync(a, "echo");
        await AssertEchoesAsync(b, "echo");

        var both = await health.CheckHealthAsync().DefaultTimeout();
        proxy.BlackHole();
        await Eventually.WaitUntilAsync(() => session.Relays[1].State == TunnelSessionState.Reconnecting, "relay B's connection declared dead");
        var one = await health.CheckHealthAsync().DefaultTimeout();
        await host.StopAsync().DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(both.Status, Is.EqualTo(HealthStatus.Healthy));
            Assert.That(both.Entries["sitelink"].Description, Does.Contain("all 2 relays"));
            Assert.That(both.Entries["sitelink"].Data[$"relay:{a.Server.AgentUrl}"], Does.StartWith("Connected (relay-a, eu)"));
            Assert.That(one.Status, Is.EqualTo(HealthStatus.Degraded), "serving, through one relay of two");
            Assert.That(one.Entries["sitelink"].Description, Does.Contain("connected to 1 of 2 relays"));
            Assert.That(one.Entries["sitelink"].Data[$"relay:{Through(proxy)}"], Does.StartWith("Reconnecting"));
        });
    }

    [Test]
    public async Task OneRelayInRelayUrls_IsTheSameAsRelayUrl()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var upstream = TestUpstream.Echo();
        var options = Options(relay, relay.Server.AgentUrl);
        Assert.That(options.RelayUrl, Is.Null);

        await using var session = await TunnelSession.ConnectAsync(options).DefaultTimeout();
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();
        await AssertEchoesAsync(relay, "echo");

        Assert.Multiple(() =>
        {
            Assert.That(session.Relay.Url, Is.EqualTo(relay.Server.AgentUrl));
            Assert.That(session.Relays, Has.Count.EqualTo(1));
            Assert.That(session.Relays[0].State, Is.EqualTo(TunnelSessionState.Connected));
        });
    }

    [Test]
    public async Task BadTokenOnOneRelay_FailsConnect_EvenThoughTheOtherAnswered()
    {
        var (a, b) = await StartTwoAsync();
        await using var relayA = a;
        await using var relayB = b;
        // Relay B does not know this token (as when it was revoked there): not something a retry fixes.
        b.Server.RevokeToken("acme");

        Assert.ThrowsAsync<TunnelAuthenticationException>(() => TunnelSession.ConnectAsync(Options(a, a.Server.AgentUrl, b.Server.AgentUrl)).DefaultTimeout());
        await Eventually.WaitUntilAsync(() => a.Server.SessionCount == 0, "the session relay A accepted was closed again");
    }

    [TestCase(new[] { "https://a.example", "https://a.example" }, "named twice")]
    [TestCase(new[] { "http://a.example" }, "uses http://")]
    [TestCase(new[] { "relative/path" }, "absolute URL")]
    public void InvalidRelayUrls_AreListed(string[] urls, string problem)
    {
        var options = new TunnelSessionOptions { AuthToken = "token-0123456789abcdef" };
        foreach (var url in urls)
        {
            options.RelayUrls.Add(new Uri(url, UriKind.RelativeOrAbsolute));
        }

        Assert.That(options.Validate(), Has.Some.Contain(problem));
    }

    [Test]
    public void MoreThanMaxRelays_IsRefused()
    {
        var options = new TunnelSessionOptions { AuthToken = "token-0123456789abcdef" };
        for (var i = 0; i <= TunnelSessionOptions.MaxRelays; i++)
        {
            options.RelayUrls.Add(new Uri($"https://relay{i}.example"));
        }

        Assert.That(options.Validate(), Has.Some.Contain($"at most {TunnelSessionOptions.MaxRelays}"));
    }
}
