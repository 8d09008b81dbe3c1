namespace SiteLink.Relay.Configuration;

/// <summary>
/// A cloud endpoint's traffic policy: ordered rules the relay evaluates before it asks an agent for a stream.
/// <see cref="OnConnect"/> runs for every new public connection (every protocol; for http and https, on a client
/// connection's first request to the endpoint); <see cref="OnHttpRequest"/> for every request (http, https);
/// <see cref="OnHttpResponse"/> on every response (http, https). Within a phase, rules run in order; the first that
/// denies ends the evaluation.
/// </summary>
public sealed class TrafficPolicyOptions
{
    /// <summary>Rules for each new connection: <c>restrict-ips</c>, <c>rate-limit</c>.</summary>
    public List<PolicyRuleOptions> OnConnect { get; } = [];

    /// <summary>Rules for each request: <c>restrict-ips</c>, <c>rate-limit</c>, <c>basic-auth</c>, <c>jwt</c>, <c>oidc</c>, <c>add-headers</c>, <c>remove-headers</c>, <c>deny</c>.</summary>
    public List<PolicyRuleOptions> OnHttpRequest { get; } = [];

    /// <summary>Rules for each response: <c>add-headers</c>, <c>remove-headers</c>.</summary>
    public List<PolicyRuleOptions> OnHttpResponse { get; } = [];

    internal bool IsEmpty => OnConnect.Count == 0 && OnHttpRequest.Count == 0 && OnHttpResponse.Count == 0;

    /// <summary>A copy with lists of its own (the rules themselves shared).</summary>
    internal TrafficPolicyOptions Copy()
    {
        var copy = new TrafficPolicyOptions();
        copy.OnConnect.AddRange(OnConnect);
        copy.OnHttpRequest.AddRange(OnHttpRequest);
        copy.OnHttpResponse.AddRange(OnHttpResponse);
        return copy;
    }
}

/// <summary>One rule of a <see cref="TrafficPolicyOptions"/>; which settings apply depends on <see cref="Type"/>.</summary>
public sealed class PolicyRuleOptions
{
    /// <summary>
    /// <c>restrict-ips</c> (<see cref="Allow"/>, <see cref="Deny"/>), <c>rate-limit</c> (<see cref="Capacity"/>,
    /// <see cref="PerSecond"/>, <see cref="Key"/>), <c>basic-auth</c> (<see cref="Realm"/>, <see cref="Users"/>),
    /// <c>add-headers</c> (<see cref="Headers"/>), <c>remove-headers</c> (<see cref="Names"/>), <c>deny</c>
    /// (<see cref="Status"/>, <see cref="Body"/>). Required.
    /// </summary>
    public string Type { get; set; } = "";

    /// <summary>The rule's name in logs and metrics. Default: the phase, position and type, e.g. <c>on_connect[0]:restrict-ips</c>.</summary>
    public string? Name { get; set; }

    /// <summary>restrict-ips: client address ranges let through (CIDR, IPv4 or IPv6, e.g. <c>10.0.0.0/8</c>, <c>2001:db8::/32</c>, or one address). Empty: any not denied.</summary>
    public List<string> Allow { get; } = [];

    /// <summary>restrict-ips: client address ranges refused, even when also allowed.</summary>
    public List<string> Deny { get; } = [];

    /// <summary>rate-limit: how many connections (or requests) a client may start in a burst.</summary>
    public int Capacity { get; set; }

    /// <summary>rate-limit: how many more it may start per second once the burst is spent.</summary>
    public double PerSecond { get; set; }

    /// <summary>
    /// rate-limit: <c>client-ip</c> (a bucket per client address; IPv6 per /64), <c>endpoint</c> (one bucket for all), or
    /// <c>subject</c> (OnHttpRequest: a bucket per user or token subject an earlier basic-auth or jwt rule found; per
    /// address without one). Default: <c>client-ip</c>.
    /// </summary>
    public string Key { get; set; } = "client-ip";

    /// <summary>basic-auth: the realm named in the challenge. Default: the cloud endpoint's name.</summary>
    public string? Realm { get; set; }

    /// <summary>basic-auth: who may pass, each with a salted password hash (never the password: <c>SiteLink.Relay --hash-password</c> makes one).</summary>
    public List<BasicAuthUserOptions> Users { get; } = [];

    /// <summary>jwt: the issuer (<c>iss</c>) tokens must name. Required.</summary>
    public string? Issuer { get; set; }

    /// <summary>jwt: audiences (<c>aud</c>) accepted; a token must name one of them. At least one.</summary>
    public List<string> Audiences { get; } = [];

    /// <summary>
    /// jwt: where the signing keys are, as a JWKS document: an https URL (http only to loopback), fetched when first
    /// needed, cached, refreshed every 12 hours and when a token names a key id it does not know (at most every
    /// <see cref="JwksRefreshInterval"/>: key rotation is picked up without a restart). One of this or <see cref="JwksFile"/>.
    /// </summary>
    public string? JwksUrl { get; set; }

    /// <summary>jwt: a JWKS file read at start instead of <see cref="JwksUrl"/>.</summary>
    public string? JwksFile { get; set; }

    /// <summary>jwt: the least time between two fetches of <see cref="JwksUrl"/> caused by unknown key ids (1 s to 1 h). Default: 5 minutes.</summary>
    public TimeSpan JwksRefreshInterval { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>jwt: tolerance for clocks on <c>exp</c> and <c>nbf</c> (0 to 5 minutes). Default: 1 minute.</summary>
    public TimeSpan ClockSkew { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>jwt: signature algorithms accepted. Default: RS256, RS384, RS512, PS256, ES256, ES384 (never <c>none</c>).</summary>
    public List<string> Algorithms { get; } = [];

    /// <summary>
    /// jwt: claims a token must carry, with the value required (for a space-separated claim such as <c>scope</c>, one
    /// of its words). A token without them is refused with 403.
    /// </summary>
    public Dictionary<string, string> RequiredClaims { get; } = new(StringComparer.Ordinal);

    /// <summary>oidc: the OpenID Connect provider's issuer URL (its discovery document is under it); https, or http to loopback.</summary>
    public string? Authority { get; set; }

    /// <summary>oidc: the client id the provider knows the relay by.</summary>
    public string? ClientId { get; set; }

    /// <summary>oidc: the client's secret at the provider. Never logged.</summary>
    public string? ClientSecret { get; set; }

    /// <summary>oidc: scopes asked for. Default: <c>openid</c>, <c>email</c>.</summary>
    public List<string> Scopes { get; } = [];

    /// <summary>oidc: email addresses let through (compared without case). With <see cref="AllowedDomains"/> empty too: anyone the provider signs in.</summary>
    public List<string> AllowedEmails { get; } = [];

    /// <summary>oidc: email domains let through, e.g. <c>acme.example</c>.</summary>
    public List<string> AllowedDomains { get; } = [];

    /// <summary>oidc: how long a login lasts (the relay's cookie) before the provider is asked again. Default: 8 hours.</summary>
    public TimeSpan SessionLifetime { get; set; } = TimeSpan.FromHours(8);

    /// <summary>
    /// add-headers: header names and values to set (replacing any the message has). <c>${client.ip}</c> in a value is
    /// the client's address, <c>${auth.user}</c> the user basic-auth or jwt (its <c>sub</c>) let through (empty when none did),
    /// <c>${client.cert.subject}</c> and <c>${client.cert.sha256}</c> the client certificate mutual TLS verified (empty without one).
    /// </summary>
    public Dictionary<string, string> Headers { get; } = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>remove-headers: header names to remove.</summary>
    public List<string> Names { get; } = [];

    /// <summary>deny: the status answered (400–599). Default: 403.</summary>
    public int Status { get; set; } = 403;

    /// <summary>deny: the body answered (plain text, at most 1,024 characters). Default: a line naming the rule.</summary>
    public string? Body { get; set; }
}

/// <summary>A user of a <c>basic-auth</c> rule.</summary>
public sealed class BasicAuthUserOptions
{
    /// <summary>The user name (1–64 characters, no ':' or control characters).</summary>
    public string Name { get; set; } = "";

    /// <summary>The password's salted hash, <c>pbkdf2-sha256$ITERATIONS$SALT$HASH</c> (base64), as <c>--hash-password</c> prints it.</summary>
    public string PasswordHash { get; set; } = "";
}
