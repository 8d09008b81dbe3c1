using SiteLink.Standalone;

namespace SiteLink.Relay.Tests;

/// <summary>When the standalone relay and agent give memory back after a burst: never while busy, once when quiet.</summary>
[TestFixture]
[Category("Operator")]
public sealed class MemoryTrimPolicyTests
{
    private const long Frequency = TimeSpan.TicksPerSecond;
    private const long MiB = 1024 * 1024;

    private static long At(double seconds) => (long)(seconds * Frequency);

    [Test]
    public void ABusyProcess_WhoseGcRunsEveryTick_IsNeverInterrupted()
    {
        var policy = new MemoryTrimPolicy(At(0), 0, Frequency);

        var collections = Enumerable.Range(1, 100).Count(tick => policy.ShouldCollect(At(tick * 5), tick, 900 * MiB));

        Assert.That(collections, Is.Zero);
    }

    [Test]
    public void AfterABurst_OneCollection_OnceTheGcHasBeenQuietLongEnough_ThenNothingUntilItRunsAgain()
    {
        var policy = new MemoryTrimPolicy(At(0), 0, Frequency);

        var duringBurst = policy.ShouldCollect(At(5), 40, 500 * MiB);
        var quietFiveSeconds = policy.ShouldCollect(At(10), 40, 500 * MiB);
        var quietTenSeconds = policy.ShouldCollect(At(15), 40, 500 * MiB);
        policy.Collected(41, 20 * MiB);
        var later = Enumerable.Range(4, 20).Count(tick => policy.ShouldCollect(At(tick * 5), 41, 500 * MiB));

        Assert.Multiple(() =>
        {
            Assert.That(duringBurst, Is.False, "the GC just ran: wait for quiet");
            Assert.That(quietFiveSeconds, Is.False, "not quiet long enough");
            Assert.That(quietTenSeconds, Is.True, "quiet for 10 s after activity: collect once");
            Assert.That(later, Is.Zero, "nothing more until the GC runs again of its own accord");
        });
    }

    [Test]
    public void ASmallGrowth_SinceTheLastTrim_IsNotWorthACollection()
    {
        var policy = new MemoryTrimPolicy(At(0), 0, Frequency);
        policy.Collected(0, 100 * MiB);

        policy.ShouldCollect(At(5), 3, 150 * MiB);
        var small = policy.ShouldCollect(At(15), 3, 150 * MiB);
        policy.ShouldCollect(At(20), 9, 200 * MiB);
        var large = policy.ShouldCollect(At(30), 9, 200 * MiB);

        Assert.Multiple(() =>
        {
            Assert.That(small, Is.False, "50 MiB above what the last trim left");
            Assert.That(large, Is.True, "100 MiB above it");
        });
    }
}
