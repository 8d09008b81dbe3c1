namespace SiteLink.Diagnostics;

/// <summary>What an operator can do about each kind of permanent failure, in plain words (logged with the fault).</summary>
internal static class FaultAdvice
{
    public static string For(TunnelError error) => error switch
    {
        TunnelError.AuthenticationFailed =>
            "check the authtoken (SiteLink:AuthToken, or SITELINK_AUTHTOKEN for the standalone agent) against the one the relay's operator issued; it may have been revoked or replaced.",
        TunnelError.CertificateRejected =>
            "the relay's TLS certificate is not trusted. For a relay with a self-signed certificate, set SiteLink:PinnedCertificateSha256 (--pin) to the SHA-256 the relay prints at start; for a private CA, or a TLS-inspecting proxy that replaces the certificate with its own, give that CA in SiteLink:TrustedCertificateAuthorities (--ca-file); otherwise make sure this machine trusts the relay's certificate authority.",
        TunnelError.ProxyAuthenticationFailed =>
            "the HTTP proxy between this machine and the relay wants credentials: set SiteLink:Proxy:UserName and SiteLink:Proxy:Password (SiteLink__Proxy__UserName and SiteLink__Proxy__Password in sitelink-agent's environment), or user:password@ in the proxy's URL, as the network team gives them.",
        TunnelError.ProxyFailed =>
            "the HTTP proxy between this machine and the relay refused the tunnel (its answer is named above): ask the network team to allow HTTPS CONNECT to the relay's host and port, or set SiteLink:Proxy:UseEnvironment=false (--no-proxy) if this machine may connect directly. Run 'sitelink-agent diagnose' for a step-by-step report.",
        TunnelError.VersionNotSupported =>
            "the relay does not accept this agent's version (its protocol, or an SDK older than the relay's minimum, as named above): upgrade the agent (or ask the relay's operator which versions it supports); restarting it unchanged fails the same way.",
        TunnelError.PermissionDenied =>
            "the relay refused this agent (a permission or a limit, named above); ask the relay's operator, then restart the agent.",
        TunnelError.ProtocolError =>
            "the relay broke the protocol; check that the relay URL points to a SiteLink relay, and report it to the relay's operator.",
        _ => "see the message above; the session must be restarted once the cause is fixed.",
    };
}
