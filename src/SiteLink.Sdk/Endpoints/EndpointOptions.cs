using System.Net.Security;
using SiteLink.Internal;

namespace SiteLink;

/// <summary>
/// Settings of one endpoint, whatever serves it: passed to <see cref="ITunnelSession.ForwardAsync(string, Uri, EndpointOptions?, CancellationToken)"/>,
/// <see cref="ITunnelSession.ListenAsync(string, EndpointOptions?, CancellationToken)"/> and
/// <see cref="ITunnelSession.BindHandlerAsync(string, TunnelConnectionHandler, EndpointOptions?, CancellationToken)"/>,
/// and the host builder's <c>AddForward</c> and <c>AddConnectionHandler</c>; a configured endpoint
/// (<see cref="ForwardEndpointOptions"/>) carries the same settings. The session copies it when the endpoint is
/// declared: changing it afterwards changes nothing. Settings later versions add appear here (and on
/// <see cref="ForwardEndpointOptions"/>), with defaults that keep today's behaviour.
/// </summary>
public sealed class EndpointOptions
{
    /// <summary>The longest <see cref="Description"/>, in characters.</summary>
    public static int MaxDescriptionLength => EndpointDescriptionRules.MaxDescriptionLength;

    /// <summary>The most <see cref="Metadata"/> entries.</summary>
    public static int MaxMetadataEntries => EndpointDescriptionRules.MaxMetadataEntries;

    /// <summary>The longest <see cref="Metadata"/> key (letters, digits, <c>-</c>, <c>_</c>, <c>.</c>, <c>:</c>, <c>/</c>).</summary>
    public static int MaxMetadataKeyLength => EndpointDescriptionRules.MaxMetadataKeyLength;

    /// <summary>The longest <see cref="Metadata"/> value, in characters.</summary>
    public static int MaxMetadataValueLength => EndpointDescriptionRules.MaxMetadataValueLength;

    /// <summary>
    /// A one-line description for the vendor's operators (e.g. <c>"Billing database, site 3"</c>), sent to the relay
    /// with the bind. At most <see cref="MaxDescriptionLength"/> characters, no control characters. Default: none.
    /// </summary>
    public string? Description { get; set; }

    /// <summary>
    /// Key/value pairs sent to the relay with the bind (e.g. the customer's site or the service's version), for the
    /// vendor's automation and operators. At most <see cref="MaxMetadataEntries"/> entries; keys of at most
    /// <see cref="MaxMetadataKeyLength"/> letters, digits, <c>-</c>, <c>_</c>, <c>.</c>, <c>:</c> or <c>/</c>; values of at
    /// most <see cref="MaxMetadataValueLength"/> characters without control characters. Default: empty.
    /// </summary>
    public IDictionary<string, string> Metadata { get; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>
    /// Join a pool: several sessions of the same tenant (agents on other hosts, other processes) bind the same name, and
    /// the relay spreads new public connections across them (the member with the fewest active connections, ties at
    /// random), and stops sending any to a member the moment it knows it is gone (disconnect, heartbeat silence,
    /// drain): connections in flight on that member are the only ones lost. Every member binds with pooling on; a bind
    /// that differs from the name's current holders is refused with <see cref="BindErrorCode.PoolingMismatch"/>.
    /// Default: off, and a second session binding the name is refused with <see cref="BindErrorCode.NameTaken"/>.
    /// </summary>
    public bool Pooling { get; set; }

    /// <summary>
    /// Forward endpoints: send the upstream a PROXY protocol header (HAProxy's, version 1 text or version 2 binary)
    /// before the connection's first byte, carrying the public client's address and port (and, in version 2, the TLS
    /// server name the client asked for), for upstreams that log or filter by client address (nginx
    /// <c>listen … proxy_protocol</c>, haproxy <c>accept-proxy</c>, PostgreSQL behind such a proxy). Only for upstreams
    /// that expect it: any other reads the header as garbage. Default: <see cref="ProxyProtocolVersion.None"/>.
    /// </summary>
    public ProxyProtocolVersion ProxyProtocol { get; set; }

    /// <summary>
    /// Forward endpoints: terminate TLS at the agent with these options (at least a
    /// <see cref="SslServerAuthenticationOptions.ServerCertificate"/>): public clients' TLS connections, passed through the
    /// relay encrypted by a <c>tls</c> cloud endpoint, are decrypted only here, inside the customer's network, and
    /// forwarded in plain to the upstream. (An in-process handler terminates TLS itself by wrapping
    /// <see cref="TunnelConnection.Stream"/> in an <see cref="SslStream"/>.) Default: none, bytes pass as they come.
    /// </summary>
    public SslServerAuthenticationOptions? TlsServer { get; set; }

    /// <summary>Forward endpoints with a <c>tls://</c> or <c>https://</c> upstream: how the agent verifies it.</summary>
    public UpstreamTlsOptions UpstreamTls { get; private set; } = new();

    /// <summary>Why these settings cannot be used, or null when they can.</summary>
    internal string? FindProblem() =>
        ProxyProtocol is not (ProxyProtocolVersion.None or ProxyProtocolVersion.V1 or ProxyProtocolVersion.V2)
            ? $"ProxyProtocol {(int)ProxyProtocol} is not None, V1 or V2"
            : TlsServer is { ServerCertificate: null, ServerCertificateContext: null, ServerCertificateSelectionCallback: null }
                ? "TlsServer has no server certificate"
                : UpstreamTls.FindProblem() ?? EndpointDescriptionRules.FindProblem(Description, Metadata);

    /// <summary>A copy the session keeps: changing this object later changes nothing.</summary>
    internal EndpointOptions Snapshot() => Copy(Description, Metadata, Pooling, ProxyProtocol, TlsServer, UpstreamTls);

    internal static EndpointOptions Copy(string? description, IEnumerable<KeyValuePair<string, string>> metadata, bool pooling, ProxyProtocolVersion proxyProtocol,
        SslServerAuthenticationOptions? tlsServer, UpstreamTlsOptions upstreamTls)
    {
        var copy = new EndpointOptions { Description = description, Pooling = pooling, ProxyProtocol = proxyProtocol, TlsServer = tlsServer, UpstreamTls = upstreamTls.Snapshot() };
        foreach (var (key, value) in metadata)
        {
            copy.Metadata[key] = value;
        }

        return copy;
    }
}

/// <summary>Which PROXY protocol header a forward endpoint sends its upstream (<see cref="EndpointOptions.ProxyProtocol"/>).</summary>
public enum ProxyProtocolVersion
{
    /// <summary>None: the upstream sees the agent's address.</summary>
    None = 0,

    /// <summary>Version 1, a text line (<c>PROXY TCP4 …</c>).</summary>
    V1 = 1,

    /// <summary>Version 2, binary, with the TLS server name in a TLV when there is one.</summary>
    V2 = 2,
}
