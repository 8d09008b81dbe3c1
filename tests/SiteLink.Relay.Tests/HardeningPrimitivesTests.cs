using System.Net;
using Microsoft.Extensions.Time.Testing;
using SiteLink.Internal;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Security;
using SiteLink.Relay.Sessions;

namespace SiteLink.Relay.Tests;

/// <summary>The small parts the relay's limits are built from, each on a fake clock where time matters.</summary>
[TestFixture]
[Category("Hostile")]
public sealed class HardeningPrimitivesTests
{
    [Test]
    public void LogSampler_LetsOneThroughPerInterval_AndCountsWhatItHeldBack()
    {
        var time = new FakeTimeProvider();
        var sampler = new LogSampler(time, TimeSpan.FromSeconds(10));

        var first = sampler.ShouldLog(out var suppressedFirst);
        var held = Enumerable.Range(0, 500).Count(_ => sampler.ShouldLog(out long _));
        time.Advance(TimeSpan.FromSeconds(9.9));
        var stillHeld = sampler.ShouldLog(out long _);
        time.Advance(TimeSpan.FromSeconds(0.2));
        var next = sampler.ShouldLog(out var suppressedNext);

        Assert.Multiple(() =>
        {
            Assert.That(first, Is.True);
            Assert.That(suppressedFirst, Is.Zero);
            Assert.That(held, Is.Zero, "nothing more is logged within the interval");
            Assert.That(stillHeld, Is.False);
            Assert.That(next, Is.True);
            Assert.That(suppressedNext, Is.EqualTo(501), "the next line says how many were held back");
        });
    }

    [Test]
    [Category("Operator")]
    public void LogSampler_WithASummary_ReportsABurstThatStopped_AtTheEndOfItsInterval_OncePerInterval()
    {
        var time = new FakeTimeProvider();
        var summaries = new List<(long Count, TimeSpan Interval)>();
        var sampler = new LogSampler(time, TimeSpan.FromSeconds(1), (count, interval) => summaries.Add((count, interval)));

        var logged = Enumerable.Range(0, 2000).Count(_ => sampler.ShouldLog(out long _));
        time.Advance(TimeSpan.FromMilliseconds(500));
        var beforeTheEnd = summaries.Count;
        time.Advance(TimeSpan.FromMilliseconds(600));
        var afterTheEnd = summaries.ToList();
        time.Advance(TimeSpan.FromSeconds(5));
        var quietAfterwards = summaries.Count;
        var nextLogged = sampler.ShouldLog(out var heldBeforeNext);

        Assert.Multiple(() =>
        {
            Assert.That(logged, Is.EqualTo(1));
            Assert.That(beforeTheEnd, Is.Zero, "nothing before the interval ends");
            Assert.That(afterTheEnd, Is.EqualTo(new[] { (1999L, TimeSpan.FromSeconds(1)) }), "one summary with the count held back");
            Assert.That(quietAfterwards, Is.EqualTo(1), "no summary when nothing was held back");
            Assert.That(nextLogged, Is.True);
            Assert.That(heldBeforeNext, Is.Zero, "what the summary reported is not reported again");
        });
    }

    [Test]
    [Category("Operator")]
    public void LogSampler_ASummary_DoesNotTakeThePlaceOfTheNextDetailedLine()
    {
        var time = new FakeTimeProvider();
        var summaries = 0;
        var sampler = new LogSampler(time, TimeSpan.FromSeconds(1), (_, _) => summaries++);

        // A trickle: one occurrence every 600 ms.
        var logged = new List<bool>();
        for (var i = 0; i < 10; i++)
        {
            logged.Add(sampler.ShouldLog(out long _));
            time.Advance(TimeSpan.FromMilliseconds(600));
        }

        Assert.Multiple(() =>
        {
            Assert.That(logged, Is.EqualTo(new[] { true, false, true, false, true, false, true, false, true, false }), "every interval still starts with a detailed line");
            Assert.That(summaries, Is.EqualTo(5), "and the one held back in it is summarised at its end");
        });
    }

    [Test]
    [Category("Operator")]
    public async Task LogSampler_UnderConcurrentCallers_AccountsForEveryOccurrence_ExactlyOnce()
    {
        var time = new FakeTimeProvider();
        long summarised = 0, lines = 0, heldInLines = 0;
        var sampler = new LogSampler(time, TimeSpan.FromSeconds(1), (count, _) => Interlocked.Add(ref summarised, count));
        const int threads = 4, perThread = 50_000;
        using var done = new CountdownEvent(threads);
        var callers = Enumerable.Range(0, threads).Select(_ => Task.Run(() =>
        {
            for (var i = 0; i < perThread; i++)
            {
                if (sampler.ShouldLog(out var held))
                {
                    Interlocked.Increment(ref lines);
                    Interlocked.Add(ref heldInLines, held);
                }
            }

            done.Signal();
        })).ToArray();

        // The clock moves (and the summary timer fires) while the callers run.
        while (!done.IsSet)
        {
            time.Advance(TimeSpan.FromMilliseconds(137));
            await Task.Yield();
        }

        await Task.WhenAll(callers).WaitAsync(TimeSpan.FromSeconds(30));
        time.Advance(TimeSpan.FromSeconds(5));

        Assert.Multiple(() =>
        {
            Assert.That(lines + heldInLines + summarised, Is.EqualTo((long)threads * perThread), "every occurrence is in a line or a summary, once");
            Assert.That(lines, Is.GreaterThan(0));
        });
    }

    [Test]
    public void FailureBudget_AllowsItsCapacityAtOnce_ThenRefills_AtATenthPerSecond()
    {
        var time = new FakeTimeProvider();
        var budget = new FailureBudget(100, time);

        var spent = Enumerable.Range(0, 150).Count(_ => budget.TrySpend());
        time.Advance(TimeSpan.FromSeconds(1));
        var afterOneSecond = Enumerable.Range(0, 50).Count(_ => budget.TrySpend());
        time.Advance(TimeSpan.FromHours(1));
        var afterAnHour = Enumerable.Range(0, 500).Count(_ => budget.TrySpend());

        Assert.Multiple(() =>
        {
            Assert.That(spent, Is.EqualTo(100));
            Assert.That(afterOneSecond, Is.EqualTo(10));
            Assert.That(afterAnHour, Is.EqualTo(100), "never more than the capacity, however long it rested");
        });
    }

    [Test]
    public void IdleWatch_FiresOnceAfterTheTimeout_AndEachTouchStartsItAgain()
    {
        var time = new FakeTimeProvider();
        var fired = 0;
        using var watch = new IdleWatch(TimeSpan.FromMinutes(10), time, () => fired++);

        time.Advance(TimeSpan.FromMinutes(6));
        watch.Touch();
        time.Advance(TimeSpan.FromMinutes(6));
        var afterTouch = fired;
        time.Advance(TimeSpan.FromMinutes(4));
        var atTimeout = fired;
        time.Advance(TimeSpan.FromHours(1));

        Assert.Multiple(() =>
        {
            Assert.That(afterTouch, Is.Zero, "12 minutes in, but only 6 since the last byte");
            Assert.That(atTimeout, Is.EqualTo(1));
            Assert.That(fired, Is.EqualTo(1), "once");
            Assert.That(watch.HasFired, Is.True);
        });
    }

    [Test]
    public void IdleWatch_Infinite_NeverFires()
    {
        var time = new FakeTimeProvider();
        var fired = false;
        using var watch = new IdleWatch(Timeout.InfiniteTimeSpan, time, () => fired = true);

        time.Advance(TimeSpan.FromDays(30));

        Assert.That(fired, Is.False);
    }

    [TestCase("acme-demo-token-change-me-0123456789", "placeholder")]
    [TestCase("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "repeats")]
    [TestCase("0123456789012345", "entropy")]
    [TestCase("correcthorsebatt", "entropy")]
    [TestCase("my-Secret-Token-for-prod-2026!!", "placeholder")]
    public void TokenStrength_WeakTokens_AreNamedWithTheReason(string token, string reason)
    {
        Assert.That(TokenStrength.Weakness(token), Does.Contain(reason));
    }

    [TestCase("acme-token-0123456789abcdef")]
    [TestCase("q3Vx9LmT2pRkA7bYz1WcNf")]
    [TestCase("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b")]
    public void TokenStrength_RandomLookingTokens_AreAccepted(string token)
    {
        Assert.That(TokenStrength.Weakness(token), Is.Null);
    }

    [Test]
    public void ClientAddress_CountsIPv6PerSlash64_AndMappedIPv4AsIPv4()
    {
        Assert.Multiple(() =>
        {
            Assert.That(ClientAddress.KeyOf(IPAddress.Parse("2001:db8:1:2:aaaa::1")), Is.EqualTo(ClientAddress.KeyOf(IPAddress.Parse("2001:db8:1:2:bbbb::9"))));
            Assert.That(ClientAddress.KeyOf(IPAddress.Parse("2001:db8:1:2::1")), Is.Not.EqualTo(ClientAddress.KeyOf(IPAddress.Parse("2001:db8:1:3::1"))));
            Assert.That(ClientAddress.KeyOf(IPAddress.Parse("::ffff:192.0.2.7")), Is.EqualTo(IPAddress.Parse("192.0.2.7")));
            Assert.That(ClientAddress.KeyOf(new IPEndPoint(IPAddress.Parse("192.0.2.7"), 5)), Is.EqualTo(IPAddress.Parse("192.0.2.7")));
        });
    }

    [Test]
    public void SafeText_CapsLength_AndReplacesControlAndFormattingCharacters()
    {
        var forged = "ok\r\n[Error] forged line\u001b[31m\u202Eevil";
        var emoji = new string('x', 63) + "😀";

        Assert.Multiple(() =>
        {
            Assert.That(SafeText.Clean(forged), Is.EqualTo("ok??[Error] forged line?[31m?evil"));
            Assert.That(SafeText.Clean(new string('a', 10_000)), Has.Length.EqualTo(SafeText.MaxMessageLength + 1).And.EndsWith("…"));
            Assert.That(SafeText.Clean(emoji, 64), Is.EqualTo(new string('x', 63) + "…"), "a surrogate pair is never split");
            Assert.That(SafeText.Clean(null), Is.Empty);
            Assert.That(SafeText.Clean("plain"), Is.SameAs("plain").Or.EqualTo("plain"));
        });
    }
}
