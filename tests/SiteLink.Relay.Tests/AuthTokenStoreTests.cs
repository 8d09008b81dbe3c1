using SiteLink.Relay.Configuration;
using SiteLink.Relay.Security;

namespace SiteLink.Relay.Tests;

[TestFixture]
public sealed class AuthTokenStoreTests
{
    private const string Secret = "plain-secret-0123456789";
    private const string HashedSecret = "hashed-secret-0123456789";

    private static AuthTokenStore Create()
    {
        var plain = new AuthTokenOptions { Name = "plain", Token = Secret, Tenant = "Acme" };
        plain.Allow.Add("db-*");
        var hashed = new AuthTokenOptions { Name = "hashed", Sha256 = AuthTokenStore.HashToHex(HashedSecret).ToLowerInvariant(), Tenant = "globex" };
        hashed.Allow.Add("*");
        return new AuthTokenStore([plain, hashed]);
    }

    [Test]
    public void Authenticate_PlainAndHashedTokens_ResolveToTheirIdentity()
    {
        var store = Create();

        var plain = store.Authenticate("Bearer " + Secret, out _);
        var hashed = store.Authenticate("bearer " + HashedSecret, out _);

        Assert.Multiple(() =>
        {
            Assert.That(plain!.Name, Is.EqualTo("plain"));
            Assert.That(plain.Tenant, Is.EqualTo("acme"), "tenants compare without case");
            Assert.That(plain.Acl.Allows("db-main"), Is.True);
            Assert.That(plain.Acl.Allows("api"), Is.False);
            Assert.That(hashed!.Name, Is.EqualTo("hashed"));
        });
    }

    [TestCase(null, "no authtoken")]
    [TestCase("", "no authtoken")]
    [TestCase("Basic abc", "not a Bearer token")]
    [TestCase("Bearer ", "not a Bearer token")]
    [TestCase("Bearer wrong-secret", "not valid")]
    public void Authenticate_BadHeader_RefusedWithReasonThatNeverQuotesIt(string? header, string reason)
    {
        var identity = Create().Authenticate(header, out var failure);

        Assert.Multiple(() =>
        {
            Assert.That(identity, Is.Null);
            Assert.That(failure, Does.Contain(reason));
            Assert.That(failure, Does.Not.Contain("wrong-secret"));
        });
    }

    [Test]
    public void Revoke_RefusesTheTokenFromThenOn()
    {
        var store = Create();
        store.Revoke("plain");

        var identity = store.Authenticate("Bearer " + Secret, out var failure);

        Assert.Multiple(() =>
        {
            Assert.That(identity, Is.Null);
            Assert.That(failure, Does.Contain("revoked"));
            Assert.That(store.Authenticate("Bearer " + HashedSecret, out _), Is.Not.Null);
        });
    }
}
