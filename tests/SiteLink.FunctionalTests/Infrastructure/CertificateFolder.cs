using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>A temporary folder with self-signed server certificates written as .pfx files (and whatever else a test puts there).</summary>
internal sealed class CertificateFolder : IDisposable
{
    private readonly DirectoryInfo _folder = Directory.CreateTempSubdirectory("sitelink-certs-");

    /// <summary>The SHA-256 fingerprints of the certificates written so far, for clients that trust exactly those.</summary>
    public HashSet<string> Thumbprints { get; } = new(StringComparer.OrdinalIgnoreCase);

    public string FullName => _folder.FullName;

    /// <summary>Writes a self-signed certificate for <paramref name="dnsName"/> (a wildcard allowed); returns the .pfx path.</summary>
    public string Certificate(string dnsName)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={dnsName}", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName(dnsName);
        request.CertificateExtensions.Add(names.Build());
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
        Thumbprints.Add(certificate.GetCertHashString(HashAlgorithmName.SHA256));
        var path = Path.Combine(_folder.FullName, dnsName.Replace('*', '_') + ".pfx");
        File.WriteAllBytes(path, certificate.Export(X509ContentType.Pkcs12));
        return path;
    }

    public void Dispose() => _folder.Delete(recursive: true);
}
