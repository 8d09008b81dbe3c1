using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using SiteLink.Relay.Configuration;

namespace SiteLink.Relay.Security;

/// <summary>Loads the relay's TLS certificate, or creates a self-signed development certificate.</summary>
public static class RelayCertificate
{
    /// <summary>
    /// The certificate for the agent port: the configured file, else the kept development certificate, else a new one.
    /// Returns null when TLS is disabled.
    /// </summary>
    public static X509Certificate2? Load(RelayTlsOptions tls)
    {
        ArgumentNullException.ThrowIfNull(tls);
        if (tls.Disabled)
        {
            return null;
        }

        if (tls.CertificatePath is not null)
        {
            if (tls.KeyPath is not null)
            {
                using var pem = X509Certificate2.CreateFromPemFile(tls.CertificatePath, tls.KeyPath);
                // Re-import so the key is usable by SslStream on every platform.
                return X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
            }

            return X509CertificateLoader.LoadPkcs12FromFile(tls.CertificatePath, tls.CertificatePassword);
        }

        if (tls.DevelopmentCertificatePath is { } kept)
        {
            if (File.Exists(kept))
            {
                var existing = X509CertificateLoader.LoadPkcs12FromFile(kept, null);
                if (existing.NotAfter.ToUniversalTime() > DateTime.UtcNow.AddDays(7))
                {
                    return existing;
                }

                existing.Dispose();
            }

            var created = CreateDevelopmentCertificate();
            var directory = Path.GetDirectoryName(Path.GetFullPath(kept));
            if (directory is not null)
            {
                Directory.CreateDirectory(directory);
            }

            File.WriteAllBytes(kept, created.Export(X509ContentType.Pkcs12));
            if (!OperatingSystem.IsWindows())
            {
                File.SetUnixFileMode(kept, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            }

            return created;
        }

        return CreateDevelopmentCertificate();
    }

    /// <summary>
    /// A self-signed ECDSA P-256 server certificate for localhost, 127.0.0.1, ::1 and this machine's name, valid for a
    /// year. Agents trust it by pinning its SHA-256 (<see cref="Sha256Of"/>).
    /// </summary>
    public static X509Certificate2 CreateDevelopmentCertificate()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=SiteLink relay (development)", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName("localhost");
        names.AddDnsName(Environment.MachineName.ToLowerInvariant());
        names.AddIpAddress(IPAddress.Loopback);
        names.AddIpAddress(IPAddress.IPv6Loopback);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        var now = DateTimeOffset.UtcNow;
        using var certificate = request.CreateSelfSigned(now.AddDays(-1), now.AddYears(1));
        return X509CertificateLoader.LoadPkcs12(certificate.Export(X509ContentType.Pkcs12), null);
    }

    /// <summary>The certificate's SHA-256 fingerprint as upper-case hex, the form agents pin.</summary>
    public static string Sha256Of(X509Certificate2 certificate)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        return Convert.ToHexString(SHA256.HashData(certificate.RawData));
    }
}
