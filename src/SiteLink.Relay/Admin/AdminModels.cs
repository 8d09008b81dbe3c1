using System.ComponentModel;
using SiteLink.Relay.Configuration;

namespace SiteLink.Relay.Admin;

/// <summary>One page of a listing.</summary>
/// <param name="Items">The page's items.</param>
/// <param name="Next">Pass as <c>cursor</c> for the next page; null on the last.</param>
internal sealed record Page<T>(IReadOnlyList<T> Items, string? Next);

/// <summary>A tenant: one of the vendor's customers. Tokens, endpoints and subscriptions belong to one.</summary>
/// <param name="Id">Lower-case letters, digits and '-', 1 to 63 characters.</param>
/// <param name="DisplayName">A name for people.</param>
/// <param name="Source"><c>api</c> (managed here) or <c>config</c> (from the relay's configuration file: read-only here).</param>
/// <param name="CreatedAt">When it was created (null for configured ones).</param>
/// <param name="Version">Its version, also its ETag (0 for configured ones).</param>
internal sealed record TenantInfo(string Id, string DisplayName, string Source, DateTimeOffset? CreatedAt, long Version);

/// <summary>A tenant to create.</summary>
/// <param name="Id">Lower-case letters, digits and '-', 1 to 63 characters.</param>
/// <param name="DisplayName">A name for people (at most 200 characters). Default: the id.</param>
internal sealed record TenantCreate(string Id, string? DisplayName);

/// <summary>An authtoken agents present. Its secret is never shown again after creation.</summary>
/// <param name="Name">Its name (used in logs and the audit log instead of the secret).</param>
/// <param name="Tenant">The tenant whose agents use it.</param>
/// <param name="Allow">The internal endpoint names it may bind (patterns: <c>*</c> any run, <c>?</c> one character).</param>
/// <param name="ExpiresAt">When it stops working (its sessions end then); null: never.</param>
/// <param name="RevokedAt">When it was revoked; null while in force.</param>
/// <param name="Active">Whether agents can use it now.</param>
/// <param name="Source"><c>api</c> or <c>config</c>.</param>
/// <param name="CreatedAt">When it was created.</param>
/// <param name="Version">Its version, also its ETag.</param>
internal sealed record TokenInfo(string Name, string Tenant, IReadOnlyList<string> Allow, DateTimeOffset? ExpiresAt, DateTimeOffset? RevokedAt, bool Active, string Source, DateTimeOffset? CreatedAt, long Version);

/// <summary>An authtoken to create.</summary>
/// <param name="Name">Lower-case letters, digits, '-', '_' and '.', 1 to 64 characters; unique on the relay.</param>
/// <param name="Tenant">An existing tenant.</param>
/// <param name="Allow">1 to 32 patterns of internal endpoint names it may bind.</param>
/// <param name="ExpiresAt">Optional expiry.</param>
internal sealed record TokenCreate(string Name, string Tenant, IReadOnlyList<string> Allow, DateTimeOffset? ExpiresAt);

/// <summary>New settings for an authtoken (its secret stays). Sessions using it end when its allowed names change.</summary>
/// <param name="Allow">1 to 32 patterns of internal endpoint names it may bind.</param>
/// <param name="ExpiresAt">Optional expiry.</param>
internal sealed record TokenUpdate(IReadOnlyList<string> Allow, DateTimeOffset? ExpiresAt);

/// <summary>A created authtoken and its secret: shown this once, stored only as a hash.</summary>
/// <param name="Token">The token.</param>
/// <param name="Secret">The secret agents present (<c>SITELINK_AUTHTOKEN</c>). Keep it: it cannot be shown again.</param>
internal sealed record TokenCreated(TokenInfo Token, string Secret);

/// <summary>
/// A cloud endpoint: a public entry point on the relay and the tenant's internal endpoint it forwards to. The fields
/// are the relay configuration's (<c>Relay:CloudEndpoints</c>; docs/operations.md), as JSON.
/// </summary>
internal sealed record EndpointSpec
{
    /// <summary>Lower-case letters, digits, '-', '_' and '.'; unique on the relay.</summary>
    public required string Name { get; init; }

    /// <summary>An existing tenant.</summary>
    public required string Tenant { get; init; }

    /// <summary>The internal endpoint name an agent of the tenant binds.</summary>
    public required string Endpoint { get; init; }

    /// <summary><c>tcp</c>, <c>http</c>, <c>https</c> or <c>tls</c>. Default: <c>tcp</c>.</summary>
    [DefaultValue("tcp")]
    public string Protocol { get; init; } = "tcp";

    /// <summary>Where public clients connect, <c>ip:port</c> (port 0: any free port; http, https and tls endpoints share a listener per address).</summary>
    public required string Listen { get; init; }

    /// <summary>http, https, tls: the host names routed here.</summary>
    public IReadOnlyList<string>? Hostnames { get; init; }

    /// <summary>https: the certificate file (PEM with <see cref="KeyPath"/>, or an unencrypted PKCS#12) on the relay's host.</summary>
    public string? CertificatePath { get; init; }

    /// <summary>https: the PEM private key file on the relay's host.</summary>
    public string? KeyPath { get; init; }

    /// <summary>https: a PEM bundle of the CAs that issue clients' certificates (mutual TLS).</summary>
    public string? ClientCertificateAuthorities { get; init; }

    /// <summary>http, https: keep X-Forwarded-* headers clients send. Default: false.</summary>
    public bool TrustForwardedHeaders { get; init; }

    /// <summary>Public connections at once. Default: 1024.</summary>
    public int? MaxConnections { get; init; }

    /// <summary>Public connections per client address at once. Default: 256.</summary>
    public int? MaxConnectionsPerClientIp { get; init; }

    /// <summary>Close a tunnelled connection idle this long (<c>hh:mm:ss</c>; at most 24 days, or <c>-00:00:00.001</c>: never). Default: 00:10:00.</summary>
    public TimeSpan? IdleTimeout { get; init; }

    /// <summary>http, https: keep idle tunnelled connections for reuse this long (at most 24 days). Default: 00:00:15.</summary>
    public TimeSpan? KeepAliveTimeout { get; init; }

    /// <summary>Traffic policy: rules run before a connection or request reaches the agent.</summary>
    public TrafficPolicyOptions? Policy { get; init; }

    /// <summary>The relay's options for this endpoint.</summary>
    public CloudEndpointOptions ToOptions()
    {
        var options = new CloudEndpointOptions
        {
            Name = Name,
            Tenant = Tenant,
            Endpoint = Endpoint,
            Protocol = Protocol,
            Listen = Listen,
            CertificatePath = CertificatePath,
            KeyPath = KeyPath,
            ClientCertificateAuthorities = ClientCertificateAuthorities,
            TrustForwardedHeaders = TrustForwardedHeaders,
        };
        foreach (var hostname in Hostnames ?? [])
        {
            options.Hostnames.Add(hostname);
        }

        options.MaxConnections = MaxConnections ?? options.MaxConnections;
        options.MaxConnectionsPerClientIp = MaxConnectionsPerClientIp ?? options.MaxConnectionsPerClientIp;
        options.IdleTimeout = IdleTimeout ?? options.IdleTimeout;
        options.KeepAliveTimeout = KeepAliveTimeout ?? options.KeepAliveTimeout;
        if (Policy is not null)
        {
            options.Policy.OnConnect.AddRange(Policy.OnConnect);
            options.Policy.OnHttpRequest.AddRange(Policy.OnHttpRequest);
            options.Policy.OnHttpResponse.AddRange(Policy.OnHttpResponse);
        }

        return options;
    }

    /// <summary>
    /// The endpoint as the API shows it: never an oidc rule's client secret; to read-only callers (who cannot write it
    /// back) not the basic-auth password hashes nor the values of added headers either (one may carry a credential the
    /// relay adds for the service).
    /// </summary>
    public EndpointSpec WithoutSecrets(bool readOnly)
    {
        var rules = Policy is null ? [] : Policy.OnConnect.Concat(Policy.OnHttpRequest).Concat(Policy.OnHttpResponse).ToList();
        if (!rules.Any(r => r.ClientSecret is not null || (readOnly && (r.Users.Count > 0 || r.Headers.Count > 0))))
        {
            return this;
        }

        // A copy: the policy shown is the running endpoint's own.
        var policy = ControlPlane.StoreJson.Read<TrafficPolicyOptions>(ControlPlane.StoreJson.Write(Policy))!;
        foreach (var rule in policy.OnConnect.Concat(policy.OnHttpRequest).Concat(policy.OnHttpResponse))
        {
            rule.ClientSecret = null;
            if (readOnly)
            {
                foreach (var user in rule.Users)
                {
                    user.PasswordHash = Hidden;
                }

                foreach (var name in rule.Headers.Keys.ToList())
                {
                    rule.Headers[name] = Hidden;
                }
            }
        }

        return this with { Policy = policy };
    }

    /// <summary>What read-only callers see in place of a value they may not read.</summary>
    public const string Hidden = "(hidden from read-only credentials)";

    /// <summary>A configured endpoint, as the API shows it.</summary>
    public static EndpointSpec From(CloudEndpointOptions options) => new()
    {
        Name = options.Name,
        Tenant = options.Tenant,
        Endpoint = options.Endpoint,
        Protocol = options.Protocol,
        Listen = options.Listen,
        Hostnames = options.Hostnames.Count == 0 ? null : [.. options.Hostnames],
        CertificatePath = options.CertificatePath,
        KeyPath = options.KeyPath,
        ClientCertificateAuthorities = options.ClientCertificateAuthorities,
        TrustForwardedHeaders = options.TrustForwardedHeaders,
        MaxConnections = options.MaxConnections,
        MaxConnectionsPerClientIp = options.MaxConnectionsPerClientIp,
        IdleTimeout = options.IdleTimeout,
        KeepAliveTimeout = options.KeepAliveTimeout,
        Policy = options.Policy.IsEmpty ? null : options.Policy,
    };
}

/// <summary>A cloud endpoint and its state on this relay.</summary>
/// <param name="Spec">Its settings.</param>
/// <param name="Source"><c>api</c> or <c>config</c>.</param>
/// <param name="Address">The address it listens on here (the real port when <c>Listen</c> said 0); null when not listening.</param>
/// <param name="ActiveConnections">Public connections it carries now on this relay.</param>
/// <param name="Problem">Why it is not listening here, when it is not.</param>
/// <param name="CreatedAt">When it was created.</param>
/// <param name="Version">Its version, also its ETag.</param>
internal sealed record EndpointInfo(EndpointSpec Spec, string Source, string? Address, int ActiveConnections, string? Problem, DateTimeOffset? CreatedAt, long Version);

/// <summary>An agent session connected to this relay.</summary>
/// <param name="Id">The session id.</param>
/// <param name="Tenant">Its tenant.</param>
/// <param name="Token">The authtoken's name.</param>
/// <param name="AgentId">The agent's client id (kept across reconnects).</param>
/// <param name="SdkVersion">The SDK version the agent reported.</param>
/// <param name="Metadata">What the agent declared about itself.</param>
/// <param name="Relay">This relay's id.</param>
/// <param name="RemoteAddress">The agent connection's address as the relay sees it.</param>
/// <param name="RttMs">The agent connection's round-trip time (TCP's own estimate), in milliseconds, where known.</param>
/// <param name="ConnectedAt">When the session started.</param>
/// <param name="ActiveStreams">Tunnelled connections it carries now.</param>
/// <param name="Binds">The internal endpoints it serves.</param>
internal sealed record SessionInfo(string Id, string Tenant, string Token, string AgentId, string SdkVersion, IReadOnlyDictionary<string, string> Metadata, string Relay,
    string RemoteAddress, double? RttMs, DateTimeOffset ConnectedAt, int ActiveStreams, IReadOnlyList<SessionBind> Binds);

/// <summary>An internal endpoint a session serves.</summary>
/// <param name="Name">The endpoint name.</param>
/// <param name="Description">What the agent said it is.</param>
/// <param name="Metadata">What the agent declared about it.</param>
internal sealed record SessionBind(string Name, string? Description, IReadOnlyDictionary<string, string> Metadata);

/// <summary>Public connections a cloud endpoint carries on this relay now.</summary>
/// <param name="Endpoint">The cloud endpoint.</param>
/// <param name="Tenant">Its tenant.</param>
/// <param name="Active">Connections open now.</param>
internal sealed record ConnectionCount(string Endpoint, string Tenant, int Active);

/// <summary>A webhook subscription: the tenant's events POSTed to a URL, signed.</summary>
/// <param name="Id">Its id.</param>
/// <param name="Tenant">The tenant whose events it receives (<c>*</c>: every tenant's).</param>
/// <param name="Url">Where events are POSTed.</param>
/// <param name="Events">The event types it receives.</param>
/// <param name="Source"><c>api</c> or <c>config</c>.</param>
/// <param name="CreatedAt">When it was created.</param>
/// <param name="Version">Its version, also its ETag.</param>
internal sealed record SubscriptionInfo(string Id, string Tenant, string Url, IReadOnlyList<string> Events, string Source, DateTimeOffset? CreatedAt, long Version);

/// <summary>A webhook subscription to create.</summary>
/// <param name="Tenant">An existing tenant, or <c>*</c> for every tenant's events.</param>
/// <param name="Url">An absolute http or https URL.</param>
/// <param name="Events">1 to 8 event types (session.connected, session.disconnected, session.reconnected, endpoint.bound, endpoint.unbound, connection.refused, token.revoked, agent.version_refused).</param>
internal sealed record SubscriptionCreate(string Tenant, string Url, IReadOnlyList<string> Events);

/// <summary>A created subscription and its signing secret: shown this once.</summary>
/// <param name="Subscription">The subscription.</param>
/// <param name="Secret">The HMAC-SHA256 key deliveries are signed with (<c>SiteLink-Signature</c>).</param>
internal sealed record SubscriptionCreated(SubscriptionInfo Subscription, string Secret);

/// <summary>An event that could not be delivered.</summary>
/// <param name="Id">Its number.</param>
/// <param name="Subscription">The subscription.</param>
/// <param name="Tenant">The event's tenant.</param>
/// <param name="EventId">The CloudEvents id.</param>
/// <param name="EventType">The event type.</param>
/// <param name="Payload">The CloudEvents JSON that was to be delivered.</param>
/// <param name="Error">Why it was not.</param>
/// <param name="Attempts">Delivery attempts made.</param>
/// <param name="At">When it was given up.</param>
internal sealed record DeadLetterInfo(long Id, string Subscription, string Tenant, string EventId, string EventType, string Payload, string Error, int Attempts, DateTimeOffset At);

/// <summary>One event the relay published (the last 1,000 are kept in memory), as webhooks receive it.</summary>
/// <param name="Id">The CloudEvents id.</param>
/// <param name="Type">The event type.</param>
/// <param name="Tenant">Its tenant.</param>
/// <param name="Subject">What it is about.</param>
/// <param name="Time">When.</param>
/// <param name="Data">Its details (the CloudEvents <c>data</c>).</param>
internal sealed record EventInfo(string Id, string Type, string Tenant, string Subject, DateTimeOffset Time, System.Text.Json.JsonElement Data);

/// <summary>One audited admin call.</summary>
/// <param name="Id">Its number.</param>
/// <param name="At">When.</param>
/// <param name="Actor">Who: <c>key:NAME</c>, <c>jwt:SUBJECT</c> or <c>anonymous</c>.</param>
/// <param name="Action">Method and route.</param>
/// <param name="Target">The path called.</param>
/// <param name="Status">The HTTP status answered.</param>
/// <param name="Detail">The problem, when refused.</param>
internal sealed record AuditInfo(long Id, DateTimeOffset At, string Actor, string Action, string Target, int Status, string Detail);

/// <summary>An admin key (never its secret).</summary>
/// <param name="Name">Its name.</param>
/// <param name="Scope"><c>read</c> or <c>full</c>.</param>
/// <param name="Source"><c>api</c> or <c>config</c>.</param>
/// <param name="CreatedAt">When it was created.</param>
/// <param name="Version">Its version, also its ETag.</param>
internal sealed record AdminKeyInfo(string Name, string Scope, string Source, DateTimeOffset? CreatedAt, long Version);

/// <summary>An admin key to create.</summary>
/// <param name="Name">Lower-case letters, digits, '-', '_' and '.', 1 to 64 characters.</param>
/// <param name="Scope"><c>read</c> or <c>full</c>.</param>
internal sealed record AdminKeyCreate(string Name, string Scope);

/// <summary>A created admin key and its secret: shown this once.</summary>
/// <param name="Key">The key.</param>
/// <param name="Secret">The secret (<c>Authorization: Bearer …</c>).</param>
internal sealed record AdminKeyCreated(AdminKeyInfo Key, string Secret);

/// <summary>This relay at a glance.</summary>
/// <param name="RelayId">The relay's id.</param>
/// <param name="Region">Its region.</param>
/// <param name="Version">The relay's version.</param>
/// <param name="Sessions">Agent sessions connected now.</param>
/// <param name="Store">The store's database (<c>sqlite</c> or <c>postgres</c>).</param>
/// <param name="Revision">The store revision applied.</param>
/// <param name="Counters">Running totals (connections accepted and refused, bytes, sessions ended…).</param>
internal sealed record RelayStatus(string RelayId, string Region, string Version, int Sessions, string Store, long Revision, IReadOnlyDictionary<string, long> Counters);
