using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace SiteLink.Sdk.Tests;

[TestFixture]
public sealed class CertificatePinTests
{
    private static X509Certificate2 CreateCertificate()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=pin-test", key, HashAlgorithmName.SHA256);
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
    }

    [TestCase("")]
    [TestCase("abc")]
    [TestCase("zz00000000000000000000000000000000000000000000000000000000000000")]
    [TestCase("000000000000000000000000000000000000000000000000000000000000000000")]
    public void TryParse_Malformed_ReturnsNull(string text)
    {
        Assert.That(CertificatePin.TryParse(text), Is.Null);
    }

    [Test]
    public void Matches_SameCertificateInAnyNotation_True_OtherCertificate_False()
    {
        using var certificate = CreateCertificate();
        using var other = CreateCertificate();
        var hex = Convert.ToHexString(SHA256.HashData(certificate.RawData));
        var withColons = string.Join(":", Enumerable.Range(0, 32).Select(i => hex.Substring(i * 2, 2))).ToLowerInvariant();

        Assert.Multiple(() =>
        {
            Assert.That(CertificatePin.TryParse(hex)!.Matches(certificate), Is.True);
            Assert.That(CertificatePin.TryParse(withColons)!.Matches(certificate), Is.True);
            Assert.That(CertificatePin.TryParse(hex)!.Matches(other), Is.False);
        });
    }

    [Test]
    public void Validator_WithPin_AcceptsPinnedCertificateDespiteChainErrors_AndExplainsRejections()
    {
        using var certificate = CreateCertificate();
        using var other = CreateCertificate();
        var pin = CertificatePin.TryParse(Convert.ToHexString(SHA256.HashData(certificate.RawData)));
        string? rejection = null;
        var validate = CertificatePin.CreateValidator(pin, customRoots: false, reason => rejection = reason);

        var pinned = validate(this, certificate, null, SslPolicyErrors.RemoteCertificateChainErrors);
        var foreign = validate(this, other, null, SslPolicyErrors.None);

        Assert.Multiple(() =>
        {
            Assert.That(pinned, Is.True);
            Assert.That(foreign, Is.False, "a pin replaces the trust store: an otherwise valid certificate is still refused");
            Assert.That(rejection, Does.Contain("PinnedCertificateSha256"));
        });
    }

    [TestCase(SslPolicyErrors.None, true)]
    [TestCase(SslPolicyErrors.RemoteCertificateChainErrors, false)]
    [TestCase(SslPolicyErrors.RemoteCertificateNameMismatch, false)]
    public void Validator_WithoutPin_FollowsTheSystemTrustStore(SslPolicyErrors errors, bool expected)
    {
        using var certificate = CreateCertificate();
        var validate = CertificatePin.CreateValidator(null, customRoots: false, _ => { });

        Assert.That(validate(this, certificate, null, errors), Is.EqualTo(expected));
    }
}
