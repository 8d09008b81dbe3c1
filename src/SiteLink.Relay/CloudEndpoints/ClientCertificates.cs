using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace SiteLink.Relay.CloudEndpoints;

/// <summary>
/// Mutual TLS on an https cloud endpoint: the certificate authorities its clients' certificates must chain to, and
/// the check the TLS handshake runs (only those roots, valid now, for client authentication).
/// </summary>
internal sealed class ClientCertificates(X509Certificate2Collection authorities)
{
    private static readonly Oid ClientAuthentication = new("1.3.6.1.5.5.7.3.2");

    /// <summary>Loads a PEM bundle; null when it is usable, else why not (and <paramref name="certificates"/> is null).</summary>
    public static string? TryLoad(string path, out ClientCertificates? certificates)
    {
        certificates = null;
        try
        {
            var bundle = new X509Certificate2Collection();
            bundle.ImportFromPemFile(path);
            if (bundle.Count == 0)
            {
                return "holds no certificate.";
            }

            certificates = new ClientCertificates(bundle);
            return null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or CryptographicException)
        {
            return $"cannot be read as a PEM bundle: {Internal.SafeText.Clean(ex.Message, 200)}";
        }
    }

    /// <summary>The handshake's check of the client's certificate: false refuses the connection.</summary>
    public bool Validate(X509Certificate? certificate)
    {
        if (certificate is not X509Certificate2 presented)
        {
            return false;
        }

        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(authorities);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.ApplicationPolicy.Add(ClientAuthentication);
        return chain.Build(presented);
    }

    public RemoteCertificateValidationCallback Callback => (_, certificate, _, _) => Validate(certificate);
}
