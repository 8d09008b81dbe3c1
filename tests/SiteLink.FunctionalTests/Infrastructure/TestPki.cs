using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>
/// A private PKI the test issues itself: a root CA, an intermediate CA it signs, and server certificates the
/// intermediate signs, written as PEM files in a temporary folder (as a vendor's private CA or a company's
/// TLS-inspection CA would hand them out).
/// </summary>
internal sealed class TestPki : IDisposable
{
    private readonly DirectoryInfo _folder = Directory.CreateTempSubdirectory("sitelink-pki-");
    private readonly ECDsa _rootKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
    private readonly ECDsa _intermediateKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);

    public TestPki(string name = "Test")
    {
        var rootRequest = CaRequest($"CN={name} Root CA, O=SiteLink Tests", _rootKey);
        Root = rootRequest.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-400), DateTimeOffset.UtcNow.AddYears(5));
        var intermediateRequest = CaRequest($"CN={name} Issuing CA, O=SiteLink Tests", _intermediateKey);
        using var intermediate = intermediateRequest.Create(Root, DateTimeOffset.UtcNow.AddDays(-365), DateTimeOffset.UtcNow.AddYears(2), Serial());
        Intermediate = intermediate.CopyWithPrivateKey(_intermediateKey);
        RootPem = Write($"{name}-root.pem", Root.ExportCertificatePem());
        IntermediatePem = Write($"{name}-intermediate.pem", Intermediate.ExportCertificatePem());
    }

    public X509Certificate2 Root { get; }

    public X509Certificate2 Intermediate { get; }

    /// <summary>The root CA's certificate as a PEM file (what an agent is told to trust).</summary>
    public string RootPem { get; }

    public string IntermediatePem { get; }

    /// <summary>
    /// Issues a server certificate for 127.0.0.1 and localhost (or <paramref name="dnsName"/> only) signed by the
    /// intermediate; returns the PEM certificate file (the leaf, then the intermediate unless <paramref name="leafOnly"/>)
    /// and its PEM key file, as Relay:Tls:CertificatePath and KeyPath take them.
    /// </summary>
    /// <remarks>
    /// <paramref name="issuer"/> (with its private key) signs it instead of the intermediate, and the file then holds the
    /// leaf and <paramref name="chain"/>; <paramref name="subject"/> replaces the subject name.
    /// </remarks>
    public (string CertificatePath, string KeyPath) IssueServer(string file, string? dnsName = null, bool leafOnly = false, DateTimeOffset? notAfter = null,
        X509Certificate2? issuer = null, X509Certificate2[]? chain = null, X500DistinguishedName? subject = null)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject ?? new X500DistinguishedName($"CN={dnsName ?? "localhost"}, O=SiteLink Tests"), key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        if (dnsName is null)
        {
            names.AddDnsName("localhost");
            names.AddIpAddress(IPAddress.Loopback);
        }
        else
        {
            names.AddDnsName(dnsName);
        }

        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        issuer ??= Intermediate;
        chain ??= leafOnly ? [] : [Intermediate];
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(issuer, includeKeyIdentifier: true, includeIssuerAndSerial: false));
        var end = notAfter ?? DateTimeOffset.UtcNow.AddDays(90);
        var start = end < DateTimeOffset.UtcNow ? end.AddDays(-30) : DateTimeOffset.UtcNow.AddDays(-1);
        // Signed with the issuer's key by name, so that any certificate can be made to issue (a non-CA one too).
        using var issuerKey = issuer.GetECDsaPrivateKey() ?? throw new ArgumentException("The issuer has no ECDsa private key.", nameof(issuer));
        using var leaf = request.Create(issuer.SubjectName, X509SignatureGenerator.CreateForECDsa(issuerKey), start, end, Serial());
        var pem = string.Concat(new[] { leaf }.Concat(chain).Select(c => c.ExportCertificatePem() + "\n"));
        return (Write(file + ".pem", pem), Write(file + ".key", key.ExportPkcs8PrivateKeyPem()));
    }

    /// <summary>
    /// A certificate with its private key, self-signed or signed by <paramref name="issuer"/>: a CA unless
    /// <paramref name="isCa"/> is false (then an ordinary end-entity certificate), valid from <paramref name="notBefore"/>
    /// to <paramref name="notAfter"/> (default: a year either side of now).
    /// </summary>
    public static X509Certificate2 CreateAuthority(string subject, X509Certificate2? issuer = null, bool isCa = true, DateTimeOffset? notBefore = null, DateTimeOffset? notAfter = null)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = CaRequest(subject, key, isCa);
        var (start, end) = (notBefore ?? DateTimeOffset.UtcNow.AddYears(-1), notAfter ?? DateTimeOffset.UtcNow.AddYears(1));
        if (issuer is null)
        {
            return request.CreateSelfSigned(start, end);
        }

        using var certificate = request.Create(issuer, start, end, Serial());
        return certificate.CopyWithPrivateKey(key);
    }

    /// <summary>Writes <paramref name="content"/> (PEM) to a file of this PKI's folder; returns its path.</summary>
    public string WriteFile(string name, string content) => Write(name, content);

    private static CertificateRequest CaRequest(string subject, ECDsa key, bool isCa = true)
    {
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(isCa, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(isCa ? X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign : X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        return request;
    }

    private static byte[] Serial()
    {
        var serial = RandomNumberGenerator.GetBytes(12);
        serial[0] &= 0x7F; // positive
        return serial;
    }

    private string Write(string name, string content)
    {
        var path = Path.Combine(_folder.FullName, name);
        File.WriteAllText(path, content.EndsWith('\n') ? content : content + "\n");
        return path;
    }

    public void Dispose()
    {
        Root.Dispose();
        Intermediate.Dispose();
        _rootKey.Dispose();
        _intermediateKey.Dispose();
        _folder.Delete(recursive: true);
    }
}
