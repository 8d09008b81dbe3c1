namespace SiteLink.Relay.Configuration;

/// <summary>Everything a relay is configured with. Bound from the <c>Relay</c> configuration section.</summary>
public sealed class RelayOptions
{
    /// <summary>The configuration section these options bind from.</summary>
    public const string SectionName = "Relay";

    /// <summary>This relay's identifier, reported to agents. Default: the machine name.</summary>
    public string RelayId { get; set; } = Environment.MachineName;

    /// <summary>The region or point of presence reported to agents. Default: empty.</summary>
    public string Region { get; set; } = "";

    /// <summary>
    /// Where agents connect, as <c>ip:port</c>. Port 0 picks a free port. Default: <c>127.0.0.1:8443</c> (loopback: a
    /// relay is reachable from the network only when its configuration says so, e.g. <c>0.0.0.0:443</c>).
    /// </summary>
    public string AgentListen { get; set; } = "127.0.0.1:8443";

    /// <summary>TLS for the agent port.</summary>
    public RelayTlsOptions Tls { get; set; } = new();

    /// <summary>The authtokens agents may present.</summary>
    public IList<AuthTokenOptions> Tokens { get; } = [];

    /// <summary>The public entry points and the internal endpoints they forward to.</summary>
    public IList<CloudEndpointOptions> CloudEndpoints { get; } = [];

    /// <summary>Limits enforced per token and per session.</summary>
    public RelayLimits Limits { get; set; } = new();

    /// <summary>The admin API (off unless <see cref="AdminOptions.Listen"/> is set).</summary>
    public AdminOptions Admin { get; set; } = new();

    /// <summary>Where the admin API's tenants, tokens, endpoints and subscriptions are kept.</summary>
    public StoreOptions Store { get; set; } = new();

    /// <summary>
    /// When the relay stops, how long tunnelled connections may take to finish after agents were asked to drain
    /// (and cloud endpoints stopped accepting). Default: 30 seconds.
    /// </summary>
    public TimeSpan DrainTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Whether the relay has a control plane (the admin API, or a store): then it may start with no configured token.</summary>
    internal bool HasControlPlane => Admin.Listen is not null || Store.IsConfigured;

    /// <summary>
    /// The oldest SiteLink SDK version an agent may run, as a semantic version (<c>2.1.0</c>, <c>2.1.0-rc.1</c>;
    /// <c>+build</c> metadata is ignored). An agent whose Hello reports an older version — or none, or one that is not a
    /// version — is refused before its session starts, with FAILED_PRECONDITION and trailers naming both versions
    /// (docs/protocol.md), which the SDK treats as permanent (<c>TunnelVersionException</c>). Default: null (or
    /// empty), meaning no minimum. Prereleases come before their release: <c>2.1.0-rc.1</c> is older than <c>2.1.0</c>.
    /// </summary>
    public string? MinimumAgentVersion { get; set; }

    /// <summary>How events are delivered to webhooks: queue bounds, retries, timeouts.</summary>
    public RelayEventOptions Events { get; set; } = new();

    /// <summary>Webhooks the relay delivers events to from its start (more can be set while it runs).</summary>
    public IList<WebhookOptions> Webhooks { get; } = [];

    /// <summary>
    /// A copy to keep for the relay's lifetime: tokens by their SHA-256 only, no certificate password, no webhook secret
    /// (the event hub keeps those it signs with). The secrets themselves are needed once, at start, and are not kept in
    /// memory after it.
    /// </summary>
    internal RelayOptions WithoutSecrets()
    {
        var copy = new RelayOptions
        {
            RelayId = RelayId,
            Region = Region,
            AgentListen = AgentListen,
            Tls = new RelayTlsOptions
            {
                Disabled = Tls.Disabled,
                CertificatePath = Tls.CertificatePath,
                KeyPath = Tls.KeyPath,
                DevelopmentCertificatePath = Tls.DevelopmentCertificatePath,
                AllowDevelopmentCertificateOnNetwork = Tls.AllowDevelopmentCertificateOnNetwork,
                AllowPlaintextOnNetwork = Tls.AllowPlaintextOnNetwork,
            },
            Limits = Limits,
            DrainTimeout = DrainTimeout,
            Store = Store,
            Admin = new AdminOptions { Listen = Admin.Listen, DisableTls = Admin.DisableTls, Jwt = Admin.Jwt },
            MinimumAgentVersion = MinimumAgentVersion,
            Events = Events,
        };
        foreach (var key in Admin.Keys)
        {
            copy.Admin.Keys.Add(new AdminKeyOptions { Name = key.Name, Scope = key.Scope, Sha256 = key.Key is { Length: > 0 } secret ? Security.AuthTokenStore.HashToHex(secret) : key.Sha256 });
        }

        foreach (var webhook in Webhooks)
        {
            copy.Webhooks.Add(webhook.WithoutSecret());
        }

        foreach (var token in Tokens)
        {
            var hashed = new AuthTokenOptions { Name = token.Name, Sha256 = Security.AuthTokenStore.SecretHashOf(token), Tenant = token.Tenant };
            foreach (var pattern in token.Allow)
            {
                hashed.Allow.Add(pattern);
            }

            copy.Tokens.Add(hashed);
        }

        foreach (var endpoint in CloudEndpoints)
        {
            copy.CloudEndpoints.Add(endpoint.WithoutSecret());
        }

        return copy;
    }
}

/// <summary>TLS settings of the agent port.</summary>
public sealed class RelayTlsOptions
{
    /// <summary>
    /// Serve agents over HTTP/2 without TLS. Only for development on loopback; agents must opt in too.
    /// Default: <see langword="false"/>.
    /// </summary>
    public bool Disabled { get; set; }

    /// <summary>A certificate file: PKCS#12 (<c>.pfx</c>) or PEM (with <see cref="KeyPath"/>). Default: none, meaning a generated development certificate.</summary>
    public string? CertificatePath { get; set; }

    /// <summary>The PEM private key of <see cref="CertificatePath"/>, when it is a PEM certificate.</summary>
    public string? KeyPath { get; set; }

    /// <summary>The password of a PKCS#12 certificate. Never logged.</summary>
    public string? CertificatePassword { get; set; }

    /// <summary>
    /// Where the generated development certificate is kept, so its fingerprint stays the same across restarts. The file
    /// is created readable by its owner only (and refused when group or others may read it); it is encrypted with
    /// <see cref="CertificatePassword"/> when one is given. Default: none, meaning a new certificate every start.
    /// </summary>
    public string? DevelopmentCertificatePath { get; set; }

    /// <summary>
    /// Serve the generated development certificate on an address other than loopback. Agents can still trust it
    /// safely by pinning its SHA-256, but nothing else does; the relay logs a warning at start. Default:
    /// <see langword="false"/>: without <see cref="CertificatePath"/> the relay listens on loopback only.
    /// </summary>
    public bool AllowDevelopmentCertificateOnNetwork { get; set; }

    /// <summary>
    /// With <see cref="Disabled"/>, serve plain HTTP/2 on an address other than loopback: authtokens and every
    /// tunnelled byte cross the network unencrypted. The relay logs a warning at start. Default: <see langword="false"/>.
    /// </summary>
    public bool AllowPlaintextOnNetwork { get; set; }
}

/// <summary>An authtoken: who presents it (tenant) and which internal endpoint names it may bind.</summary>
public sealed class AuthTokenOptions
{
    /// <summary>A name for the token, used in logs and errors instead of the secret. Required, unique.</summary>
    public string Name { get; set; } = "";

    /// <summary>The secret itself. Give this or <see cref="Sha256"/>.</summary>
    public string? Token { get; set; }

    /// <summary>The SHA-256 of the secret as 64 hex digits, so the configuration need not hold the secret.</summary>
    public string? Sha256 { get; set; }

    /// <summary>The tenant the token belongs to; endpoint names are per tenant. Required.</summary>
    public string Tenant { get; set; } = "";

    /// <summary>Patterns of endpoint names the token may bind (<c>*</c> any run of characters, <c>?</c> one). At least one.</summary>
    public IList<string> Allow { get; } = [];
}

/// <summary>A public entry point on the relay.</summary>
public sealed class CloudEndpointOptions
{
    /// <summary>A name for this cloud endpoint, used in logs. Required, unique.</summary>
    public string Name { get; set; } = "";

    /// <summary>
    /// The protocol: <c>tcp</c> (a port of its own, bytes as they come), <c>http</c> or <c>https</c> (HTTP requests
    /// routed by their Host header, and for https by the TLS server name, on a listener shared by every endpoint with the
    /// same <see cref="Listen"/> and protocol; TLS terminates at the relay), or <c>tls</c> (TLS connections routed by the
    /// server name of their ClientHello on a shared listener, passed through encrypted: TLS terminates behind the agent).
    /// Default: <c>tcp</c>.
    /// </summary>
    public string Protocol { get; set; } = "tcp";

    /// <summary>
    /// Where public clients connect, as <c>ip:port</c>; port 0 picks a free port. http, https and tls endpoints with the
    /// same address (and protocol) share one listener. Required.
    /// </summary>
    public string Listen { get; set; } = "";

    /// <summary>
    /// http, https, tls: the host names this endpoint answers to, e.g. <c>acme-api.relay.example</c>, or
    /// <c>*.acme.relay.example</c> for every name one label deeper. Case-insensitive; unique per listener.
    /// </summary>
    public IList<string> Hostnames => _hostnames;

    private IList<string> _hostnames = new List<string>();

    /// <summary>
    /// https: the certificate served for <see cref="Hostnames"/>, chosen by the client's TLS server name: PKCS#12
    /// (<c>.pfx</c>) or PEM (with <see cref="KeyPath"/>); one wildcard certificate may serve several endpoints.
    /// </summary>
    public string? CertificatePath { get; set; }

    /// <summary>https: the PEM private key of <see cref="CertificatePath"/>.</summary>
    public string? KeyPath { get; set; }

    /// <summary>https: the password of a PKCS#12 <see cref="CertificatePath"/>. Never logged.</summary>
    public string? CertificatePassword { get; set; }

    /// <summary>
    /// https: mutual TLS — a PEM bundle of the certificate authorities that issue clients' certificates. A client must
    /// present a certificate that chains to one of them (and only them: <c>X509ChainTrustMode.CustomRootTrust</c>), valid
    /// now and for client authentication, or its TLS handshake fails before any request. Its subject and SHA-256
    /// thumbprint are then <c>${client.cert.subject}</c> and <c>${client.cert.sha256}</c> in policy header rules.
    /// Default: none (no client certificate asked for).
    /// </summary>
    public string? ClientCertificateAuthorities { get; set; }

    /// <summary>
    /// http, https: keep the <c>X-Forwarded-For</c>/<c>-Proto</c>/<c>-Host</c> and <c>Forwarded</c> headers a client sends
    /// (appending the relay's view), for a relay behind a proxy you trust. Default: <see langword="false"/>: they are
    /// replaced by what the relay saw, so a client cannot claim another address.
    /// </summary>
    public bool TrustForwardedHeaders { get; set; }

    /// <summary>The tenant whose internal endpoint this forwards to. Required.</summary>
    public string Tenant { get; set; } = "";

    /// <summary>The internal endpoint name an agent of <see cref="Tenant"/> binds. Required.</summary>
    public string Endpoint { get; set; } = "";

    /// <summary>Public connections this endpoint carries at once; more are refused (reset) and counted. Default: 1024.</summary>
    public int MaxConnections { get; set; } = 1024;

    /// <summary>
    /// Public connections one client address carries at once on this endpoint (IPv6 clients are counted per /64, the
    /// block one host usually holds). More are refused (reset) and counted. Default: 256.
    /// </summary>
    public int MaxConnectionsPerClientIp { get; set; } = 256;

    /// <summary>
    /// A tunnelled connection that carries no byte in either direction for this long is closed (the public client gets
    /// a FIN, the agent's stream ends with <c>DEADLINE_EXCEEDED</c>). At most 24 days; <see cref="Timeout.InfiniteTimeSpan"/>
    /// turns it off. Default: 10 minutes.
    /// </summary>
    public TimeSpan IdleTimeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>
    /// http, https: how long a tunnelled connection the relay keeps for reuse between requests may stay unused before it
    /// is closed. Keep-alive saves a connection set-up per request; an agent that drains waits for its idle
    /// connections up to this long. At most 24 days. Default: 15 seconds.
    /// </summary>
    public TimeSpan KeepAliveTimeout { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>Ordered rules evaluated before a connection or request reaches the agent (IP ranges, rate limits, basic auth, headers, deny).</summary>
    public TrafficPolicyOptions Policy => _policy;

    private TrafficPolicyOptions _policy = new();

    /// <summary>
    /// The compiled <see cref="Policy"/> (set by the validator; none when the policy is empty), replaced whole when the
    /// configuration file's policy changes: each connection and request reads it once.
    /// </summary>
    internal Policy.TrafficPolicy? CompiledPolicy
    {
        get => Volatile.Read(ref _compiledPolicy);
        set => Volatile.Write(ref _compiledPolicy, value);
    }

    private Policy.TrafficPolicy? _compiledPolicy;

    /// <summary>The policy <see cref="CompiledPolicy"/> was compiled from, as text (<see cref="Policy.TrafficPolicy.Fingerprint"/>).</summary>
    internal string? PolicyFingerprint { get; set; }

    /// <summary>A copy without <see cref="CertificatePassword"/>, for the relay to keep.</summary>
    internal CloudEndpointOptions WithoutSecret()
    {
        var copy = (CloudEndpointOptions)MemberwiseClone();
        copy.CertificatePassword = null;
        return copy;
    }

    /// <summary>
    /// A copy without <see cref="CertificatePassword"/> for an endpoint applied while the relay runs: its host names and
    /// its policy's rule lists are its own (the caller may go on changing theirs), and it has no compiled policy yet.
    /// </summary>
    internal CloudEndpointOptions RuntimeCopy()
    {
        var copy = WithoutSecret();
        copy._hostnames = [.. Hostnames];
        copy._policy = Policy.Copy();
        copy.CompiledPolicy = null;
        copy.PolicyFingerprint = null;
        return copy;
    }

    internal bool IsHttp => string.Equals(Protocol, "http", StringComparison.OrdinalIgnoreCase) || string.Equals(Protocol, "https", StringComparison.OrdinalIgnoreCase);

    internal bool IsHttps => string.Equals(Protocol, "https", StringComparison.OrdinalIgnoreCase);

    internal bool IsTls => string.Equals(Protocol, "tls", StringComparison.OrdinalIgnoreCase);
}

/// <summary>
/// Limits with their defaults. Each refusal says which limit was hit; docs/architecture.md gives the worst-case memory
/// they allow per session, per token and per unauthenticated connection.
/// </summary>
public sealed class RelayLimits
{
    /// <summary>
    /// Concurrent sessions one token may hold. The same number of the token's control streams may be waiting for their
    /// Hello besides. Default: 16.
    /// </summary>
    public int MaxSessionsPerToken { get; set; } = 16;

    /// <summary>
    /// tls cloud endpoints: how long a new connection may take to send its whole ClientHello (the relay reads it to
    /// route the connection); slower ones are closed. Default: 5 seconds.
    /// </summary>
    public TimeSpan ClientHelloTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// tls cloud endpoints: connections per listener whose ClientHello is still being read (each holds a buffer of up
    /// to 17 KiB); more are reset. Default: 1024.
    /// </summary>
    public int MaxPendingClientHellos { get; set; } = 1024;

    /// <summary>Endpoints one session may bind. Default: 256.</summary>
    public int MaxBindsPerSession { get; set; } = 256;

    /// <summary>Tunnelled connections one session may carry at once. Default: 1024.</summary>
    public int MaxConcurrentStreamsPerSession { get; set; } = 1024;

    /// <summary>Connections offered to a session that it has not yet opened or refused. Default: 256.</summary>
    public int MaxPendingStreamsPerSession { get; set; } = 256;

    /// <summary>
    /// Control messages queued for one agent and not yet taken by its connection (an agent that stops reading fills
    /// it). A session whose queue is full is ended. Default: 4096.
    /// </summary>
    public int MaxControlQueueMessages { get; set; } = 4096;

    /// <summary>The same queue's limit in bytes. Default: 1 MiB.</summary>
    public int MaxControlQueueBytes { get; set; } = 1024 * 1024;

    /// <summary>
    /// How long a parked data stream may wait for a connection before the relay releases it (the agent parks a new one).
    /// Default: 5 minutes.
    /// </summary>
    public TimeSpan ParkedStreamLifetime { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// HTTP/2 receive window of each data stream on the agent port: what an agent may send on one tunnelled connection
    /// before the relay passed it on. It caps one connection's throughput from the agent at window / round trip
    /// (8 MiB at 20 ms ≈ 3 Gbit/s). Default: 8 MiB.
    /// </summary>
    public int AgentStreamWindow { get; set; } = 8 * 1024 * 1024;

    /// <summary>
    /// HTTP/2 receive window of each agent connection: the most data one agent connection (a session and all its
    /// streams) can leave unread at the relay, e.g. behind public clients that stop reading. Default: 32 MiB.
    /// </summary>
    public int AgentConnectionWindow { get; set; } = 32 * 1024 * 1024;

    /// <summary>HTTP/2 connections the agent port holds at once, from anyone. Default: 20000.</summary>
    public int MaxAgentConnections { get; set; } = 20000;

    /// <summary>
    /// HTTP/2 connections one client address holds on the agent port at once (IPv6 per /64); more are closed at once.
    /// Default: 128.
    /// </summary>
    public int MaxAgentConnectionsPerIp { get; set; } = 128;

    /// <summary>Control streams from one client address that have authenticated but not yet said Hello. Default: 32.</summary>
    public int MaxPendingHellosPerIp { get; set; } = 32;

    /// <summary>
    /// How long a new agent-port connection may take (TLS handshake included) to make its first authenticated call;
    /// then it is closed. Default: 10 seconds.
    /// </summary>
    public TimeSpan PreAuthenticationTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Calls one agent-port connection may waste in a burst — failed authentication, refused or unknown calls, streams
    /// the client resets before they did anything (HTTP/2 rapid reset) — before the connection is closed. The budget
    /// refills at a tenth of this per second. Default: 200.
    /// </summary>
    public int MaxFailedCallsPerConnection { get; set; } = 200;

    /// <summary>
    /// After a connection was closed for exhausting <see cref="MaxFailedCallsPerConnection"/>, its client address (IPv6:
    /// its /64) may not open agent-port connections for this long, so a flood cannot simply reconnect and go on (each
    /// reconnection costs the relay a TLS handshake). Zero turns it off. Default: 10 seconds.
    /// </summary>
    public TimeSpan AbusiveAddressCooldown { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Idle Stream calls one session may park at the relay, so that a new public connection is paired at once instead
    /// of after an OpenStream round trip. 0 turns parking off. Default: 32.
    /// </summary>
    public int MaxParkedStreamsPerSession { get; set; } = 32;

    /// <summary>Largest data frame, in bytes, a session may send. Default: 64 KiB.</summary>
    public int MaxFrameSize { get; set; } = 64 * 1024;

    /// <summary>
    /// Carry a session's tunnelled connections on one multiplexed data call (protocol version 2) when its agent speaks
    /// it; false makes every agent use a Stream call per connection (version 1). Default: true.
    /// </summary>
    public bool Multiplexing { get; set; } = true;

    /// <summary>
    /// Multiplexed connections: what an agent may send on one connection before the relay passed it on (its credit),
    /// so the most one connection whose public client stops reading holds here. Together a session's connections hold
    /// at most <see cref="AgentConnectionWindow"/> (then the relay stops reading the session's data call until some is
    /// passed on). Caps one connection's throughput from the agent at window / round trip. Default: 4 MiB.
    /// </summary>
    public int MuxWindow { get; set; } = 4 * 1024 * 1024;

    /// <summary>How long an offered connection waits for the agent to open its stream. Default: 10 seconds.</summary>
    public TimeSpan PendingStreamTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// How long a session may send nothing before the relay drops it, when its agent does not declare its heartbeat
    /// (agents declare interval + tolerance in Hello, and that is used instead). Default: 25 seconds.
    /// </summary>
    public TimeSpan SessionSilenceTimeout { get; set; } = TimeSpan.FromSeconds(25);

    /// <summary>How long a new control stream may take to say Hello. Default: 10 seconds.</summary>
    public TimeSpan HelloTimeout { get; set; } = TimeSpan.FromSeconds(10);
}
