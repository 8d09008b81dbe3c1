using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace SiteLink.Sdk.Tests;

/// <summary>
/// <see cref="TunnelSessionOptions.TrustedCertificateAuthorities"/> against hostile or broken bundles: the limits hold,
/// private keys are never taken in, and a bundle that cannot be read when the connection is made fails closed instead
/// of falling back to the system trust store.
/// </summary>
[TestFixture]
[Category("Hostile")]
[Category("Trust")]
public sealed class HostileTrustBundleTests
{
    private static X509Certificate2 SelfSigned(string name)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
    }

    private static TunnelSessionOptions Options(string? authorities) =>
        new() { RelayUrl = new Uri("https://relay.example:443"), AuthToken = "t", TrustedCertificateAuthorities = authorities };

    [Test]
    public void ABundleThatCannotBeReadWhenConnecting_FailsClosed_NeverTheSystemStore()
    {
        var path = Path.Combine(Path.GetTempPath(), "sitelink-hostile-" + Guid.NewGuid().ToString("N") + ".pem");
        using var root = SelfSigned("Gone Root");
        File.WriteAllText(path, root.ExportCertificatePem());
        var options = Options(path);
        Assert.That(options.Validate(), Is.Empty);
        // The file goes (rotated, a volume unmounted) between the validation and the session's start.
        File.Delete(path);
        var session = options.Snapshot();

        var ex = Assert.Throws<TunnelConnectionException>(() => CertificatePin.CreateChainPolicy(session));

        Assert.Multiple(() =>
        {
            Assert.That(ex!.TunnelError, Is.EqualTo(TunnelError.CertificateRejected));
            Assert.That(ex.IsTransient, Is.False);
            Assert.That(ex.Message, Does.Contain("does not exist"));
        });
    }

    [Test]
    public void ABundleReadOnce_IsTheSessionsEvenIfTheFileChangesLater()
    {
        var path = Path.GetTempFileName();
        using var root = SelfSigned("Kept Root");
        File.WriteAllText(path, root.ExportCertificatePem());
        var session = Options(path).Snapshot();
        File.WriteAllText(path, "garbage");

        var policy = CertificatePin.CreateChainPolicy(session)!;
        File.Delete(path);

        Assert.Multiple(() =>
        {
            Assert.That(policy.TrustMode, Is.EqualTo(X509ChainTrustMode.CustomRootTrust));
            Assert.That(policy.CustomTrustStore.Single().Thumbprint, Is.EqualTo(root.Thumbprint));
        });
    }

    [Test]
    public void APrivateKeyInTheBundle_IsIgnored_OnlyCertificatesAreTrusted()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var root = SelfSigned("Root With Key Nearby");
        var pem = key.ExportPkcs8PrivateKeyPem() + "\n" + root.ExportCertificatePem() + "\n" + key.ExportECPrivateKeyPem();

        var roots = Options(pem).LoadTrustRoots(out var problem);

        Assert.Multiple(() =>
        {
            Assert.That(problem, Is.Null);
            Assert.That(roots!.Count, Is.EqualTo(1));
            Assert.That(roots[0].HasPrivateKey, Is.False);
        });
    }

    [Test]
    public void TooManyCertificates_OrTooLargeABundle_AreRefused_WithoutQuotingIt()
    {
        using var root = SelfSigned("Many");
        var one = root.ExportCertificatePem() + "\n";
        var many = string.Concat(Enumerable.Repeat(one, TunnelSessionOptions.MaxTrustedAuthorities + 1));
        var huge = one + new string('A', TunnelSessionOptions.MaxTrustBundleBytes);

        Options(many).LoadTrustRoots(out var manyProblem);
        Options(huge).LoadTrustRoots(out var hugeProblem);

        Assert.Multiple(() =>
        {
            Assert.That(manyProblem, Does.Contain("at most 256"));
            Assert.That(hugeProblem, Does.Contain("larger than"));
            Assert.That(hugeProblem!.Length, Is.LessThan(300));
        });
    }

    [Test]
    public void AnUnreadableCertificate_IsRefused_WithACleanMessage()
    {
        var pem = "-----BEGIN CERTIFICATE-----\n" + Convert.ToBase64String(Encoding.Latin1.GetBytes("\u001b[2J\r\nforged\u0007")) + "\n-----END CERTIFICATE-----\n";

        var errors = Options(pem).Validate();

        Assert.That(string.Join("\n", errors).Any(c => char.IsControl(c) && c != '\n'), Is.False);
    }
}
