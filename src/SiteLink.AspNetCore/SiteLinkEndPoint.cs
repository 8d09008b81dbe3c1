using System.Net;
using System.Net.Sockets;

namespace SiteLink.AspNetCore;

/// <summary>
/// A SiteLink endpoint as a Kestrel address: <c>options.Listen(new SiteLinkEndPoint("api"), listen => ...)</c> serves
/// the connections the relay routes to the internal endpoint <see cref="EndpointName"/>, with no local port. Needs the
/// SiteLink transport (<c>builder.WebHost.UseSiteLink()</c>) and a session (<c>builder.Services.AddSiteLink()</c>).
/// Kestrel shows it as <c>http://sitelink:/api</c> (<c>https://</c> with <c>UseHttps</c>).
/// </summary>
public sealed class SiteLinkEndPoint : EndPoint
{
    /// <summary>Creates the address of the internal endpoint <paramref name="endpointName"/>.</summary>
    /// <param name="endpointName">The internal endpoint name the relay's cloud endpoints refer to (letters, digits, '-', '_', '.').</param>
    /// <param name="options">
    /// The endpoint's settings (description, metadata, pooling), as for <see cref="ITunnelSession.ListenAsync"/>;
    /// copied by the session when Kestrel binds. Null (the default) for the defaults.
    /// </param>
    /// <exception cref="ArgumentException"><paramref name="endpointName"/> is null, empty or white space.</exception>
    public SiteLinkEndPoint(string endpointName, EndpointOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(endpointName);
        EndpointName = endpointName;
        Options = options;
    }

    /// <summary>The internal endpoint name.</summary>
    public string EndpointName { get; }

    /// <summary>The endpoint's settings given to the session when Kestrel binds; null for the defaults.</summary>
    public EndpointOptions? Options { get; }

    /// <summary>Not an IP address: <see cref="AddressFamily.Unspecified"/>.</summary>
    public override AddressFamily AddressFamily => AddressFamily.Unspecified;

    /// <summary>Two addresses are equal when they name the same endpoint (a session binds each name once).</summary>
    public override bool Equals(object? obj) => obj is SiteLinkEndPoint other && string.Equals(EndpointName, other.EndpointName, StringComparison.Ordinal);

    /// <inheritdoc />
    public override int GetHashCode() => StringComparer.Ordinal.GetHashCode(EndpointName);

    /// <summary><c>sitelink:/</c> and the endpoint name, as Kestrel prints <c>pipe:/name</c> for a named pipe.</summary>
    public override string ToString() => "sitelink:/" + EndpointName;
}
