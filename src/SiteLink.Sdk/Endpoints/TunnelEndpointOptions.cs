using System.Globalization;

namespace SiteLink;

/// <summary>
/// An endpoint declared in options or configuration (<c>SiteLink:Endpoints</c>): connections to <see cref="Name"/>
/// are forwarded to the TCP service at <see cref="Upstream"/>. The session binds it when it connects, and again after
/// every reconnect.
/// </summary>
public sealed class TunnelEndpointOptions
{
    /// <summary>The internal endpoint name the relay's cloud endpoints refer to. Required.</summary>
    public string Name { get; set; } = "";

    /// <summary>The TCP service to forward to, as <c>host:port</c> (<c>[::1]:5432</c> for IPv6). Required.</summary>
    public string Upstream { get; set; } = "";

    /// <summary>Splits <c>host:port</c>; false when it is malformed or the port is not 1 to 65535.</summary>
    public static bool TryParseUpstream(string? text, out string host, out int port)
    {
        host = "";
        port = 0;
        if (string.IsNullOrWhiteSpace(text))
        {
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
            || !int.TryParse(text.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var parsed)
            || parsed is < 1 or > 65535)
        {
            return false;
        }

        host = hostPart;
        port = parsed;
        return true;
    }
}
