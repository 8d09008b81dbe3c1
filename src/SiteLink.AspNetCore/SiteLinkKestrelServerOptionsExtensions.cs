using Microsoft.AspNetCore.Server.Kestrel.Core;
using SiteLink.AspNetCore;

namespace Microsoft.AspNetCore.Hosting;

/// <summary><see cref="KestrelServerOptions"/> extension methods to listen on SiteLink endpoints.</summary>
public static class SiteLinkKestrelServerOptionsExtensions
{
    /// <summary>
    /// Listens on the SiteLink endpoint <paramref name="endpointName"/> (HTTP/1.1; see the overload to add TLS and
    /// HTTP/2). As with every address configured in code, Kestrel then binds none of the configured URLs
    /// (<c>ASPNETCORE_URLS</c>, <c>http://localhost:5000</c>): add TCP addresses with <c>Listen</c> to serve both.
    /// </summary>
    /// <param name="options">Kestrel's options.</param>
    /// <param name="endpointName">The internal endpoint name the relay's cloud endpoints refer to.</param>
    public static void ListenSiteLink(this KestrelServerOptions options, string endpointName) =>
        options.ListenSiteLink(endpointName, static _ => { });

    /// <summary>
    /// Listens on the SiteLink endpoint <paramref name="endpointName"/> and configures it: <c>Protocols</c>,
    /// <c>UseHttps(certificate)</c> (TLS ends in this process: the relay carries ciphertext; HTTP/2 is then negotiated
    /// with ALPN), connection middleware. For the endpoint's SiteLink settings (description, metadata, pooling) use
    /// <c>options.Listen(new SiteLinkEndPoint(name, endpointOptions), configure)</c>.
    /// </summary>
    /// <param name="options">Kestrel's options.</param>
    /// <param name="endpointName">The internal endpoint name.</param>
    /// <param name="configure">Configures the endpoint's <see cref="ListenOptions"/>.</param>
    public static void ListenSiteLink(this KestrelServerOptions options, string endpointName, Action<ListenOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(configure);
        options.Listen(new SiteLinkEndPoint(endpointName), configure);
    }
}
