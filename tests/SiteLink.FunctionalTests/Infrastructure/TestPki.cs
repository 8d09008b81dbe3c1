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
    public (string CertificatePath, string KeyPath) IssueServer(string file, string? dnsName = null, bool leafOnly = false, DateTimeOffset? notAfter = null)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={dnsName ?? "localhost"}, O=SiteLink Tests", key, HashAlgorithmName.SHA256);
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
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(Intermediate, includeKeyIdentifier: true, includeIssuerAndSerial: false));
        var end = notAfter ?? DateTimeOffset.UtcNow.AddDays(90);
        var start = end < DateTimeOffset.UtcNow ? end.AddDays(-30) : DateTimeOffset.UtcNow.AddDays(-1);
        using var leaf = request.Create(Intermediate, start, end, Serial());
        var chain = leaf.ExportCertificatePem() + "\n" + (leafOnly ? "" : Intermediate.ExportCertificatePem() + "\n");
        return (Write(file + ".pem", chain), Write(file + ".key", key.ExportPkcs8PrivateKeyPem()));
    }

    private static CertificateRequest CaRequest(string subject, ECDsa key)
    {
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
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
