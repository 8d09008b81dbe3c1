namespace SiteLink;

/// <summary>
/// How a session reaches its relays through an HTTP proxy (<see cref="TunnelSessionOptions.Proxy"/>): the agent sends the
/// proxy <c>CONNECT relay-host:port</c> and speaks TLS to the relay inside that tunnel, so the relay's certificate is
/// still verified end to end (a proxy that inspects TLS must be trusted with
/// <see cref="TunnelSessionOptions.TrustedCertificateAuthorities"/>). Only the relay connection uses the proxy; forward
/// endpoints reach their upstreams directly.
/// </summary>
public sealed class TunnelProxyOptions
{
    /// <summary>
    /// The proxy, e.g. <c>http://proxy.corp.example:3128</c> (only <c>http://</c>: the agent talks plain HTTP to the
    /// proxy, and TLS to the relay through it). Credentials in the URL (<c>http://user:password@proxy:3128</c>) are used
    /// when <see cref="UserName"/> is not set. Default: <see langword="null"/>, meaning the environment's proxy when
    /// <see cref="UseEnvironment"/> is set, otherwise none.
    /// </summary>
    public Uri? Address { get; set; }

    /// <summary>The user name for the proxy's Basic authentication. Default: <see langword="null"/>, meaning none.</summary>
    public string? UserName { get; set; }

    /// <summary>The password for the proxy's Basic authentication. Never logged. Default: <see langword="null"/>.</summary>
    public string? Password { get; set; }

    /// <summary>
    /// When <see cref="Address"/> is not set, use the proxy the environment names, as curl and most tools do:
    /// <c>HTTPS_PROXY</c> (or <c>https_proxy</c>, then <c>ALL_PROXY</c>/<c>all_proxy</c>) for <c>https://</c> relays,
    /// <c>http_proxy</c> (lower case only, as curl reads it) or <c>ALL_PROXY</c> for <c>http://</c> ones, except for relays <c>NO_PROXY</c>/<c>no_proxy</c> lists
    /// (host names and their subdomains, IP addresses, CIDR ranges, <c>*</c> for all; an entry may end in <c>:port</c>).
    /// Set to <see langword="false"/> to always connect directly unless <see cref="Address"/> is set. Default:
    /// <see langword="true"/>.
    /// </summary>
    public bool UseEnvironment { get; set; } = true;

    internal TunnelProxyOptions Copy() => new() { Address = Address, UserName = UserName, Password = Password, UseEnvironment = UseEnvironment };

    internal void Validate(List<string> errors)
    {
        if (Address is { } address && ProxyRoute.FindProblem(address) is { } problem)
        {
            errors.Add($"Proxy.Address {problem}");
        }

        if (Password is not null && string.IsNullOrEmpty(UserName))
        {
            errors.Add("Proxy.Password is set without Proxy.UserName.");
        }

        if (UserName is not null && (UserName.Length == 0 || UserName.Contains(':', StringComparison.Ordinal) || UserName.Any(char.IsControl)))
        {
            errors.Add("Proxy.UserName must be non-empty, without ':' or control characters (Basic authentication).");
        }

        if (Password?.Any(char.IsControl) == true)
        {
            errors.Add("Proxy.Password must not contain control characters.");
        }
    }
}
