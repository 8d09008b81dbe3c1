using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace SiteLink.AspNetCore.Transport;

/// <summary>
/// Kestrel's transport for <see cref="SiteLinkEndPoint"/>: binding one listens on the session for that endpoint name.
/// It claims no other kind of address, so Kestrel's socket transport serves TCP addresses next to it.
/// </summary>
internal sealed class SiteLinkTransportFactory : IConnectionListenerFactory, IConnectionListenerFactorySelector
{
    private readonly IServiceProvider _services;
    private readonly ILogger _logger;
    private readonly ITunnelSession? _session;
    private readonly TimeSpan _bindTimeout;
    private readonly ConnectionSettings _settings;

    public SiteLinkTransportFactory(IOptions<SiteLinkTransportOptions> options, IServiceProvider services, ILoggerFactory loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(options);
        var value = options.Value;
        _services = services;
        _logger = loggerFactory.CreateLogger(TransportLog.Category);
        // A snapshot: later changes to the options object do not reach a running server.
        _session = value.Session;
        _bindTimeout = value.BindTimeout;
        _settings = new ConnectionSettings(value.MaxReadBufferSize, value.MaxWriteBufferSize, _logger);
    }

    public bool CanBind(EndPoint endpoint) => endpoint is SiteLinkEndPoint;

    public async ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        if (endpoint is not SiteLinkEndPoint siteLink)
        {
            throw new NotSupportedException($"The SiteLink transport binds SiteLinkEndPoint addresses only, not {endpoint.GetType().Name} ({endpoint}).");
        }

        var session = _session ?? _services.GetService<ITunnelSession>() ?? throw new InvalidOperationException(
            $"Cannot listen on SiteLink endpoint '{siteLink.EndpointName}': no ITunnelSession is registered. Call builder.Services.AddSiteLink() " +
            "(options from the \"SiteLink\" configuration section), or give a session with builder.WebHost.UseSiteLink(o => o.Session = session).");

        var listener = await EndpointBinder.ListenAsync(session, siteLink, _bindTimeout, _logger, cancellationToken).ConfigureAwait(false);
        return new SiteLinkConnectionListener(siteLink, listener, _settings, _logger);
    }
}

/// <summary>What every connection of the transport is created with.</summary>
internal sealed record ConnectionSettings(int MaxReadBufferSize, int MaxWriteBufferSize, ILogger Logger);
