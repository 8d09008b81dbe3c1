using System.Security.Cryptography.X509Certificates;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>
/// A hostile relay (or a careless application hook) against <see cref="TunnelSessionOptions.TrustedCertificateAuthorities"/>:
/// chains that only look like they lead to a trusted root, certificates that are no CA, an expired intermediate, a
/// subject built to forge an error message, and ConfigureHttpHandler loosening the chain policy. Every one is refused
/// before a session reaches the relay.
/// </summary>
[TestFixture]
[Category("Hostile")]
[Category("Trust")]
public sealed class HostileTrustTests
{
    private TestPki _pki = null!;

    [OneTimeSetUp]
    public void CreatePki() => _pki = new TestPki("Trusted");

    [OneTimeTearDown]
    public void DeletePki() => _pki.Dispose();

    private static Task<TestRelay> StartRelayAsync((string Certificate, string Key) files) =>
        TestRelay.StartAsync([], o =>
        {
            o.Tls.CertificatePath = files.Certificate;
            o.Tls.KeyPath = files.Key;
        });

    private static TunnelSessionOptions Trusting(TestRelay relay, string authorities)
    {
        var options = relay.AgentOptions();
        options.PinnedCertificateSha256 = null;
        options.TrustedCertificateAuthorities = authorities;
        return options;
    }

    /// <summary>Connecting fails as an untrusted relay, and nothing reached the relay.</summary>
    private static async Task<TunnelConnectionException> RefusedAsync(TestRelay relay, TunnelSessionOptions options)
    {
        var ex = Assert.ThrowsAsync<TunnelConnectionException>(async () => await (await TunnelSession.ConnectAsync(options).DefaultTimeout()).DisposeAsync());
        await Task.Yield();
        Assert.Multiple(() =>
        {
            Assert.That(ex!.IsTransient, Is.False, ex.Message);
            Assert.That(relay.Server.SessionCount, Is.Zero, "no session reached the relay");
        });
        return ex!;
    }

    [Test]
    public async Task AnImpostorRoot_WithTheTrustedRootsName_ButItsOwnKey_IsRefused()
    {
        using var impostor = TestPki.CreateAuthority(_pki.Root.Subject);
        await using var relay = await StartRelayAsync(_pki.IssueServer("impostor", issuer: impostor, chain: [impostor]));

        var ex = await RefusedAsync(relay, Trusting(relay, _pki.RootPem));

        Assert.That(ex.TunnelError, Is.EqualTo(TunnelError.CertificateRejected));
    }

    [Test]
    public async Task ANonCaCertificateInTheBundle_CannotIssueTheRelaysCertificate()
    {
        // An ordinary (end-entity) certificate someone put in the bundle: its key must not be able to vouch for a relay.
        using var notCa = TestPki.CreateAuthority("CN=Just A Server, O=SiteLink Tests", isCa: false);
        var bundle = _pki.WriteFile("not-ca.pem", notCa.ExportCertificatePem());
        await using var relay = await StartRelayAsync(_pki.IssueServer("by-not-ca", issuer: notCa, chain: [notCa]));

        var ex = await RefusedAsync(relay, Trusting(relay, bundle));

        Assert.That(ex.TunnelError, Is.EqualTo(TunnelError.CertificateRejected));
    }

    [Test]
    public async Task ANonCaCertificateIssuedByTheTrustedRoot_CannotActAsAnIntermediate()
    {
        using var notCa = TestPki.CreateAuthority("CN=Leaf Posing As CA, O=SiteLink Tests", issuer: _pki.Intermediate, isCa: false);
        await using var relay = await StartRelayAsync(_pki.IssueServer("under-leaf", issuer: notCa, chain: [notCa, _pki.Intermediate]));

        var ex = await RefusedAsync(relay, Trusting(relay, _pki.RootPem));

        Assert.That(ex.TunnelError, Is.EqualTo(TunnelError.CertificateRejected));
    }

    [Test]
    public async Task AnExpiredIntermediate_IsRefused()
    {
        using var expired = TestPki.CreateAuthority("CN=Expired Issuing CA, O=SiteLink Tests", issuer: _pki.Root,
            notBefore: DateTimeOffset.UtcNow.AddDays(-60), notAfter: DateTimeOffset.UtcNow.AddDays(-1));
        await using var relay = await StartRelayAsync(_pki.IssueServer("under-expired", issuer: expired, chain: [expired]));

        var ex = await RefusedAsync(relay, Trusting(relay, _pki.RootPem));

        Assert.That(ex.TunnelError, Is.EqualTo(TunnelError.CertificateRejected));
    }

    [Test]
    public async Task ARelaySubjectAndIssuer_BuiltToForgeLogLines_AreCleanedInTheRefusal()
    {
        const string Forged = "evil\u001b[2J\r\n[ERR] forged line\u202e\u0007";
        var names = new X500DistinguishedNameBuilder();
        names.AddCommonName(Forged + new string('x', 2000));
        using var other = TestPki.CreateAuthority("CN=Other Root, O=SiteLink Tests");
        await using var relay = await StartRelayAsync(_pki.IssueServer("forged", issuer: other, chain: [other], subject: names.Build()));

        var ex = await RefusedAsync(relay, Trusting(relay, _pki.RootPem));

        Assert.Multiple(() =>
        {
            Assert.That(ex.TunnelError, Is.EqualTo(TunnelError.CertificateRejected));
            Assert.That(ex.Message.Any(c => char.IsControl(c) || c == '\u202e'), Is.False, ex.Message);
            Assert.That(ex.Message.Length, Is.LessThan(2000));
        });
    }

    [Test]
    public async Task ABundleWithAPrivateKeyInIt_TrustsItsCertificatesOnly()
    {
        var bundle = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n" + await File.ReadAllTextAsync(_pki.RootPem);
        await using var relay = await StartRelayAsync(_pki.IssueServer("with-key"));

        await using var session = await TunnelSession.ConnectAsync(Trusting(relay, bundle)).DefaultTimeout();

        Assert.That(session.State, Is.EqualTo(TunnelSessionState.Connected));
    }

    [TestCase("CustomTrustStore")]
    [TestCase("TrustMode")]
    [TestCase("VerificationFlags")]
    [TestCase("ExtraStore")]
    [TestCase("NewSslOptionsKeepingTheCallback")]
    public async Task AHookLooseningTheChainPolicy_IsRefused_NotObeyed(string how)
    {
        using var other = new TestPki("Other");
        await using var relay = await StartRelayAsync(other.IssueServer("other"));
        var options = Trusting(relay, _pki.RootPem);
        options.ConfigureHttpHandler = handler =>
        {
            // In place when the hook is shown a policy; otherwise one of its own.
            var policy = handler.SslOptions.CertificateChainPolicy ??= new X509ChainPolicy { TrustMode = X509ChainTrustMode.CustomRootTrust };
            switch (how)
            {
                case "CustomTrustStore":
                    policy.CustomTrustStore.Add(other.Root);
                    break;
                case "TrustMode":
                    policy.TrustMode = X509ChainTrustMode.System;
                    break;
                case "VerificationFlags":
                    policy.VerificationFlags = X509VerificationFlags.AllowUnknownCertificateAuthority;
                    break;
                case "ExtraStore":
                    // Another root passed off as a helper certificate.
                    policy.ExtraStore.Add(other.Root);
                    break;
                default:
                    handler.SslOptions = new System.Net.Security.SslClientAuthenticationOptions { RemoteCertificateValidationCallback = handler.SslOptions.RemoteCertificateValidationCallback };
                    break;
            }
        };

        var ex = await RefusedAsync(relay, options);

        Assert.That(ex.Message, Does.Contain("replaced the relay's certificate validation").Or.Contain("was refused"));
    }
}
