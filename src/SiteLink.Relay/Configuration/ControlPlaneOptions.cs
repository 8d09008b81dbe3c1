namespace SiteLink.Relay.Configuration;

/// <summary>
/// The admin API: a REST API (and a read-only dashboard) on a listener of its own, through which tenants, authtokens,
/// cloud endpoints and webhook subscriptions are managed at runtime and sessions inspected. Off unless
/// <see cref="Listen"/> is set.
/// </summary>
public sealed class AdminOptions
{
    /// <summary>Where the admin API listens, as <c>ip:port</c> (port 0 picks one). Default: none (no admin API).</summary>
    public string? Listen { get; set; }

    /// <summary>
    /// Serve the admin API over plain HTTP. Only on loopback (e.g. behind a local reverse proxy that terminates TLS).
    /// Default: <see langword="false"/>: HTTPS with the agent port's certificate.
    /// </summary>
    public bool DisableTls { get; set; }

    /// <summary>Admin keys from the configuration (besides those created through the API), read-only through the API.</summary>
    public IList<AdminKeyOptions> Keys { get; } = [];

    /// <summary>Accept JWT bearer tokens from the vendor's identity provider too. Default: none.</summary>
    public AdminJwtOptions? Jwt { get; set; }
}

/// <summary>An admin key: a secret that authenticates calls to the admin API, with what it may do.</summary>
public sealed class AdminKeyOptions
{
    /// <summary>A name for the key: the audit log's "who". Required, unique.</summary>
    public string Name { get; set; } = "";

    /// <summary>The secret itself (at least 32 characters). Give this or <see cref="Sha256"/>.</summary>
    public string? Key { get; set; }

    /// <summary>The SHA-256 of the secret as 64 hex digits, so the configuration need not hold the secret.</summary>
    public string? Sha256 { get; set; }

    /// <summary><c>read</c> (GET only) or <c>full</c>. Default: <c>read</c>.</summary>
    public string Scope { get; set; } = "read";
}

/// <summary>JWT bearer tokens for the admin API, validated against the vendor's identity provider's signing keys.</summary>
public sealed class AdminJwtOptions
{
    /// <summary>The issuer tokens must name (<c>iss</c>). Required.</summary>
    public string? Issuer { get; set; }

    /// <summary>The audiences accepted (<c>aud</c>). At least one.</summary>
    public List<string> Audiences { get; } = [];

    /// <summary>The provider's JWKS URL (https; http only to loopback). One of this or <see cref="JwksFile"/>.</summary>
    public string? JwksUrl { get; set; }

    /// <summary>A JWKS file read at start instead of <see cref="JwksUrl"/>.</summary>
    public string? JwksFile { get; set; }

    /// <summary>The <c>scope</c> (or <c>scp</c>) word that grants full access. Default: <c>sitelink.admin</c>.</summary>
    public string FullScope { get; set; } = "sitelink.admin";

    /// <summary>The <c>scope</c> (or <c>scp</c>) word that grants read-only access. Default: <c>sitelink.read</c>.</summary>
    public string ReadScope { get; set; } = "sitelink.read";
}

/// <summary>
/// Where the control plane keeps what the admin API creates: SQLite (a file; the default) or PostgreSQL (shared by
/// replicas, which then see each other's changes within <see cref="PollInterval"/>).
/// </summary>
public sealed class StoreOptions
{
    /// <summary><c>sqlite</c> or <c>postgres</c>. Default: <c>sqlite</c>.</summary>
    public string Provider { get; set; } = "sqlite";

    /// <summary>
    /// sqlite: the database file. Default: <c>sitelink-relay.db</c> next to the standalone relay's binary; an embedded
    /// relay (<c>RelayServer</c>) keeps its store in memory unless this is set.
    /// </summary>
    public string? Path { get; set; }

    /// <summary>postgres: the Npgsql connection string (it may hold a password: never logged). Required for postgres.</summary>
    public string? ConnectionString { get; set; }

    /// <summary>How often the relay checks the store for changes made by other replicas. Default: 500 ms.</summary>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>Whether the relay uses a store at all: when the admin API is on, or a store is configured.</summary>
    internal bool IsConfigured => Path is not null || ConnectionString is not null || !string.Equals(Provider, "sqlite", StringComparison.OrdinalIgnoreCase);
}
