using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using SiteLink.Protocol.V1;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Security;
using SiteLink.Relay.Sessions;

namespace SiteLink.Relay.Tests;

[TestFixture]
internal sealed class ConnectionRouterTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(10);
    private readonly List<Socket> _sockets = [];
    private Socket _listener = null!;

    [SetUp]
    public void StartListener()
    {
        _listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(16);
    }

    [TearDown]
    public void Cleanup()
    {
        foreach (var socket in _sockets)
        {
            socket.Dispose();
        }

        _listener.Dispose();
    }

    /// <summary>A connected pair on loopback: the relay's accepted socket and the client's.</summary>
    private async Task<(Socket Accepted, Socket Client)> ConnectPairAsync()
    {
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(_listener.LocalEndPoint!).WaitAsync(Limit);
        var accepted = await _listener.AcceptAsync().WaitAsync(Limit);
        _sockets.Add(client);
        _sockets.Add(accepted);
        return (accepted, client);
    }

    private static async Task<bool> IsClosedAsync(Socket client)
    {
        try
        {
            return await client.ReceiveAsync(new byte[1], SocketFlags.None).WaitAsync(Limit) == 0;
        }
        catch (SocketException)
        {
            return true;
        }
    }

    private static (ConnectionRouter Router, SessionRegistry Registry, RelayCounters Counters, FakeTimeProvider Time, AgentSession Session, CloudEndpointOptions Endpoint) Create()
    {
        var options = new RelayOptions();
        options.Limits.PendingStreamTimeout = TimeSpan.FromSeconds(10);
        options.Limits.MaxPendingStreamsPerSession = 2;
        var registry = new SessionRegistry(options);
        var counters = new RelayCounters();
        var time = new FakeTimeProvider();
        var router = new ConnectionRouter(registry, options, counters, time, NullLogger<ConnectionRouter>.Instance);
        var session = new AgentSession("s1", new TokenIdentity("acme", "acme", new EndpointAcl(["*"])), "c", "p", "1");
        registry.TryAdd(session);
        registry.Bind(session, new Bind { BindId = "b1", Name = "db", Kind = EndpointKind.Tcp });
        var endpoint = new CloudEndpointOptions { Name = "public-db", Tenant = "acme", Endpoint = "db", Listen = "127.0.0.1:0" };
        return (router, registry, counters, time, session, endpoint);
    }

    [Test]
    public async Task Offer_SendsOpenStreamToTheServingSession()
    {
        var (router, _, _, _, session, endpoint) = Create();
        var (accepted, client) = await ConnectPairAsync();

        router.Offer(new PublicConnection(accepted, endpoint));

        Assert.That(session.Outgoing.TryRead(out var message), Is.True);
        Assert.Multiple(() =>
        {
            Assert.That(message!.OpenStream.BindId, Is.EqualTo("b1"));
            Assert.That(message.OpenStream.EndpointName, Is.EqualTo("db"));
            Assert.That(message.OpenStream.ClientAddress, Is.EqualTo(client.LocalEndPoint!.ToString()));
            Assert.That(message.OpenStream.StreamId, Has.Length.GreaterThanOrEqualTo(20), "stream ids are long random values");
            Assert.That(session.Pending, Has.Count.EqualTo(1));
        });
    }

    [Test]
    public async Task Offer_NotOpenedBeforeTimeout_ClosesClient_OnlyAfterTheTimeout()
    {
        var (router, _, counters, time, session, endpoint) = Create();
        var (accepted, client) = await ConnectPairAsync();
        router.Offer(new PublicConnection(accepted, endpoint));

        time.Advance(TimeSpan.FromSeconds(9.9));
        var pendingBefore = session.Pending.Count;
        time.Advance(TimeSpan.FromSeconds(0.2));

        Assert.Multiple(async () =>
        {
            Assert.That(pendingBefore, Is.EqualTo(1));
            Assert.That(await IsClosedAsync(client), Is.True);
            Assert.That(session.Pending, Is.Empty);
            Assert.That(counters.Refused(RefusalReason.PairingTimeout), Is.EqualTo(1));
        });
    }

    [Test]
    public async Task Claim_IsSingleUse_AndCancelsTheExpiry()
    {
        var (router, _, counters, time, session, endpoint) = Create();
        var (accepted, _) = await ConnectPairAsync();
        router.Offer(new PublicConnection(accepted, endpoint));
        session.Outgoing.TryRead(out var message);
        var id = message!.OpenStream.StreamId;

        var first = router.Claim(session, id);
        var second = router.Claim(session, id);
        time.Advance(TimeSpan.FromMinutes(1));

        Assert.Multiple(() =>
        {
            Assert.That(first, Is.Not.Null);
            Assert.That(second, Is.Null);
            Assert.That(counters.UnknownStreamRequests, Is.EqualTo(1));
            Assert.That(counters.Refused(RefusalReason.PairingTimeout), Is.Zero, "a claimed stream never expires");
            Assert.That(((SocketTransport)first!.Client.Transport).Socket.Connected, Is.True);
        });
    }

    [Test]
    public async Task Offer_PendingLimitReached_RefusesAtOnce()
    {
        var (router, _, counters, _, session, endpoint) = Create();
        for (var i = 0; i < 2; i++)
        {
            router.Offer(new PublicConnection((await ConnectPairAsync()).Accepted, endpoint));
        }

        var (accepted, client) = await ConnectPairAsync();
        router.Offer(new PublicConnection(accepted, endpoint));

        Assert.Multiple(async () =>
        {
            Assert.That(await IsClosedAsync(client), Is.True);
            Assert.That(counters.Refused(RefusalReason.StreamLimit), Is.EqualTo(1));
            Assert.That(session.Pending, Has.Count.EqualTo(2));
        });
    }

    [Test]
    public async Task AgentRefusal_And_SessionEnd_CloseTheirOffers()
    {
        var (router, registry, counters, _, session, endpoint) = Create();
        var (refusedSocket, refusedClient) = await ConnectPairAsync();
        var (orphanSocket, orphanClient) = await ConnectPairAsync();
        router.Offer(new PublicConnection(refusedSocket, endpoint));
        router.Offer(new PublicConnection(orphanSocket, endpoint));
        session.Outgoing.TryRead(out var first);

        router.OnRefusedByAgent(session, new StreamRefused { StreamId = first!.OpenStream.StreamId, Reason = StreamRefusal.UpstreamUnavailable });
        router.OnSessionEnded(registry.Remove(session).Offers);

        Assert.Multiple(async () =>
        {
            Assert.That(await IsClosedAsync(refusedClient), Is.True);
            Assert.That(await IsClosedAsync(orphanClient), Is.True);
            Assert.That(counters.Refused(RefusalReason.AgentRefused), Is.EqualTo(1));
            Assert.That(counters.Refused(RefusalReason.SessionEnded), Is.EqualTo(1));
        });
    }

    [Test]
    public async Task Offer_NoAgent_ClosesAtOnce()
    {
        var (router, _, counters, _, _, _) = Create();
        var (accepted, client) = await ConnectPairAsync();

        router.Offer(new PublicConnection(accepted, new CloudEndpointOptions { Name = "x", Tenant = "acme", Endpoint = "unbound" }));

        Assert.Multiple(async () =>
        {
            Assert.That(await IsClosedAsync(client), Is.True);
            Assert.That(counters.Refused(RefusalReason.NoAgent), Is.EqualTo(1));
        });
    }
}
