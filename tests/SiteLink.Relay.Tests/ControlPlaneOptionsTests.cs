using SiteLink.Relay.Configuration;

namespace SiteLink.Relay.Tests;

/// <summary>The admin API's and the store's settings, checked with every problem named and no secret quoted.</summary>
[TestFixture]
[Category("AdminApi")]
public sealed class ControlPlaneOptionsTests
{
    private const string GoodKey = "admin-key-0123456789abcdefghijklmnopqrstuv";

    private static RelayOptions WithAdmin(Action<RelayOptions>? change = null)
    {
        var options = RelayOptionsValidatorTests.Valid();
        options.Admin.Listen = "127.0.0.1:0";
        options.Admin.Keys.Add(new AdminKeyOptions { Name = "ops", Key = GoodKey, Scope = "full" });
        change?.Invoke(options);
        return options;
    }

    [Test]
    public void AnAdminApiWithAKey_IsValid_AndARelayWithOne_MayStartWithoutAConfiguredToken()
    {
        Assert.That(RelayOptionsValidator.Validate(WithAdmin()), Is.Empty);
        Assert.That(RelayOptionsValidator.Validate(WithAdmin(o => o.Tokens.Clear())), Is.Empty);
        var plain = RelayOptionsValidatorTests.Valid();
        plain.Tokens.Clear();
        Assert.That(RelayOptionsValidator.Validate(plain), Has.Some.Contains("Relay:Tokens is empty"), "without a control plane nobody could connect");
    }

    [TestCase("not-an-address", "Relay:Admin:Listen")]
    [TestCase("127.0.0.1", "Relay:Admin:Listen")]
    public void AListenThatIsNotAnAddress_IsRefused(string listen, string expected) =>
        Assert.That(RelayOptionsValidator.Validate(WithAdmin(o => o.Admin.Listen = listen)), Has.Some.StartsWith(expected));

    [Test]
    public void PlainHttp_IsAllowedOnLoopbackOnly()
    {
        Assert.That(RelayOptionsValidator.Validate(WithAdmin(o => o.Admin.DisableTls = true)), Is.Empty);
        Assert.That(RelayOptionsValidator.Validate(WithAdmin(o =>
        {
            o.Admin.Listen = "0.0.0.0:8444";
            o.Admin.DisableTls = true;
        })), Has.Some.Contains("loopback only"));
    }

    [Test]
    public void Keys_AreCheckedOneByOne_WithoutQuotingASecret()
    {
        var errors = RelayOptionsValidator.Validate(WithAdmin(o =>
        {
            o.Admin.Keys.Add(new AdminKeyOptions { Name = "short", Key = "too-short-secret", Scope = "full" });
            o.Admin.Keys.Add(new AdminKeyOptions { Name = "both", Key = GoodKey + "x", Sha256 = new string('a', 64) });
            o.Admin.Keys.Add(new AdminKeyOptions { Name = "ops", Sha256 = new string('b', 64), Scope = "root" });
            o.Admin.Keys.Add(new AdminKeyOptions { Name = "Bad Name!", Sha256 = "not-hex", Scope = "read" });
        }));
        Assert.Multiple(() =>
        {
            Assert.That(errors, Has.Some.Contains("Keys:1:Key is too short"));
            Assert.That(errors, Has.Some.Contains("Keys:2: needs exactly one of Key or Sha256"));
            Assert.That(errors, Has.Some.Contains("Keys:3:Name 'ops' is used by another key"));
            Assert.That(errors, Has.Some.Contains("Keys:3:Scope must be 'read' or 'full'"));
            Assert.That(errors, Has.Some.Contains("Keys:4:Name must be"));
            Assert.That(errors, Has.Some.Contains("Keys:4:Sha256 must be 64 hexadecimal digits"));
            Assert.That(string.Join(" ", errors), Does.Not.Contain("too-short-secret").And.Not.Contain(GoodKey));
        });
    }

    [Test]
    public void AnAdminApiNobodyCanCall_IsRefused() =>
        Assert.That(RelayOptionsValidator.Validate(WithAdmin(o => o.Admin.Keys.Clear())), Has.Some.Contains("nothing can call the admin API"));

    [Test]
    public void TheStore_NeedsAKnownProviderAConnectionStringForPostgresAndASanePollInterval()
    {
        Assert.That(RelayOptionsValidator.Validate(WithAdmin(o => o.Store.Provider = "mysql")), Has.Some.Contains("must be 'sqlite' or 'postgres'"));
        Assert.That(RelayOptionsValidator.Validate(WithAdmin(o => o.Store.Provider = "postgres")), Has.Some.Contains("ConnectionString is required"));
        Assert.That(RelayOptionsValidator.Validate(WithAdmin(o => o.Store.PollInterval = TimeSpan.FromMilliseconds(1))), Has.Some.Contains("PollInterval"));
        Assert.That(RelayOptionsValidator.Validate(WithAdmin(o => o.Store.PollInterval = TimeSpan.FromHours(1))), Has.Some.Contains("PollInterval"));
    }

    [Test]
    public void TheCopyKeptForTheRelaysLifetime_HoldsKeyHashesOnly()
    {
        var copy = WithAdmin().WithoutSecrets();
        Assert.That(copy.Admin.Keys.Single().Key, Is.Null);
        Assert.That(copy.Admin.Keys.Single().Sha256, Is.EqualTo(Security.AuthTokenStore.HashToHex(GoodKey)));
        Assert.That(copy.Admin.Listen, Is.EqualTo("127.0.0.1:0"));
    }
}
