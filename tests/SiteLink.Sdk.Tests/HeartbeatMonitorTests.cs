using Microsoft.Extensions.Time.Testing;
using SiteLink.Resilience;

namespace SiteLink.Sdk.Tests;

[TestFixture]
public sealed class HeartbeatMonitorTests
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan Tolerance = TimeSpan.FromSeconds(15);

    private FakeTimeProvider _time = null!;
    private List<(ulong Sequence, DateTimeOffset At)> _sent = null!;
    private List<TimeSpan> _deaths = null!;
    private HeartbeatMonitor _monitor = null!;

    [SetUp]
    public void Start()
    {
        _time = new FakeTimeProvider(DateTimeOffset.Parse("2026-11-26T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        _sent = [];
        _deaths = [];
        _monitor = new HeartbeatMonitor(Interval, Tolerance, _time, seq =>
        {
            _sent.Add((seq, _time.GetUtcNow()));
            return true;
        }, silence => _deaths.Add(silence));
        _monitor.Start();
    }

    [TearDown]
    public void Stop() => _monitor.Dispose();

    /// <summary>
    /// Moves the clock forward in 1 ms steps, as real time would: FakeTimeProvider.Advance jumps straight to the end,
    /// so a timer set from inside a callback would otherwise be scheduled from the end time.
    /// </summary>
    private void Elapse(TimeSpan duration)
    {
        for (var elapsed = TimeSpan.Zero; elapsed < duration; elapsed += TimeSpan.FromMilliseconds(1))
        {
            _time.Advance(TimeSpan.FromMilliseconds(1));
        }
    }

    [Test]
    public void Sends_EveryInterval_NotBefore()
    {
        Elapse(Interval - TimeSpan.FromMilliseconds(1));
        var beforeFirst = _sent.Count;
        Elapse(TimeSpan.FromMilliseconds(1));
        _monitor.OnMessageReceived();
        Elapse(Interval);
        _monitor.OnMessageReceived();
        Elapse(Interval);

        Assert.Multiple(() =>
        {
            Assert.That(beforeFirst, Is.Zero);
            Assert.That(_sent.Select(s => s.Sequence), Is.EqualTo(new ulong[] { 1, 2, 3 }));
            Assert.That(_sent[1].At - _sent[0].At, Is.EqualTo(Interval));
        });
    }

    [Test]
    public void Silence_DeclaredDeadExactlyAtToleranceAfterTheFirstUnansweredSend()
    {
        Elapse(Interval);
        Elapse(Tolerance - TimeSpan.FromMilliseconds(1));
        var aliveJustBefore = _deaths.Count == 0;
        Elapse(TimeSpan.FromMilliseconds(1));

        Assert.Multiple(() =>
        {
            Assert.That(aliveJustBefore, Is.True);
            Assert.That(_deaths, Is.EqualTo(new[] { Tolerance }));
        });
    }

    [Test]
    public void AnyMessageBeforeTheDeadline_KeepsTheConnectionAlive()
    {
        // Every heartbeat (at 10 s, 20 s, ...) is answered 14.9 s after the previous answer: always inside the tolerance.
        for (var i = 0; i < 10; i++)
        {
            Elapse(TimeSpan.FromSeconds(14.9));
            _monitor.OnMessageReceived();
        }

        Assert.Multiple(() =>
        {
            Assert.That(_deaths, Is.Empty);
            Assert.That(_sent, Has.Count.GreaterThanOrEqualTo(14));
        });
    }

    [Test]
    public void LaterSendsDoNotPostponeTheDeadline()
    {
        // Sends at 10 s and 20 s go unanswered: death is due 15 s after the first, at 25 s, not 35 s.
        Elapse(TimeSpan.FromSeconds(24.999));
        var sentBeforeDeath = _sent.Count;
        var aliveAt25Minus = _deaths.Count == 0;
        Elapse(TimeSpan.FromMilliseconds(1));

        Assert.Multiple(() =>
        {
            Assert.That(sentBeforeDeath, Is.EqualTo(2));
            Assert.That(aliveAt25Minus, Is.True);
            Assert.That(_deaths, Has.Count.EqualTo(1));
        });
    }

    [Test]
    public void DeclaredDeadOnlyOnce_AndStopsSending()
    {
        Elapse(Interval + Tolerance);
        var sentAtDeath = _sent.Count;
        Elapse(TimeSpan.FromMinutes(5));

        Assert.Multiple(() =>
        {
            Assert.That(_deaths, Has.Count.EqualTo(1));
            Assert.That(_sent, Has.Count.EqualTo(sentAtDeath));
        });
    }

    [Test]
    public void Ack_RecordsTheRoundTripOfTheLatestHeartbeat_IgnoresStaleOnes()
    {
        Elapse(Interval);
        Elapse(TimeSpan.FromMilliseconds(42));
        _monitor.OnMessageReceived();
        _monitor.OnAck(1);
        var first = _monitor.LastRoundTrip;
        Elapse(Interval - TimeSpan.FromMilliseconds(42));
        Elapse(TimeSpan.FromMilliseconds(7));
        _monitor.OnAck(1);
        var afterStale = _monitor.LastRoundTrip;
        _monitor.OnAck(2);

        Assert.Multiple(() =>
        {
            Assert.That(first, Is.EqualTo(TimeSpan.FromMilliseconds(42)));
            Assert.That(afterStale, Is.EqualTo(TimeSpan.FromMilliseconds(42)), "an ack for an older heartbeat says nothing about now");
            Assert.That(_monitor.LastRoundTrip, Is.EqualTo(TimeSpan.FromMilliseconds(7)));
        });
    }

    [Test]
    public void NoRoundTripBeforeTheFirstAck()
    {
        Assert.That(_monitor.LastRoundTrip, Is.Null);
    }

    [Test]
    public void Disposed_NeverCallsBack()
    {
        _monitor.Dispose();
        Elapse(TimeSpan.FromMinutes(10));

        Assert.Multiple(() =>
        {
            Assert.That(_sent, Is.Empty);
            Assert.That(_deaths, Is.Empty);
        });
    }
}
