using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Time.Testing;
using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Relay.Configuration;

namespace SiteLink.FunctionalTests;

/// <summary>
/// Attacks the real relay's agent port with hand-written HTTP/2 frames over TLS (<see cref="RawHttp2Client"/>): rapid
/// reset floods, idle connections that never authenticate, more connections than one address may hold. Each attack
/// must be cut short by the relay's connection guard while a well-behaved agent of another tenant, connected before
/// the attack, keeps carrying verified bytes.
/// </summary>
[TestFixture, Category("Hostile")]
public sealed class HostileAgentPortTests
{
    private const string ControlPath = "/sitelink.v1.Tunnel/Control";
    private const string GoodEndpoint = "globex-echo";
    private const int FloodPairs = 5000;
    private const int FloodBatch = 50;
    private static readonly TimeSpan RoundTripLimit = TimeSpan.FromSeconds(2);

    [Test]
    public async Task RapidResetFlood_WithoutToken_ClosesTheConnection()
    {
        await using var relay = await TestRelay.StartAsync([GoodEndpoint]);
        await using var upstream = TestUpstream.Echo();
        await ConnectGoodAgentAsync(relay, upstream);
        var budget = new RelayLimits().MaxFailedCallsPerConnection;

        var flood = await FloodAsync(relay, token: null);

        var counters = relay.Server.Counters;
        var loggedFailures = relay.Logs.Entries.Count(e => e.EventId.Id == 10 && e.Category.EndsWith("AuthFailureLog", StringComparison.Ordinal));
        Assert.Multiple(() =>
        {
            Assert.That(flood.Closed, Is.True, $"the relay closed the flooding connection ({flood})");
            Assert.That(flood.PairsSent, Is.LessThanOrEqualTo(MostPairsBeforeClose(budget, flood.Elapsed)), $"closed after about MaxFailedCallsPerConnection wasted calls ({flood})");
            Assert.That(counters.AgentConnectionEvents("failed_calls"), Is.EqualTo(1));
            Assert.That(counters.AuthenticationFailures, Is.InRange(budget, flood.PairsSent), "every call failed authentication; the budget ran out only after MaxFailedCallsPerConnection of them");
            Assert.That(loggedFailures, Is.InRange(1, 2), "failed authentications are logged sampled, not one line each");
            Assert.That(flood.ProbeRoundTrips, Is.GreaterThan(0));
            Assert.That(flood.SlowestProbe, Is.LessThan(RoundTripLimit), "the good agent kept answering during the flood");
        });
        await Eventually.WaitUntilAsync(() => relay.Server.AgentConnections == 1, "only the good agent's connection is left");
        await AssertGoodAgentServesAsync(relay);
    }

    [Test]
    public async Task RapidResetFlood_WithValidToken_ClosesTheConnection()
    {
        await using var relay = await TestRelay.StartAsync([GoodEndpoint]);
        await using var upstream = TestUpstream.Echo();
        await ConnectGoodAgentAsync(relay, upstream);
        var budget = new RelayLimits().MaxFailedCallsPerConnection;

        // Each Control call authenticates, then waits for a Hello the reset cancels: it did nothing useful.
        var flood = await FloodAsync(relay, TestRelay.AcmeToken);

        var counters = relay.Server.Counters;
        Assert.Multiple(() =>
        {
            Assert.That(flood.Closed, Is.True, $"the relay closed the flooding connection ({flood})");
            Assert.That(flood.PairsSent, Is.LessThanOrEqualTo(MostPairsBeforeClose(budget, flood.Elapsed)), $"closed after about MaxFailedCallsPerConnection wasted calls ({flood})");
            Assert.That(counters.AgentConnectionEvents("failed_calls"), Is.EqualTo(1));
            Assert.That(counters.AuthenticationFailures, Is.Zero, "the token was valid");
            Assert.That(relay.Server.SessionCount, Is.EqualTo(1), "no session was created by the flood");
            Assert.That(flood.ProbeRoundTrips, Is.GreaterThan(0));
            Assert.That(flood.SlowestProbe, Is.LessThan(RoundTripLimit), "the good agent kept answering during the flood");
        });
        await Eventually.WaitUntilAsync(() => relay.Server.PendingHandshakes == 0, "no control stream is left waiting for its Hello");
        await Eventually.WaitUntilAsync(() => relay.Server.AgentConnections == 1, "only the good agent's connection is left");
        await AssertGoodAgentServesAsync(relay);
    }

    [Test]
    public async Task IdleTlsConnection_IsClosedAfterThePreAuthenticationTimeout()
    {
        var clock = new FakeTimeProvider();
        await using var relay = await TestRelay.StartAsync([GoodEndpoint], timeProvider: clock);
        await using var upstream = TestUpstream.Echo();
        var good = await ConnectGoodAgentAsync(relay, upstream);
        var timeout = new RelayLimits().PreAuthenticationTimeout;
        await using var idle = await ConnectRawAsync(relay);
        await using var authenticated = await ConnectRawAsync(relay);
        await authenticated.SendCallsAsync(1, ControlPath, TestRelay.AcmeToken, reset: false).DefaultTimeout();
        await Eventually.WaitUntilAsync(() => relay.Server.PendingHandshakes == 1, "the authenticated call was accepted and waits for its Hello");

        clock.Advance(timeout - TimeSpan.FromSeconds(1));
        var openBeforeTheDeadline = await idle.PingAsync().DefaultTimeout();
        clock.Advance(TimeSpan.FromSeconds(2));
        var closedAfterIt = await ClosesWithinAsync(idle, TimeSpan.FromSeconds(10));

        Assert.Multiple(async () =>
        {
            Assert.That(openBeforeTheDeadline, Is.True, "the idle connection is not closed before the deadline");
            Assert.That(closedAfterIt, Is.True, "the idle connection is closed once the deadline passed");
            Assert.That(relay.Server.Counters.AgentConnectionEvents("pre_authentication_timeout"), Is.EqualTo(1));
            Assert.That(await authenticated.PingAsync().DefaultTimeout(), Is.True, "a connection that made an authenticated call is kept");
            Assert.That(authenticated.Closed.IsCompleted, Is.False);
            Assert.That(good.State, Is.EqualTo(TunnelSessionState.Connected));
        });
        await Eventually.WaitUntilAsync(() => relay.Server.AgentConnections == 2, "the good agent's and the authenticated connection are left");
        await AssertGoodAgentServesAsync(relay);

        // The relay's drain waits on its (frozen) clock while sessions remain: end the session before stopping it.
        await good.DisposeAsync().DefaultTimeout();
        await Eventually.WaitUntilAsync(() => relay.Server.SessionCount == 0, "the good agent's session ended");
    }

    [Test]
    public async Task ConnectionsBeyondThePerAddressCap_AreClosedAtOnce()
    {
        const int cap = 6;
        await using var relay = await TestRelay.StartAsync([GoodEndpoint], o => o.Limits.MaxAgentConnectionsPerIp = cap);
        await using var upstream = TestUpstream.Echo();
        await ConnectGoodAgentAsync(relay, upstream);
        Assert.That(relay.Server.AgentConnections, Is.EqualTo(1), "the good agent holds one connection");
        const int attempts = 10;
        var sockets = new List<Socket>();
        var refusedAtConnect = 0;
        for (var i = 0; i < attempts; i++)
        {
            try
            {
                sockets.Add(await RawHttp2Client.OpenTcpAsync(relay.Server.AgentUrl).DefaultTimeout());
            }
            catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionReset or SocketError.ConnectionRefused)
            {
                // Closed so quickly that the connect itself reports it.
                refusedAtConnect++;
            }
        }

        var started = await Task.WhenAll(sockets.Select(s => TryStartAsync(s, relay))).DefaultTimeout();
        var admitted = started.Where(a => a.Client is not null).Select(a => a.Client!).ToArray();
        try
        {
            var refusedAfter = started.Where(a => a.Client is null).Select(a => a.Elapsed).ToArray();
            var usable = await Task.WhenAll(admitted.Select(c => c.PingAsync())).DefaultTimeout();
            Assert.Multiple(() =>
            {
                Assert.That(admitted, Has.Length.EqualTo(cap - 1), "the cap less the good agent's connection");
                Assert.That(usable, Has.All.True, "the admitted connections are usable");
                Assert.That(refusedAfter.Length + refusedAtConnect, Is.EqualTo(attempts - (cap - 1)));
                Assert.That(refusedAfter, Has.All.LessThan(TimeSpan.FromSeconds(3)), "refused connections are closed at once, not at a deadline");
                Assert.That(relay.Server.Counters.AgentConnectionEvents("address_limit"), Is.EqualTo(attempts - (cap - 1)));
                Assert.That(relay.Server.AgentConnections, Is.EqualTo(cap));
            });
        }
        finally
        {
            foreach (var client in admitted)
            {
                await client.DisposeAsync();
            }
        }

        await Eventually.WaitUntilAsync(() => relay.Server.AgentConnections == 1, "the raw connections were released");
        await using (var again = await ConnectRawAsync(relay))
        {
            Assert.That(await again.PingAsync().DefaultTimeout(), Is.True, "a new connection is admitted once the address is under its cap");
        }

        Assert.That(relay.Server.Counters.AgentConnectionEvents("address_limit"), Is.EqualTo(attempts - (cap - 1)), "that one was not refused");
        await AssertGoodAgentServesAsync(relay);
    }

    [Test]
    public async Task ServerAdvertisesABoundedStreamLimit()
    {
        await using var relay = await TestRelay.StartAsync([GoodEndpoint]);
        await using var upstream = TestUpstream.Echo();
        await ConnectGoodAgentAsync(relay, upstream);
        var limits = new RelayLimits();
        var expected = 1 + limits.MaxConcurrentStreamsPerSession + limits.MaxPendingStreamsPerSession + limits.MaxParkedStreamsPerSession + 16;

        await using var client = await RawHttp2Client.ConnectAsync(relay.Server.AgentUrl, relay.Server.CertificateSha256!).DefaultTimeout();
        var settings = await client.ServerSettings.DefaultTimeout();

        Assert.That(settings, Is.Not.Null, "the relay sent its SETTINGS");
        Assert.That(settings!.TryGetValue(RawHttp2Client.SettingsMaxConcurrentStreams, out var advertised), Is.True, "SETTINGS_MAX_CONCURRENT_STREAMS is advertised");
        Assert.That(advertised, Is.EqualTo(expected));
        await AssertGoodAgentServesAsync(relay);
    }

    [Test]
    public async Task AddressWhoseConnectionWasClosedForAbuse_CoolsDown_BeforeItMayConnectAgain()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var attackerAddress = IPAddress.Parse("127.0.0.2");
        await using var relay = await TestRelay.StartAsync([GoodEndpoint], o => o.Limits.MaxFailedCallsPerConnection = 20, time);
        await using var upstream = TestUpstream.Echo();
        var good = await ConnectGoodAgentAsync(relay, upstream);

        await using (var flooding = await RawHttp2Client.ConnectAsync(relay.Server.AgentUrl, relay.Server.CertificateSha256!, attackerAddress))
        {
            try
            {
                await flooding.SendCallsAsync(100, ControlPath, token: null, reset: true).DefaultTimeout();
            }
            catch (IOException)
            {
                // Closed while writing.
            }

            Assert.That(await ClosesWithinAsync(flooding, TimeSpan.FromSeconds(10)), Is.True, "closed for exhausting its budget");
        }

        var refusedAgain = await ConnectionRefusedAsync(relay, attackerAddress);
        await using var otherAddress = await RawHttp2Client.ConnectAsync(relay.Server.AgentUrl, relay.Server.CertificateSha256!);
        var otherServed = await otherAddress.PingAsync().DefaultTimeout();
        time.Advance(new RelayLimits().AbusiveAddressCooldown + TimeSpan.FromSeconds(1));
        await using var afterCooldown = await RawHttp2Client.ConnectAsync(relay.Server.AgentUrl, relay.Server.CertificateSha256!, attackerAddress);
        var servedAfter = await afterCooldown.PingAsync().DefaultTimeout();

        // The relay's drain waits on its (frozen) clock while sessions remain: end the session before stopping it.
        await good.DisposeAsync().DefaultTimeout();
        await Eventually.WaitUntilAsync(() => relay.Server.SessionCount == 0, "the good agent's session ended");

        Assert.Multiple(() =>
        {
            Assert.That(refusedAgain, Is.True, "the same address is refused at once while it cools down");
            Assert.That(relay.Server.Counters.AgentConnectionEvents("address_cooldown"), Is.EqualTo(1));
            Assert.That(otherServed, Is.True, "other addresses are not affected");
            Assert.That(servedAfter, Is.True, "after the cooldown the address is served again");
        });
    }

    /// <summary>Whether a connection from <paramref name="from"/> is closed before it completes TLS and a PING.</summary>
    private static async Task<bool> ConnectionRefusedAsync(TestRelay relay, IPAddress from)
    {
        try
        {
            await using var client = await RawHttp2Client.ConnectAsync(relay.Server.AgentUrl, relay.Server.CertificateSha256!, from).DefaultTimeout();
            return !await client.PingAsync().DefaultTimeout();
        }
        catch (Exception ex) when (ex is IOException or SocketException or System.Security.Authentication.AuthenticationException)
        {
            return true;
        }
    }

    /// <summary>What a flood did: how many HEADERS+RST_STREAM pairs were sent before the relay closed the connection.</summary>
    private sealed record FloodResult(int PairsSent, bool Closed, TimeSpan Elapsed, string? CloseReason, int? GoAwayErrorCode, int ProbeRoundTrips, TimeSpan SlowestProbe);

    /// <summary>
    /// The pairs a flood may send before the relay closes it: the budget, its refill over the flood, the batch in
    /// flight when it ran out, and slack for calls the relay read but had not finished yet.
    /// </summary>
    private static int MostPairsBeforeClose(int budget, TimeSpan elapsed) =>
        budget + (int)(budget / 10.0 * elapsed.TotalSeconds) + (4 * FloodBatch) + budget;

    /// <summary>
    /// Sends HEADERS(+token when given)+RST_STREAM pairs on one connection in batches, each followed by a PING whose
    /// ACK paces the next batch (the relay has read every frame before it), until the relay closes the connection or
    /// <see cref="FloodPairs"/> were sent. Meanwhile a public client makes 1-byte round trips through the good agent.
    /// </summary>
    private static async Task<FloodResult> FloodAsync(TestRelay relay, string? token)
    {
        await using var attacker = await ConnectRawAsync(relay);
        var flooding = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var probing = ProbeGoodAgentAsync(relay, flooding.Task);
        var watch = Stopwatch.StartNew();
        var sent = 0;
        try
        {
            while (sent < FloodPairs)
            {
                try
                {
                    await attacker.SendCallsAsync(FloodBatch, ControlPath, token, reset: true).DefaultTimeout();
                }
                catch (IOException)
                {
                    break;
                }

                sent += FloodBatch;
                if (!await attacker.PingAsync().DefaultTimeout())
                {
                    break;
                }
            }
        }
        finally
        {
            flooding.TrySetResult();
        }

        var closed = await ClosesWithinAsync(attacker, TimeSpan.FromSeconds(10));
        var elapsed = watch.Elapsed;
        var (roundTrips, slowest) = await probing.DefaultTimeout();
        return new FloodResult(sent, closed, elapsed, attacker.CloseReason, attacker.GoAwayErrorCode, roundTrips, slowest);
    }

    /// <summary>1-byte round trips through the good agent on one public connection, back to back until <paramref name="stop"/>.</summary>
    private static async Task<(int RoundTrips, TimeSpan Slowest)> ProbeGoodAgentAsync(TestRelay relay, Task stop)
    {
        using var client = await relay.ConnectClientAsync(GoodEndpoint);
        var echo = new byte[1];
        var slowest = TimeSpan.Zero;
        var roundTrips = 0;
        do
        {
            var sent = (byte)roundTrips;
            var watch = Stopwatch.StartNew();
            await client.SendAsync(new[] { sent }).DefaultTimeout();
            var read = await client.ReceiveAsync(echo).DefaultTimeout();
            Assert.That((read, echo[0]), Is.EqualTo((1, sent)), "the good agent echoes the probe");
            slowest = watch.Elapsed > slowest ? watch.Elapsed : slowest;
            roundTrips++;
        }
        while (!stop.IsCompleted);

        return (roundTrips, slowest);
    }

    private static async Task<bool> ClosesWithinAsync(RawHttp2Client client, TimeSpan limit)
    {
        try
        {
            await client.Closed.WaitAsync(limit);
            return true;
        }
        catch (TimeoutException)
        {
            return false;
        }
    }

    /// <summary>A raw TLS+h2 connection that has exchanged SETTINGS with the relay.</summary>
    private static async Task<RawHttp2Client> ConnectRawAsync(TestRelay relay)
    {
        var client = await RawHttp2Client.ConnectAsync(relay.Server.AgentUrl, relay.Server.CertificateSha256!).DefaultTimeout();
        Assert.That(await client.ServerSettings.DefaultTimeout(), Is.Not.Null, "the relay sent its SETTINGS");
        return client;
    }

    /// <summary>TLS and the SETTINGS exchange on an open socket: the client when both completed, else null; and how long it took.</summary>
    private static async Task<(RawHttp2Client? Client, TimeSpan Elapsed)> TryStartAsync(Socket socket, TestRelay relay)
    {
        var watch = Stopwatch.StartNew();
        RawHttp2Client client;
        try
        {
            client = await RawHttp2Client.StartAsync(socket, relay.Server.AgentUrl, relay.Server.CertificateSha256!);
        }
        catch (IOException)
        {
            return (null, watch.Elapsed);
        }

        if (await client.ServerSettings is null)
        {
            await client.DisposeAsync();
            return (null, watch.Elapsed);
        }

        return (client, watch.Elapsed);
    }

    /// <summary>The good agent: a globex session serving <see cref="GoodEndpoint"/> from an echo upstream, checked once.</summary>
    private static async Task<ITunnelSession> ConnectGoodAgentAsync(TestRelay relay, TestUpstream upstream)
    {
        var session = await relay.ConnectAgentAsync(TestRelay.GlobexToken);
        await session.ForwardAsync(GoodEndpoint, upstream.Uri).DefaultTimeout();
        await AssertGoodAgentServesAsync(relay);
        return session;
    }

    /// <summary>A 1-byte round trip through the good agent within <see cref="RoundTripLimit"/>, then 256 KiB echoed exactly.</summary>
    private static async Task AssertGoodAgentServesAsync(TestRelay relay)
    {
        using (var probe = await relay.ConnectClientAsync(GoodEndpoint))
        {
            var watch = Stopwatch.StartNew();
            await probe.SendAsync(new byte[] { 0x5A }).DefaultTimeout();
            var echo = new byte[1];
            var read = await probe.ReceiveAsync(echo).DefaultTimeout();
            var elapsed = watch.Elapsed;
            Assert.That((read, echo[0]), Is.EqualTo((1, (byte)0x5A)), "the good agent echoes one byte");
            Assert.That(elapsed, Is.LessThan(RoundTripLimit), "the good agent answers promptly");
        }

        var payload = SocketTestExtensions.RandomBytes(256 * 1024);
        using var client = await relay.ConnectClientAsync(GoodEndpoint);
        var receiving = client.ReadToEndAsync();
        await client.SendAllAsync(payload).DefaultTimeout();
        client.Shutdown(SocketShutdown.Send);
        Assert.That(await receiving.DefaultTimeout(), Is.EqualTo(payload), "the good agent carries 256 KiB exactly");
    }
}
