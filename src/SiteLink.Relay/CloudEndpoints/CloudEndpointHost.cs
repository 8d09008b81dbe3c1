using System.Net;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Sessions;

namespace SiteLink.Relay.CloudEndpoints;

/// <summary>Starts and stops the configured cloud endpoints with the host.</summary>
internal sealed class CloudEndpointHost : IHostedService
{
    private readonly RelayOptions _options;
    private readonly ConnectionRouter _router;
    private readonly ILogger _logger;
    private readonly List<TcpCloudEndpoint> _endpoints = [];

    public CloudEndpointHost(RelayOptions options, ConnectionRouter router, ILogger<CloudEndpointHost> logger)
    {
        _options = options;
        _router = router;
        _logger = logger;
    }

    /// <summary>Each cloud endpoint's name and the address it is bound to.</summary>
    public IReadOnlyDictionary<string, IPEndPoint> BoundEndpoints =>
        _endpoints.ToDictionary(e => e.Name, e => e.LocalEndPoint, StringComparer.OrdinalIgnoreCase);

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        try
        {
            foreach (var options in _options.CloudEndpoints)
            {
                _endpoints.Add(new TcpCloudEndpoint(options, _router, _logger));
            }
        }
        catch
        {
            await StopAsync(cancellationToken).ConfigureAwait(false);
            throw;
        }

        foreach (var endpoint in _endpoints)
        {
            endpoint.Start();
        }
    }

    /// <summary>Stops accepting; safe to call more than once.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        foreach (var endpoint in _endpoints)
        {
            await endpoint.DisposeAsync().ConfigureAwait(false);
        }
    }
}
