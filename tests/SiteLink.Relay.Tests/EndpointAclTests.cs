using SiteLink.Relay.Security;

namespace SiteLink.Relay.Tests;

[TestFixture]
public sealed class EndpointAclTests
{
    [TestCase("*", "anything", true)]
    [TestCase("db-*", "db-main", true)]
    [TestCase("db-*", "db-", true)]
    [TestCase("db-*", "api", false)]
    [TestCase("db-*", "xdb-main", false)]
    [TestCase("*-prod", "billing-prod", true)]
    [TestCase("*-prod", "billing-prod2", false)]
    [TestCase("api-?", "api-1", true)]
    [TestCase("api-?", "api-12", false)]
    [TestCase("a*b*c", "axxbyyc", true)]
    [TestCase("a*b*c", "axxbyy", false)]
    [TestCase("exact", "exact", true)]
    [TestCase("exact", "exactly", false)]
    [TestCase("DB-*", "db-Main", true)]
    public void Allows_MatchesWildcardsIgnoringCase(string pattern, string name, bool expected)
    {
        Assert.That(new EndpointAcl([pattern]).Allows(name), Is.EqualTo(expected));
    }

    [Test]
    public void Allows_AnyOfSeveralPatterns()
    {
        var acl = new EndpointAcl(["db-*", "api"]);

        Assert.Multiple(() =>
        {
            Assert.That(acl.Allows("db-x"), Is.True);
            Assert.That(acl.Allows("api"), Is.True);
            Assert.That(acl.Allows("admin"), Is.False);
        });
    }

    [Test]
    public void Allows_PathologicalPattern_StaysFast()
    {
        var acl = new EndpointAcl([string.Concat(Enumerable.Repeat("*a", 30)) + "b"]);
        var name = new string('a', 63);
        var watch = System.Diagnostics.Stopwatch.StartNew();

        var allowed = acl.Allows(name);

        Assert.Multiple(() =>
        {
            Assert.That(allowed, Is.False);
            Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(1)), "no exponential backtracking");
        });
    }

    [TestCase("db", true)]
    [TestCase("db-main.eu_1", true)]
    [TestCase("9lives", true)]
    [TestCase("", false)]
    [TestCase("-db", false)]
    [TestCase("db main", false)]
    [TestCase("db/main", false)]
    [TestCase("db*", false)]
    public void IsValidName(string name, bool expected)
    {
        Assert.That(EndpointAcl.IsValidName(name), Is.EqualTo(expected));
    }

    [Test]
    public void IsValidName_LongerThan63_IsInvalid()
    {
        Assert.Multiple(() =>
        {
            Assert.That(EndpointAcl.IsValidName(new string('a', 63)), Is.True);
            Assert.That(EndpointAcl.IsValidName(new string('a', 64)), Is.False);
        });
    }
}
