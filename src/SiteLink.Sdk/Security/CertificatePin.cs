using System.Globalization;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using SiteLink.Internal;

namespace SiteLink;

/// <summary>
/// Checks the relay's TLS certificate: a pinned SHA-256 fingerprint, the roots of
/// <see cref="TunnelSessionOptions.TrustedCertificateAuthorities"/> only, or the system trust store.
/// </summary>
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
    /// The TLS client options for a relay, for the session's handler and diagnose's own handshake alike: the validation
    /// callback and, when custom roots are trusted, the chain policy (<see cref="CreateChainPolicy"/>).
    /// <paramref name="onRejected"/> receives the reason for a refusal, so that connection errors (and diagnose) can
    /// explain it.
    /// </summary>
    /// <exception cref="TunnelConnectionException">The trust bundle cannot be used (<see cref="CreateChainPolicy"/>).</exception>
    public static SslClientAuthenticationOptions CreateSslOptions(TunnelSessionOptions options, Action<string> onRejected)
    {
        var pin = options.PinnedCertificateSha256 is null ? null : TryParse(options.PinnedCertificateSha256);
        return new SslClientAuthenticationOptions
        {
            RemoteCertificateValidationCallback = CreateValidator(pin, pin is null && options.HasTrustedAuthorities, onRejected),
            CertificateChainPolicy = CreateChainPolicy(options),
        };
    }

    /// <summary>
    /// The chain policy when custom roots are trusted (the handshake builds the chain against them only), or null for a
    /// pin or the system store. Fails closed: a bundle that was named but cannot be read now is a refusal, never the
    /// system store.
    /// </summary>
    /// <exception cref="TunnelConnectionException">The bundle cannot be used (permanent, <see cref="TunnelError.CertificateRejected"/>).</exception>
    public static X509ChainPolicy? CreateChainPolicy(TunnelSessionOptions options)
    {
        if (options.PinnedCertificateSha256 is not null || !options.HasTrustedAuthorities)
        {
            return null;
        }

        var roots = options.LoadTrustRoots(out var problem) ?? throw new TunnelConnectionException(
            $"TrustedCertificateAuthorities {problem ?? "holds no certificate."} The relay is not trusted without it.", null, isTransient: false, TunnelError.CertificateRejected);
        var policy = new X509ChainPolicy
        {
            TrustMode = X509ChainTrustMode.CustomRootTrust,
            // A private CA rarely publishes revocation lists the agent could reach; the pin and system modes do not
            // check them either (SslStream's default is no revocation check).
            RevocationMode = X509RevocationMode.NoCheck,
            DisableCertificateDownloads = true,
        };
        foreach (var root in roots)
        {
            // A bundle may carry intermediates too: self-signed certificates are roots, the others help build the chain.
            (root.SubjectName.RawData.AsSpan().SequenceEqual(root.IssuerName.RawData) ? policy.CustomTrustStore : policy.ExtraStore).Add(root);
        }

        return policy;
    }

    /// <summary>The validation callback; <paramref name="customRoots"/> says the chain was built against the session's own roots.</summary>
    public static RemoteCertificateValidationCallback CreateValidator(CertificatePin? pin, bool customRoots, Action<string> onRejected)
    {
        return (sender, certificate, chain, errors) =>
        {
            if (pin is not null)
            {
                if (certificate is not null && pin.Matches(certificate))
                {
                    return true;
                }

                onRejected("the relay's certificate does not match PinnedCertificateSha256" + (certificate is null ? "" : $" (it presented {Describe(certificate)}, SHA-256 {Fingerprint(certificate)})"));
                return false;
            }

            if (errors == SslPolicyErrors.None)
            {
                return true;
            }

            onRejected(Explain(certificate, chain, errors, (sender as SslStream)?.TargetHostName, customRoots));
            return false;
        };
    }

    /// <summary>Why a certificate was refused, in words that name the problem.</summary>
    public static string Explain(X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors, string? host, bool customRoots)
    {
        if (certificate is null || errors.HasFlag(SslPolicyErrors.RemoteCertificateNotAvailable))
        {
            return "the relay presented no certificate";
        }

        var problems = new List<string>();
        if (errors.HasFlag(SslPolicyErrors.RemoteCertificateNameMismatch))
        {
            problems.Add($"it is not valid for the host name '{SafeText.Clean(host, 253)}'");
        }

        if (errors.HasFlag(SslPolicyErrors.RemoteCertificateChainErrors))
        {
            var statuses = chain?.ChainStatus.Select(s => s.Status).Distinct().ToList() ?? [];
            if (statuses.Contains(X509ChainStatusFlags.NotTimeValid) && certificate is X509Certificate2 c2)
            {
                problems.Add(c2.NotAfter < DateTime.Now
                    ? $"it expired on {c2.NotAfter.ToUniversalTime():yyyy-MM-dd HH:mm} UTC"
                    : $"it is not valid before {c2.NotBefore.ToUniversalTime():yyyy-MM-dd HH:mm} UTC");
            }

            if (statuses.Contains(X509ChainStatusFlags.UntrustedRoot) || statuses.Contains(X509ChainStatusFlags.PartialChain) || statuses.Count == 0)
            {
                var top = chain?.ChainElements.Count > 0 ? chain.ChainElements[^1].Certificate : null;
                var issuer = SafeText.Clean(top?.Issuer ?? certificate.Issuer, 200);
                problems.Add(customRoots
                    ? $"its chain does not lead to one of TrustedCertificateAuthorities (it was issued by '{issuer}')"
                    : $"its issuer '{issuer}' is not trusted by this machine's certificate store");
            }

            var others = statuses.Except([X509ChainStatusFlags.NotTimeValid, X509ChainStatusFlags.UntrustedRoot, X509ChainStatusFlags.PartialChain, X509ChainStatusFlags.NoError]).ToList();
            if (others.Count > 0)
            {
                problems.Add("its chain has " + string.Join(", ", others));
            }
        }

        return $"the relay's certificate ({Describe(certificate)}) was refused: {string.Join("; ", problems)}";
    }

    /// <summary>Subject and issuer, capped.</summary>
    public static string Describe(X509Certificate certificate) =>
        $"subject '{SafeText.Clean(certificate.Subject, 200)}', issuer '{SafeText.Clean(certificate.Issuer, 200)}'";

    /// <summary>The SHA-256 of the certificate, as PinnedCertificateSha256 takes it.</summary>
    public static string Fingerprint(X509Certificate certificate) => Convert.ToHexString(SHA256.HashData(certificate.GetRawCertData()));
}
