using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using SiteLink;
using SiteLink.AspNetCore;
using SiteLink.AspNetCore.Transport;

namespace Microsoft.AspNetCore.Hosting;

/// <summary><see cref="IWebHostBuilder"/> extension methods to serve Kestrel endpoints through SiteLink.</summary>
public static class SiteLinkWebHostBuilderExtensions
{
    /// <summary>
    /// Adds the SiteLink transport to Kestrel: addresses that are a <see cref="SiteLinkEndPoint"/> (bound with
    /// <c>options.ListenSiteLink("api")</c> or <c>options.Listen(new SiteLinkEndPoint("api"), ...)</c>) are served over
    /// the tunnelled connections of that endpoint, through the <see cref="ITunnelSession"/> registered with
    /// <c>builder.Services.AddSiteLink()</c>. Every other address (TCP, Unix sockets) keeps Kestrel's own transport, side by side.
    /// </summary>
    /// <param name="builder">The web host builder (<c>WebApplicationBuilder.WebHost</c>).</param>
    /// <returns>The same builder.</returns>
    public static IWebHostBuilder UseSiteLink(this IWebHostBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.ConfigureServices(services =>
        {
            services.AddOptions<SiteLinkTransportOptions>();
            // Kestrel tries the transports registered last first, and ours claims SiteLinkEndPoint only
            // (IConnectionListenerFactorySelector), so the socket transport keeps every other address.
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IConnectionListenerFactory, SiteLinkTransportFactory>());
        });
    }

    /// <summary>As <see cref="UseSiteLink(IWebHostBuilder)"/>, with the transport's settings.</summary>
    /// <param name="builder">The web host builder.</param>
    /// <param name="configure">Sets <see cref="SiteLinkTransportOptions"/>, e.g. an explicit <see cref="SiteLinkTransportOptions.Session"/>.</param>
    /// <returns>The same builder.</returns>
    public static IWebHostBuilder UseSiteLink(this IWebHostBuilder builder, Action<SiteLinkTransportOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        return builder.UseSiteLink().ConfigureServices(services => services.Configure(configure));
    }
}
