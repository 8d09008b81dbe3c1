using System.Globalization;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace SiteLink;

/// <summary>Checks the relay's TLS certificate: a pinned SHA-256 fingerprint, or the system trust store.</summary>
internal sealed class CertificatePin
{
    private readonly byte[] _sha256;

    private CertificatePin(byte[] sha256) => _sha256 = sha256;

    /// <summary>Parses 64 hex digits, optionally separated by colons or spaces. Returns null when malformed.</summary>
    public static CertificatePin? TryParse(string text)
    {
        var hex = text.Replace(":", "", StringComparison.Ordinal).Replace(" ", "", StringComparison.Ordinal);
        if (hex.Length != 64)
        {
            return null;
        }

        var bytes = new byte[32];
        for (var i = 0; i < 32; i++)
        {
            if (!byte.TryParse(hex.AsSpan(i * 2, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out bytes[i]))
            {
                return null;
            }
        }

        return new CertificatePin(bytes);
    }

    public bool Matches(X509Certificate certificate)
    {
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(certificate.GetRawCertData(), hash);
        return CryptographicOperations.FixedTimeEquals(hash, _sha256);
    }

    /// <summary>
    /// Builds the callback for <see cref="SslClientAuthenticationOptions.RemoteCertificateValidationCallback"/>.
    /// <paramref name="onRejected"/> receives the reason so connection errors can explain a refusal.
    /// </summary>
    public static RemoteCertificateValidationCallback CreateValidator(CertificatePin? pin, Action<string> onRejected)
    {
        return (_, certificate, _, errors) =>
        {
            if (pin is not null)
            {
                if (certificate is not null && pin.Matches(certificate))
                {
                    return true;
                }

                onRejected("the relay's certificate does not match PinnedCertificateSha256");
                return false;
            }

            if (errors == SslPolicyErrors.None)
            {
                return true;
            }

            onRejected($"the relay's certificate is not trusted ({errors}); install its CA or set PinnedCertificateSha256");
            return false;
        };
    }
}
