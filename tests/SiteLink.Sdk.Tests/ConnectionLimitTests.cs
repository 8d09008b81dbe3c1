using SiteLink.Resilience;

namespace SiteLink.Sdk.Tests;

[TestFixture]
[Category("Hostile")]
public sealed class ConnectionLimitTests
{
    [Test]
    public void Slot_TakesAPlaceInBothLimits_AndGivesItBackOnce()
    {
        var session = new ConnectionLimit(3);
        var endpoint = new ConnectionLimit(2);

        var first = ConnectionSlot.TryTake(session, endpoint, out _);
        var second = ConnectionSlot.TryTake(session, endpoint, out _);
        var third = ConnectionSlot.TryTake(session, endpoint, out var full);
        first!.Release();
        first.Release();
        var afterRelease = ConnectionSlot.TryTake(session, endpoint, out _);

        Assert.Multiple(() =>
        {
            Assert.That(second, Is.Not.Null);
            Assert.That(third, Is.Null);
            Assert.That(full, Is.SameAs(endpoint), "the endpoint's limit was the one reached");
            Assert.That(session.Count, Is.EqualTo(2), "a refused slot holds nothing in the session's limit");
            Assert.That(afterRelease, Is.Not.Null, "a double release gives the place back only once");
            Assert.That(endpoint.Count, Is.EqualTo(2));
        });
    }

    [Test]
    public void Slot_SessionLimitReached_NamesTheSession()
    {
        var session = new ConnectionLimit(1);
        var one = new ConnectionLimit(10);
        var two = new ConnectionLimit(10);

        ConnectionSlot.TryTake(session, one, out _);
        var refused = ConnectionSlot.TryTake(session, two, out var full);

        Assert.Multiple(() =>
        {
            Assert.That(refused, Is.Null);
            Assert.That(full, Is.SameAs(session));
            Assert.That(two.Count, Is.Zero);
        });
    }
}
