namespace SiteLink;

/// <summary>The steps of a <see cref="TunnelDiagnostics"/> run, in the order they run. New values may be added.</summary>
public enum TunnelDiagnosticStepKind
{
    /// <summary>Resolving the first host the agent connects to: the proxy's when a proxy is used, else the relay's.</summary>
    Dns = 0,

    /// <summary>The TCP connection to that host (the proxy, or the relay), each resolved address in turn.</summary>
    TcpConnect = 1,

    /// <summary>The proxy's <c>CONNECT</c> to the relay (only when a proxy is used).</summary>
    ProxyConnect = 2,

    /// <summary>The TLS handshake with the relay, checked with the same trust as a session (pin, custom roots or the system store).</summary>
    TlsHandshake = 3,

    /// <summary>HTTP/2, agreed by ALPN in the TLS handshake.</summary>
    Http2 = 4,

    /// <summary>The session handshake: the authtoken, the agent's version and the relay's permission (Hello, Welcome).</summary>
    Authentication = 5,

    /// <summary>A heartbeat round trip on the control stream, then a graceful close.</summary>
    Heartbeat = 6,
}
