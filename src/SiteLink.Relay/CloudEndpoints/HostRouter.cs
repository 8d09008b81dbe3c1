namespace SiteLink.Relay.CloudEndpoints;

/// <summary>
/// Routes a host name (an HTTP Host header, a TLS server name) to what serves it: exact names first, then
/// <c>*.domain</c> patterns matching exactly one more label (as a wildcard certificate does). Case-insensitive.
/// Immutable once built: a listener whose routes change publishes a new one (<see cref="RouteTable{T}"/>), so every
/// connection or request reads one snapshot without a lock.
/// </summary>
internal sealed class HostRouter<T>
    where T : class
{
    private readonly Dictionary<string, T> _exact = new(StringComparer.Ordinal);
    private readonly Dictionary<string, T> _wildcard = new(StringComparer.Ordinal);

    /// <summary>Routes each of <paramref name="routes"/>' patterns to it; a pattern already taken stays with the earlier route.</summary>
    public HostRouter(IReadOnlyList<T> routes, Func<T, IEnumerable<string>> patterns)
    {
        Routes = routes;
        foreach (var route in routes)
        {
            foreach (var pattern in patterns(route))
            {
                var normalized = Normalize(pattern);
                _ = normalized.StartsWith("*.", StringComparison.Ordinal)
                    ? _wildcard.TryAdd(normalized[2..], route)
                    : _exact.TryAdd(normalized, route);
            }
        }
    }

    /// <summary>Everything routed to, once each.</summary>
    public IReadOnlyList<T> Routes { get; }

    /// <summary>What serves <paramref name="host"/> (a port, if any, is ignored); null when nothing does.</summary>
    public T? Match(string? host)
    {
        if (string.IsNullOrEmpty(host) || host.Length > 260)
        {
            return null;
        }

        var name = Normalize(StripPort(host));
        if (_exact.TryGetValue(name, out var exact))
        {
            return exact;
        }

        var dot = name.IndexOf('.', StringComparison.Ordinal);
        return dot > 0 && _wildcard.TryGetValue(name[(dot + 1)..], out var wildcard) ? wildcard : null;
    }

    /// <summary>Lower case, without a trailing dot.</summary>
    public static string Normalize(string host) => host.Trim().TrimEnd('.').ToLowerInvariant();

    /// <summary>
    /// A DNS name (labels of 1-63 letters, digits or '-', not starting or ending with '-'; at most 253 characters), or
    /// <c>*.</c> followed by one with at least two labels.
    /// </summary>
    public static bool IsValidPattern(string? pattern)
    {
        if (string.IsNullOrWhiteSpace(pattern))
        {
            return false;
        }

        var name = Normalize(pattern);
        var wildcard = name.StartsWith("*.", StringComparison.Ordinal);
        if (wildcard)
        {
            name = name[2..];
        }

        if (name.Length is 0 or > 253)
        {
            return false;
        }

        var labels = name.Split('.');
        if (wildcard && labels.Length < 2)
        {
            return false;
        }

        foreach (var label in labels)
        {
            if (label.Length is 0 or > 63 || label[0] == '-' || label[^1] == '-' || !label.All(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '-'))
            {
                return false;
            }
        }

        return true;
    }

    private static string StripPort(string host)
    {
        if (host.StartsWith('['))
        {
            var close = host.IndexOf(']', StringComparison.Ordinal);
            return close > 0 ? host[..(close + 1)] : host;
        }

        var colon = host.LastIndexOf(':');
        return colon > 0 && host.IndexOf(':', StringComparison.Ordinal) == colon ? host[..colon] : host;
    }
}
