using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace SiteLink;

/// <summary>
/// How a forward endpoint with a <c>tls://</c> or <c>https://</c> upstream verifies it (<see cref="EndpointOptions.UpstreamTls"/>):
/// by default against the system's trust store and the upstream's host name, like any TLS client.
/// </summary>
public sealed class UpstreamTlsOptions
{
    /// <summary>The name sent as SNI and checked against the upstream's certificate. Default: the upstream URI's host.</summary>
    public string? ServerName { get; set; }

    /// <summary>
    /// Trust exactly the certificate whose SHA-256 (64 hex digits) this is, whoever issued it: for an internal service
    /// with a self-signed certificate. Default: none.
    /// </summary>
    public string? PinnedCertificateSha256 { get; set; }

    /// <summary>
    /// Trust certificates issued by these authorities instead of the system's (a company's private CA); the host name is
    /// still checked. Default: empty, meaning the system trust store.
    /// </summary>
    public X509Certificate2Collection TrustedCertificateAuthorities { get; } = [];

    /// <summary>Client certificates offered to an upstream that asks for one (mutual TLS). Default: none.</summary>
    public X509Certificate2Collection ClientCertificates { get; } = [];

    /// <summary>
    /// Accept any certificate the upstream presents, unverified: the connection is encrypted but not authenticated. Only
    /// for development; it is logged at every connection. Default: <see langword="false"/>.
    /// </summary>
    public bool AllowUntrustedCertificate { get; set; }

    internal UpstreamTlsOptions Snapshot()
    {
        var copy = new UpstreamTlsOptions { ServerName = ServerName, PinnedCertificateSha256 = PinnedCertificateSha256, AllowUntrustedCertificate = AllowUntrustedCertificate };
        copy.TrustedCertificateAuthorities.AddRange(TrustedCertificateAuthorities);
        copy.ClientCertificates.AddRange(ClientCertificates);
        return copy;
    }

    internal string? FindProblem() =>
        PinnedCertificateSha256 is { } pin && (pin.Length != 64 || !pin.All(Uri.IsHexDigit))
            ? "UpstreamTls.PinnedCertificateSha256 is not 64 hex digits"
            : null;

    /// <summary>The SslStream client options for <paramref name="host"/>.</summary>
    internal SslClientAuthenticationOptions ClientOptions(string host)
    {
        var options = new SslClientAuthenticationOptions
        {
            TargetHost = ServerName ?? host,
            ClientCertificates = ClientCertificates.Count > 0 ? ClientCertificates : null,
        };
        if (TrustedCertificateAuthorities.Count > 0 && PinnedCertificateSha256 is null && !AllowUntrustedCertificate)
        {
            var policy = new X509ChainPolicy { TrustMode = X509ChainTrustMode.CustomRootTrust, RevocationMode = X509RevocationMode.NoCheck };
            policy.CustomTrustStore.AddRange(TrustedCertificateAuthorities);
            options.CertificateChainPolicy = policy;
        }

        var pin = PinnedCertificateSha256;
        var allowUntrusted = AllowUntrustedCertificate;
        options.RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
            allowUntrusted
            || (pin is not null && certificate is not null && string.Equals(certificate.GetCertHashString(HashAlgorithmName.SHA256), pin, StringComparison.OrdinalIgnoreCase))
            || (pin is null && errors == SslPolicyErrors.None);
        return options;
    }
}
