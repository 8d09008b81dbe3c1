using System.Globalization;

namespace SiteLink;

/// <summary>
/// An endpoint declared in options or configuration (<c>SiteLink:Endpoints</c>): connections to <see cref="Name"/>
/// are forwarded to the TCP service at <see cref="Upstream"/>, as
/// <see cref="ITunnelSession.ForwardAsync(string, Uri, EndpointOptions?, CancellationToken)"/> does. The session binds
/// it when it connects, and again after every reconnect.
/// </summary>
public sealed class ForwardEndpointOptions
{
    /// <summary>The internal endpoint name the relay's cloud endpoints refer to. Required.</summary>
    public string Name { get; set; } = "";

    /// <summary>
    /// The TCP service to forward to: <c>tcp://host:port</c>, or just <c>host:port</c> (<c>[::1]:5432</c> for IPv6). Required.
    /// </summary>
    public string Upstream { get; set; } = "";

    /// <summary>As <see cref="EndpointOptions.Description"/>.</summary>
    public string? Description { get; set; }

    /// <summary>As <see cref="EndpointOptions.Metadata"/>.</summary>
    public IDictionary<string, string> Metadata { get; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>As <see cref="EndpointOptions.Pooling"/>.</summary>
    public bool Pooling { get; set; }

    /// <summary>As <see cref="EndpointOptions.ProxyProtocol"/>.</summary>
    public ProxyProtocolVersion ProxyProtocol { get; set; }

    /// <summary>
    /// Settings only code can give (certificates: <see cref="EndpointOptions.TlsServer"/>, <see cref="EndpointOptions.UpstreamTls"/>),
    /// from <c>AddForward(…, configure)</c>. A field, not a property: the configuration binder must not walk into it.
    /// </summary>
    internal EndpointOptions? CodeOptions;

    /// <summary>The endpoint's settings, as <see cref="ITunnelSession.ForwardAsync(string, Uri, EndpointOptions?, CancellationToken)"/> takes them (a copy).</summary>
    internal EndpointOptions ToEndpointOptions() => EndpointOptions.Copy(Description, Metadata, Pooling, ProxyProtocol, CodeOptions?.TlsServer, CodeOptions?.UpstreamTls ?? new UpstreamTlsOptions());

    /// <summary>A copy the session keeps.</summary>
    internal ForwardEndpointOptions Snapshot() => From(Name, Upstream, ToEndpointOptions());

    /// <summary>An endpoint named <paramref name="name"/> forwarding to <paramref name="upstream"/> with a copy of <paramref name="settings"/>.</summary>
    internal static ForwardEndpointOptions From(string name, string upstream, EndpointOptions settings)
    {
        var copy = settings.Snapshot();
        var endpoint = new ForwardEndpointOptions { Name = name, Upstream = upstream, Description = copy.Description, Pooling = copy.Pooling, ProxyProtocol = copy.ProxyProtocol, CodeOptions = copy };
        foreach (var (key, value) in copy.Metadata)
        {
            endpoint.Metadata[key] = value;
        }

        return endpoint;
    }

    /// <summary>
    /// Reads an upstream written as <c>tcp://host:port</c> or <c>host:port</c>; false when it is neither, or the port is
    /// not 1 to 65535.
    /// </summary>
    public static bool TryParseUpstream(string? text, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Uri? upstream)
    {
        upstream = null;
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        if (text.Contains("://", StringComparison.Ordinal))
        {
            if (Uri.TryCreate(text, UriKind.Absolute, out var uri) && Upstreams.FindProblem(uri) is null)
            {
                upstream = uri;
                return true;
            }

            return false;
        }

        var colon = text.LastIndexOf(':');
        if (colon <= 0 || colon == text.Length - 1)
        {
            return false;
        }

        var hostPart = text[..colon];
        if (hostPart.StartsWith('[') && hostPart.EndsWith(']'))
        {
            hostPart = hostPart[1..^1];
        }
        else if (hostPart.Contains(':', StringComparison.Ordinal))
        {
            // An IPv6 address needs brackets, or the port is ambiguous.
            return false;
        }

        if (hostPart.Length == 0 || hostPart.Any(char.IsWhiteSpace)
            || !int.TryParse(text.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port)
            || port is < 1 or > 65535)
        {
            return false;
        }

        var host = hostPart.Contains(':', StringComparison.Ordinal) ? $"[{hostPart}]" : hostPart;
        if (!Uri.TryCreate($"tcp://{host}:{port.ToString(CultureInfo.InvariantCulture)}", UriKind.Absolute, out var parsed) || Upstreams.FindProblem(parsed) is not null)
        {
            return false;
        }

        upstream = parsed;
        return true;
    }
}

/// <summary>The upstream addresses a forward endpoint accepts.</summary>
internal static class Upstreams
{
    /// <summary>Why <paramref name="upstream"/> cannot be forwarded to, or null when it can.</summary>
    public static string? FindProblem(Uri upstream)
    {
        if (!upstream.IsAbsoluteUri)
        {
            return "a relative address is not an upstream: write tcp://host:port";
        }

        if (!string.IsNullOrEmpty(upstream.UserInfo))
        {
            // Not echoed: it may hold a password.
            return "an upstream address carries no user information: write tcp://host:port";
        }

        if (!IsTcp(upstream) && !IsTls(upstream))
        {
            return $"'{upstream.Scheme}' upstreams are not supported: write tcp://host:port, or tls://host:port (https://host) for a TLS upstream";
        }

        if (string.IsNullOrEmpty(upstream.Host) || (upstream.IsDefaultPort && !IsHttps(upstream)) || upstream.Port is < 1 or > 65535)
        {
            return $"'{upstream}' needs a host and a port from 1 to 65535: write tcp://host:port";
        }

        if (upstream.AbsolutePath != "/" || !string.IsNullOrEmpty(upstream.Query) || !string.IsNullOrEmpty(upstream.Fragment))
        {
            return $"'{upstream}' has more than a host and a port: write tcp://host:port";
        }

        return null;
    }

    private static bool IsTcp(Uri upstream) => string.Equals(upstream.Scheme, "tcp", StringComparison.OrdinalIgnoreCase);

    private static bool IsHttps(Uri upstream) => string.Equals(upstream.Scheme, "https", StringComparison.OrdinalIgnoreCase);

    /// <summary>Whether the agent speaks TLS to the upstream (<c>tls://</c>, <c>https://</c>).</summary>
    public static bool IsTls(Uri upstream) => IsHttps(upstream) || string.Equals(upstream.Scheme, "tls", StringComparison.OrdinalIgnoreCase);

    /// <summary>The host name or address to connect to (IPv6 without brackets).</summary>
    public static string HostOf(Uri upstream) => upstream.DnsSafeHost;
}
