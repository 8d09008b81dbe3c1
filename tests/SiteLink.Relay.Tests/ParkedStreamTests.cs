using System.Net.Sockets;
using SiteLink.Relay.Security;
using SiteLink.Relay.Sessions;

namespace SiteLink.Relay.Tests;

[TestFixture]
internal sealed class ParkedStreamTests
{
    private static AgentSession Session() => new("s1", new TokenIdentity("t", "tenant", new EndpointAcl(["*"])), "c", "p", "1");

    private static PendingStream Pending(AgentSession session) =>
        new("stream", session, "b1", new PublicConnection(new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp), new() { Name = "public-db", Endpoint = "db" }));

    [Test]
    public async Task TryPair_GivesTheConnectionToTheWaitingStream_Once()
    {
        var parked = new ParkedStream();
        var session = Session();
        var pending = Pending(session);

        var first = parked.TryPair(pending);
        var second = parked.TryPair(Pending(session));

        Assert.Multiple(async () =>
        {
            Assert.That(first, Is.True);
            Assert.That(second, Is.False);
            Assert.That(await parked.Pairing.WaitAsync(TimeSpan.FromSeconds(5)), Is.SameAs(pending));
            Assert.That(parked.TryEnd(), Is.False, "a paired stream cannot end unpaired: its connection must be handled");
        });
        await Task.CompletedTask;
    }

    [Test]
    public void EndedOrReleasedStream_IsNeverPaired()
    {
        var ended = new ParkedStream();
        var released = new ParkedStream();

        var endedFirst = ended.TryEnd();
        released.Release();

        Assert.Multiple(() =>
        {
            Assert.That(endedFirst, Is.True);
            Assert.That(ended.TryPair(Pending(Session())), Is.False);
            Assert.That(released.TryPair(Pending(Session())), Is.False);
            Assert.That(released.Pairing.Result, Is.Null);
        });
    }

    [Test]
    public void Session_ParksUpToItsLimit_PairsInOrder_SkipsEndedOnes_AndReleasesTheRestOnGoodbye()
    {
        var session = Session();
        var a = session.TryPark(3);
        var b = session.TryPark(3);
        var c = session.TryPark(3);
        var overLimit = session.TryPark(3);
        a!.TryEnd();

        var paired = session.TryPairParked(Pending(session));
        session.MarkLeaving();

        Assert.Multiple(() =>
        {
            Assert.That(overLimit, Is.Null);
            Assert.That(paired, Is.True);
            Assert.That(b!.Pairing.IsCompletedSuccessfully && b.Pairing.Result is not null, Is.True, "the ended stream was skipped");
            Assert.That(c!.Pairing.Result, Is.Null, "released on goodbye");
            Assert.That(session.TryPark(3), Is.Null, "a leaving session parks nothing");
            Assert.That(session.TryPairParked(Pending(session)), Is.False);
        });
    }
}
