using SiteLink.Protocol;

namespace SiteLink.Sdk.Tests;

[TestFixture]
public sealed class ParkingPolicyTests
{
    [TestCase(32, new[] { 2, 4, 8, 16, 32, 32 })]
    [TestCase(20, new[] { 2, 4, 8, 16, 20, 20 })]
    [TestCase(8, new[] { 2, 4, 8, 8 })]
    [TestCase(3, new[] { 2, 3, 3 })]
    [TestCase(1, new[] { 1, 1 })]
    [TestCase(0, new[] { 0, 0 })]
    public void Target_StartsSmall_AndDoublesPerMissUpToTheLimit(int limit, int[] targets)
    {
        var policy = new ParkingPolicy(limit);
        var seen = new List<int>();
        foreach (var _ in targets)
        {
            seen.Add(policy.Target);
            policy.Grow();
        }

        Assert.That(seen, Is.EqualTo(targets));
    }

    [Test]
    public void Grow_FromManyThreads_NeverPassesTheLimit()
    {
        var policy = new ParkingPolicy(200);
        Parallel.For(0, 1000, _ => policy.Grow());

        Assert.That(policy.Target, Is.EqualTo(200));
    }
}
