using System.Runtime.Versioning;
using System.Security.Cryptography.X509Certificates;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Hosting;
using SiteLink.Relay.Security;

namespace SiteLink.Relay.Tests;

/// <summary>Safe defaults: loopback unless told otherwise, real certificates and strong tokens on the network, secrets not kept.</summary>
[TestFixture]
[Category("Hostile")]
public sealed class SafeDefaultsTests
{
    private string _directory = null!;

    [SetUp]
    public void CreateDirectory() => _directory = Directory.CreateTempSubdirectory("sitelink-relay-tests-").FullName;

    [TearDown]
    public void DeleteDirectory() => Directory.Delete(_directory, recursive: true);

    private static RelayOptions Options(string listen, string token = "q3Vx9LmT2pRkA7bYz1WcNf")
    {
        var options = new RelayOptions { AgentListen = listen };
        var entry = new AuthTokenOptions { Name = "acme", Token = token, Tenant = "acme" };
        entry.Allow.Add("*");
        options.Tokens.Add(entry);
        return options;
    }

    [Test]
    public void AgentPort_DefaultsToLoopback()
    {
        Assert.That(new RelayOptions().AgentListen, Is.EqualTo("127.0.0.1:8443"));
    }

    [Test]
    public void DevelopmentCertificate_OnANetworkAddress_IsRefused_UnlessAllowedExplicitly()
    {
        var refused = RelayOptionsValidator.Validate(Options("0.0.0.0:443"));
        var allowed = Options("0.0.0.0:443");
        allowed.Tls.AllowDevelopmentCertificateOnNetwork = true;

        Assert.Multiple(() =>
        {
            Assert.That(refused, Has.One.Contains("no certificate is configured").And.Contains("AllowDevelopmentCertificateOnNetwork"));
            Assert.That(RelayOptionsValidator.Validate(allowed), Is.Empty);
            Assert.That(RelayOptionsValidator.Validate(Options("127.0.0.1:8443")), Is.Empty, "loopback needs no certificate");
            Assert.That(RelayOptionsValidator.Validate(Options("[::1]:8443")), Is.Empty);
        });
    }

    [Test]
    public void PlainHttp2_OnANetworkAddress_IsRefused_UnlessAllowedExplicitly()
    {
        var refused = Options("0.0.0.0:8443");
        refused.Tls.Disabled = true;
        var allowed = Options("0.0.0.0:8443");
        allowed.Tls.Disabled = true;
        allowed.Tls.AllowPlaintextOnNetwork = true;
        var loopback = Options("127.0.0.1:8443");
        loopback.Tls.Disabled = true;

        Assert.Multiple(() =>
        {
            Assert.That(RelayOptionsValidator.Validate(refused), Has.One.Contains("clear text").And.Contains("AllowPlaintextOnNetwork"));
            Assert.That(RelayOptionsValidator.Validate(allowed), Is.Empty);
            Assert.That(RelayOptionsValidator.Validate(loopback), Is.Empty);
        });
    }

    [Test]
    public void WeakToken_IsRefusedOnTheNetwork_WithoutQuotingIt_AndOnlyWarnedAboutOnLoopback()
    {
        const string Sample = "acme-demo-token-change-me-0123456789";
        var network = Options("0.0.0.0:443", Sample);
        network.Tls.AllowDevelopmentCertificateOnNetwork = true;

        var errors = RelayOptionsValidator.Validate(network);

        Assert.Multiple(() =>
        {
            Assert.That(errors, Has.One.Contains("Token of token 'acme' is weak").And.Contains("placeholder"));
            Assert.That(string.Join("\n", errors), Does.Not.Contain(Sample), "a secret is never quoted");
            Assert.That(RelayOptionsValidator.Validate(Options("127.0.0.1:8443", Sample)), Is.Empty);
            Assert.That(RelayOptionsValidator.WeakTokens(Options("127.0.0.1:8443", Sample).Tokens).Single().Name, Is.EqualTo("acme"));
        });
    }

    [Test]
    public void WithoutSecrets_KeepsOnlyTheTokensHashes_AndNoCertificatePassword()
    {
        var options = Options("127.0.0.1:0");
        options.Tls.CertificatePassword = "pfx-password";

        var kept = options.WithoutSecrets();

        Assert.Multiple(() =>
        {
            Assert.That(kept.Tokens.Single().Token, Is.Null);
            Assert.That(kept.Tokens.Single().Sha256, Is.EqualTo(AuthTokenStore.HashToHex("q3Vx9LmT2pRkA7bYz1WcNf")));
            Assert.That(kept.Tls.CertificatePassword, Is.Null);
            Assert.That(options.Tokens.Single().Token, Is.Not.Null, "the caller's options are not changed");
            Assert.That(RelayOptionsValidator.Validate(kept), Is.Empty);
        });
    }

    [Test]
    public void Limits_NewLimitsAreValidated()
    {
        var options = Options("127.0.0.1:0");
        options.Limits.MaxControlQueueBytes = 10;
        options.Limits.MaxAgentConnectionsPerIp = 0;
        options.Limits.PreAuthenticationTimeout = TimeSpan.Zero;
        options.Limits.MaxConcurrentStreamsPerSession = 200_000;
        options.CloudEndpoints.Add(new CloudEndpointOptions { Name = "db", Listen = "127.0.0.1:0", Tenant = "acme", Endpoint = "db", MaxConnectionsPerClientIp = 0, IdleTimeout = TimeSpan.Zero });

        var errors = RelayOptionsValidator.Validate(options);

        foreach (var fragment in new[] { "MaxControlQueueBytes", "MaxAgentConnectionsPerIp", "PreAuthenticationTimeout", "must not exceed 100000", "MaxConnectionsPerClientIp", "IdleTimeout" })
        {
            Assert.That(errors, Has.Some.Contains(fragment), fragment);
        }
    }

    [Test]
    [UnsupportedOSPlatform("windows")]
    public void DevelopmentCertificate_IsCreatedReadableByItsOwnerOnly_AndReusedWithItsPassword()
    {
        Assume.That(OperatingSystem.IsWindows(), Is.False, "Unix permissions");
        var path = Path.Combine(_directory, "dev.pfx");
        var tls = new RelayTlsOptions { DevelopmentCertificatePath = path, CertificatePassword = "keep-it-safe" };

        using var created = RelayCertificate.Load(tls)!;
        using var reused = RelayCertificate.Load(tls)!;

        Assert.Multiple(() =>
        {
            Assert.That(File.GetUnixFileMode(path), Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite));
            Assert.That(reused.Thumbprint, Is.EqualTo(created.Thumbprint));
            Assert.That(() => X509CertificateLoader.LoadPkcs12FromFile(path, null), Throws.InstanceOf<System.Security.Cryptography.CryptographicException>(), "the kept key is encrypted with the password");
            Assert.That(reused.HasPrivateKey, Is.True);
        });
    }

    [Test]
    [UnsupportedOSPlatform("windows")]
    public void DevelopmentCertificate_ThatOthersCanRead_IsRefused_WithWhatToDo()
    {
        Assume.That(OperatingSystem.IsWindows(), Is.False, "Unix permissions");
        var path = Path.Combine(_directory, "dev.pfx");
        using (RelayCertificate.Load(new RelayTlsOptions { DevelopmentCertificatePath = path }))
        {
        }

        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);

        var ex = Assert.Throws<RelayConfigurationException>(() => RelayCertificate.Load(new RelayTlsOptions { DevelopmentCertificatePath = path }));

        Assert.That(ex!.Message, Does.Contain("chmod 600").And.Contain(path));
    }

    [Test]
    public void TokenStore_Replace_NamesTheTokensWhoseSessionsMustEnd()
    {
        AuthTokenOptions Token(string name, string secret, string tenant, string allow)
        {
            var token = new AuthTokenOptions { Name = name, Token = secret, Tenant = tenant };
            token.Allow.Add(allow);
            return token;
        }

        var store = new AuthTokenStore([
            Token("same", "same-secret-0123456789", "t", "*"),
            Token("new-secret", "old-secret-0123456789", "t", "*"),
            Token("new-acl", "acl-secret-0123456789", "t", "*"),
            Token("removed", "gone-secret-0123456789", "t", "*"),
        ]);

        var changed = store.Replace([
            Token("same", "same-secret-0123456789", "t", "*"),
            Token("new-secret", "fresh-secret-0123456789", "t", "*"),
            Token("new-acl", "acl-secret-0123456789", "t", "db-*"),
            Token("added", "added-secret-0123456789", "t", "*"),
        ]);

        Assert.Multiple(() =>
        {
            Assert.That(changed, Is.EquivalentTo(new[] { "new-secret", "new-acl", "removed" }));
            Assert.That(store.Authenticate("Bearer gone-secret-0123456789", out _), Is.Null);
            Assert.That(store.Authenticate("Bearer old-secret-0123456789", out _), Is.Null);
            Assert.That(store.Authenticate("Bearer added-secret-0123456789", out _)?.Name, Is.EqualTo("added"));
            Assert.That(store.Authenticate("Bearer " + new string('x', 5000), out var failure), Is.Null);
            Assert.That(failure, Does.Contain("not valid"));
        });
    }
}
