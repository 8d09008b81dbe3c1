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
            return LoadConfigured(tls.CertificatePath, tls.KeyPath, tls.CertificatePassword);
        }

        if (tls.DevelopmentCertificatePath is { } kept)
        {
            if (File.Exists(kept))
            {
                CheckPrivate(kept);
                X509Certificate2 existing;
                try
                {
                    existing = X509CertificateLoader.LoadPkcs12FromFile(kept, tls.CertificatePassword);
                }
                catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException)
                {
                    throw new RelayConfigurationException(
                        [$"The development certificate '{kept}' cannot be read ({ex.Message.TrimEnd('.')}); check Relay:Tls:CertificatePassword and the file's owner, or delete the file for a new certificate."]);
                }

                if (existing.NotAfter.ToUniversalTime() > DateTime.UtcNow.AddDays(7))
                {
                    return existing;
                }

                existing.Dispose();
                File.Delete(kept);
            }

            var created = CreateDevelopmentCertificate();
            try
            {
                var directory = Path.GetDirectoryName(Path.GetFullPath(kept));
                if (directory is not null)
                {
                    Directory.CreateDirectory(directory);
                }

                WritePrivate(kept, Export(created, tls.CertificatePassword));
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                created.Dispose();
                throw new RelayConfigurationException(
                    [$"Relay:Tls:DevelopmentCertificatePath '{kept}' cannot be written ({ex.Message.TrimEnd('.')}); point it to a folder the relay's user may write, or remove it for a certificate that changes at every start."]);
            }

            return created;
        }

        return CreateDevelopmentCertificate();
    }

    /// <summary>
    /// The configured certificate file: PKCS#12, or PEM with its key. A file that is missing, unreadable or not a
    /// certificate is a configuration problem (<see cref="RelayConfigurationException"/>) named in one line.
    /// </summary>
    private static X509Certificate2 LoadConfigured(string path, string? keyPath, string? password) => LoadFile(path, keyPath, password, "Relay:Tls");

    /// <summary>A certificate file (PKCS#12, or PEM with its key), named by the settings under <paramref name="section"/> in errors.</summary>
    internal static X509Certificate2 LoadFile(string path, string? keyPath, string? password, string section)
    {
        var key = keyPath is null ? "" : $" with {section}:KeyPath '{keyPath}'";
        try
        {
            if (keyPath is not null)
            {
                using var pem = X509Certificate2.CreateFromPemFile(path, keyPath);
                // Re-import so the key is usable by SslStream on every platform.
                return X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
            }

            var certificate = X509CertificateLoader.LoadPkcs12FromFile(path, password);
            if (!certificate.HasPrivateKey)
            {
                certificate.Dispose();
                throw new RelayConfigurationException(
                    [$"{section}:CertificatePath '{path}' has no private key: a server certificate needs one (export the .pfx with its key, or use a PEM certificate with {section}:KeyPath)."]);
            }

            return certificate;
        }
        catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            var hint = keyPath is null
                ? $" It must be a PKCS#12 (.pfx) file with its private key and {section}:CertificatePassword, or a PEM certificate with {section}:KeyPath."
                : " It must be a PEM certificate and its PEM private key.";
            throw new RelayConfigurationException([$"{section}:CertificatePath '{path}'{key} cannot be loaded: {ex.Message.TrimEnd('.')}.{hint}"]);
        }
    }

    /// <summary>
    /// The intermediate certificates to send after the agent port's certificate: the other certificates of the configured
    /// file (a PEM "fullchain", or those in the PKCS#12 file), so an agent that trusts only the root (a private CA given
    /// in its <c>TrustedCertificateAuthorities</c>) can build the chain. Null when there are none.
    /// </summary>
    public static X509Certificate2Collection? LoadChain(RelayTlsOptions tls, X509Certificate2? certificate)
    {
        ArgumentNullException.ThrowIfNull(tls);
        if (tls.Disabled || certificate is null || tls.CertificatePath is not { } path)
        {
            return null;
        }

        var all = new X509Certificate2Collection();
        try
        {
            if (tls.KeyPath is not null)
            {
                all.ImportFromPemFile(path);
            }
            else
            {
                all = X509CertificateLoader.LoadPkcs12CollectionFromFile(path, tls.CertificatePassword);
            }
        }
        catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException)
        {
            // The certificate itself loaded a moment ago (Load reports problems with the file): serve it alone.
            return null;
        }

        var chain = new X509Certificate2Collection();
        foreach (var other in all)
        {
            if (other.RawDataMemory.Span.SequenceEqual(certificate.RawDataMemory.Span))
            {
                other.Dispose();
                continue;
            }

            // Only the public part travels; a key in the file stays with the leaf.
            chain.Add(X509CertificateLoader.LoadCertificate(other.RawData));
            other.Dispose();
        }

        return chain.Count == 0 ? null : chain;
    }

    /// <summary>A line for the log saying which certificate the agent port serves.</summary>
    public static string Describe(X509Certificate2 certificate, RelayTlsOptions tls)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        ArgumentNullException.ThrowIfNull(tls);
        var source = tls.CertificatePath is { } path
            ? $"'{certificate.Subject}' from {path}"
            : tls.DevelopmentCertificatePath is { } kept
                ? $"the self-signed development certificate kept in {kept} (agents must pin it)"
                : "a self-signed development certificate generated at start (agents must pin it; it changes every start)";
        return $"{source}, valid until {certificate.NotAfter.ToUniversalTime():yyyy-MM-dd}, SHA-256 {Sha256Of(certificate)}";
    }

    /// <summary>
    /// The kept development certificate holds a private key: like an ssh host key, only its owner may read it. A file
    /// that group or others can read or write is refused (it may have been copied or replaced), as ssh does.
    /// </summary>
    private static void CheckPrivate(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            return;
        }

        var mode = File.GetUnixFileMode(path);
        const UnixFileMode Others = UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute
            | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;
        if ((mode & Others) != 0)
        {
            throw new RelayConfigurationException(
                [$"The development certificate '{path}' holds a private key but its permissions ({Convert.ToString((int)mode, 8)}) let other users read or change it; run 'chmod 600 {path}', or delete it for a new certificate."]);
        }
    }

    /// <summary>Creates the file readable and writable by its owner only from the first byte (no window with wider permissions).</summary>
    private static void WritePrivate(string path, byte[] content)
    {
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.None };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }

        using var file = new FileStream(path, options);
        file.Write(content);
    }

    private static byte[] Export(X509Certificate2 certificate, string? password) =>
        string.IsNullOrEmpty(password)
            ? certificate.Export(X509ContentType.Pkcs12)
            : certificate.ExportPkcs12(new PbeParameters(PbeEncryptionAlgorithm.Aes256Cbc, HashAlgorithmName.SHA256, 100_000), password);

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
