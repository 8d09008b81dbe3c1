using System.Net.Sockets;
using Microsoft.Extensions.Time.Testing;
using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Relay.Diagnostics;

namespace SiteLink.FunctionalTests;

/// <summary>
/// Anonymous public clients flooding a cloud endpoint: the relay caps connections per endpoint and per client address
/// and closes idle ones, the agent caps what it serves, so a flood never becomes unbounded connections inside the
/// customer's network — and another tenant keeps being served.
/// </summary>
[TestFixture]
[Category("Hostile")]
public sealed class HostilePublicClientTests
{
    private static async Task<List<Socket>> ConnectSilentlyAsync(TestRelay relay, string cloudEndpoint, int count)
    {
        var sockets = new List<Socket>(count);
        for (var i = 0; i < count; i++)
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            sockets.Add(socket);
            try
            {
                await socket.ConnectAsync(relay.CloudEndpoint(cloudEndpoint)).DefaultTimeout();
            }
            catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionReset or SocketError.ConnectionRefused)
            {
                // Refused so fast that the connect itself saw the reset.
            }
        }

        return sockets;
    }

    private static void CloseAll(IEnumerable<Socket> sockets)
    {
        foreach (var socket in sockets)
        {
            socket.Dispose();
        }
    }

    [Test]
    public async Task SilentClientsBeyondThePerAddressCap_AreRefused_AndNeverReachTheAgent()
    {
        await using var relay = await TestRelay.StartAsync(["echo", GoodAgent.CloudEndpoint], o => o.CloudEndpoints[0].MaxConnectionsPerClientIp = 20);
        await using var good = await GoodAgent.StartAsync(relay);
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();

        var silent = await ConnectSilentlyAsync(relay, "echo", 100);
        await Eventually.WaitUntilAsync(() => relay.Server.Counters.Refused(RefusalReason.ClientIpLimit) == 80, "80 refused");
        await Eventually.WaitUntilAsync(() => upstream.Accepted == 20, "20 reached the upstream");
        await good.AssertServesAsync();
        var refusedWhileFull = relay.Server.Counters.Refused(RefusalReason.ClientIpLimit);
        CloseAll(silent);
        await Eventually.WaitUntilAsync(() => upstream.Open == 0 && relay.Server.Counters.ActiveConnections == 0, "closed clients close their upstream connections");

        using var after = await relay.ConnectClientAsync("echo");
        await after.SendAllAsync(new byte[] { 1, 2, 3 }).DefaultTimeout();
        var echoed = new byte[3];
        var read = await after.ReceiveAsync(echoed.AsMemory(), SocketFlags.None).AsTask().DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(refusedWhileFull, Is.EqualTo(80));
            Assert.That(upstream.Accepted, Is.EqualTo(21), "never more than the cap, then one more once there was room");
            Assert.That(read, Is.GreaterThan(0), "the address is served again once its connections closed");
        });
    }

    [Test]
    public async Task ClientsBeyondTheEndpointCap_AreRefused()
    {
        await using var relay = await TestRelay.StartAsync(["echo"], o => o.CloudEndpoints[0].MaxConnections = 10);
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();

        var silent = await ConnectSilentlyAsync(relay, "echo", 25);
        await Eventually.WaitUntilAsync(() => relay.Server.Counters.Refused(RefusalReason.EndpointLimit) == 15, "15 refused");
        await Eventually.WaitUntilAsync(() => upstream.Accepted == 10, "10 reached the upstream");
        CloseAll(silent);

        Assert.That(relay.Logs.Entries.Count(e => e.EventId.Id == 30), Is.LessThanOrEqualTo(2), "refusals are counted, and logged once a second");
    }

    [Test]
    public async Task IdleConnections_AreClosed_AfterTheEndpointsIdleTimeout_BusyOnesAreNot()
    {
        // The relay's clock is fake: the idle timeout is exact, whatever the machine is doing. (Its other timers are
        // longer than the 21 s the test moves it: the session's silence timeout is 25 s, renewed by real heartbeats.)
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var relay = await TestRelay.StartAsync(["echo"], o => o.CloudEndpoints[0].IdleTimeout = TimeSpan.FromSeconds(20), time);
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();
        var silent = await ConnectSilentlyAsync(relay, "echo", 10);
        using var busy = await relay.ConnectClientAsync("echo");
        await Eventually.WaitUntilAsync(() => upstream.Open == 11, "all 11 bridged");
        var one = new byte[1];

        time.Advance(TimeSpan.FromSeconds(15));
        await busy.SendAllAsync(new byte[] { 7 }).DefaultTimeout();
        var echoed = await busy.ReceiveAsync(one.AsMemory(), SocketFlags.None).AsTask().DefaultTimeout();
        time.Advance(TimeSpan.FromSeconds(6));

        var closes = await Task.WhenAll(silent.Select(s => s.WaitForCloseAsync())).DefaultTimeout();
        await Eventually.WaitUntilAsync(() => upstream.Open == 1, "the agent closed the idle ones' upstream connections");
        await busy.SendAllAsync(new byte[] { 8 }).DefaultTimeout();
        var stillServed = await busy.ReceiveAsync(one.AsMemory(), SocketFlags.None).AsTask().DefaultTimeout();
        CloseAll(silent);

        Assert.Multiple(() =>
        {
            Assert.That(echoed, Is.EqualTo(1));
            Assert.That(closes, Has.All.True, "every connection silent for 21 s was closed");
            Assert.That(relay.Server.Counters.IdleTimeouts, Is.EqualTo(10));
            Assert.That(stillServed, Is.EqualTo(1), "the one that spoke 6 s ago is still served");
        });
    }

    [Test]
    public async Task AgentConnectionSlots_ComeBack_AfterRefusedConnections()
    {
        await using var relay = await TestRelay.StartAsync(["dead", "echo"]);
        await using var upstream = TestUpstream.Echo();
        using var closed = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        closed.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));
        var deadPort = ((System.Net.IPEndPoint)closed.LocalEndPoint!).Port;
        var session = await relay.ConnectAgentAsync(configure: o => o.MaxConcurrentConnections = 3);
        await session.ForwardAsync("dead", Loopback.Tcp(deadPort)).DefaultTimeout();
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();

        for (var i = 0; i < 10; i++)
        {
            Assert.That(await relay.ConnectAndWaitForCloseAsync("dead"), Is.True, "an unreachable upstream closes the client");
        }

        await Eventually.WaitUntilAsync(() => relay.Server.Counters.Refused(RefusalReason.AgentRefused) == 10, "10 refused by the agent");
        var served = new List<Socket>();
        for (var i = 0; i < 3; i++)
        {
            var client = await relay.ConnectClientAsync("echo");
            served.Add(client);
            await client.SendAllAsync(new byte[] { 9 }).DefaultTimeout();
            var one = new byte[1];
            Assert.That(await client.ReceiveAsync(one.AsMemory(), SocketFlags.None).AsTask().DefaultTimeout(), Is.EqualTo(1), $"connection {i} served");
        }

        CloseAll(served);
        Assert.That(relay.Server.Counters.Refused(RefusalReason.AgentRefused), Is.EqualTo(10), "all 3 places were free again");
    }

    [Test]
    public async Task AgentCapsTheConnectionsItServes_PerEndpoint_AndPerSession()
    {
        await using var relay = await TestRelay.StartAsync(["one", "two"]);
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync(configure: o =>
        {
            o.MaxConcurrentConnectionsPerEndpoint = 10;
            o.MaxConcurrentConnections = 15;
        });
        await session.ForwardAsync("one", upstream.Uri).DefaultTimeout();
        await session.ForwardAsync("two", upstream.Uri).DefaultTimeout();
        var toOne = await ConnectSilentlyAsync(relay, "one", 14);
        await Eventually.WaitUntilAsync(() => upstream.Open == 10 && relay.Server.Counters.Refused(RefusalReason.AgentRefused) == 4, "one: 10 served, 4 refused by the agent");
        var toTwo = await ConnectSilentlyAsync(relay, "two", 8);
        await Eventually.WaitUntilAsync(() => upstream.Open == 15 && relay.Server.Counters.Refused(RefusalReason.AgentRefused) == 7, "two: 5 more served, 3 refused");
        CloseAll(toOne.Concat(toTwo));

        Assert.Multiple(() =>
        {
            Assert.That(upstream.Accepted, Is.EqualTo(15), "the agent never opened more than its caps");
            Assert.That(relay.Logs.Entries.Any(e => e.Message.Contains("MaxConcurrentConnectionsPerEndpoint", StringComparison.Ordinal)), Is.True, "the first refusal is logged with its limit (later ones in the same second are counted)");
        });
    }
}
