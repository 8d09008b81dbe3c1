using System.Net;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Sessions;

namespace SiteLink.Relay.CloudEndpoints;

/// <summary>Starts and stops the configured cloud endpoints with the host.</summary>
internal sealed class CloudEndpointHost : IHostedService, IAsyncDisposable
{
    private readonly RelayOptions _options;
    private readonly ConnectionRouter _router;
    private readonly ILogger _logger;
    private readonly List<TcpCloudEndpoint> _endpoints = [];
    private readonly HttpCloudEndpoints _http;

    private readonly RelayCounters _counters;

    public CloudEndpointHost(RelayOptions options, ConnectionRouter router, CloudCertificates certificates, RelayCounters counters, ILoggerFactory loggerFactory)
    {
        _options = options;
        _router = router;
        _counters = counters;
        _logger = loggerFactory.CreateLogger<CloudEndpointHost>();
        _http = new HttpCloudEndpoints(options.CloudEndpoints.Where(e => e.IsHttp), certificates, router, counters, loggerFactory);
    }

    /// <summary>Each cloud endpoint's name and the address it is bound to (http and https endpoints share their listener's).</summary>
    public IReadOnlyDictionary<string, IPEndPoint> BoundEndpoints =>
        _endpoints.SelectMany(l => l.Endpoints.Select(e => KeyValuePair.Create(e.Name, l.LocalEndPoint))).Concat(_http.BoundEndpoints)
            .ToDictionary(e => e.Key, e => e.Value, StringComparer.OrdinalIgnoreCase);

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        try
        {
            foreach (var options in _options.CloudEndpoints.Where(e => !e.IsHttp && !e.IsTls))
            {
                _endpoints.Add(new TcpCloudEndpoint([options], _router, _counters, _options.Limits, _logger));
            }

            // tls endpoints with the same address share one listener, routed by server name.
            foreach (var group in _options.CloudEndpoints.Where(e => e.IsTls).GroupBy(e => e.Listen, StringComparer.OrdinalIgnoreCase))
            {
                _endpoints.Add(new TcpCloudEndpoint([.. group], _router, _counters, _options.Limits, _logger));
            }

            if (!_http.IsEmpty)
            {
                await _http.StartAsync(cancellationToken).ConfigureAwait(false);
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

        await _http.DisposeAsync().ConfigureAwait(false);
    }

    public ValueTask DisposeAsync() => new(StopAsync(CancellationToken.None));
}

/// <summary>The certificates of the https cloud endpoints, by endpoint name, loaded at start.</summary>
internal sealed class CloudCertificates : Dictionary<string, System.Security.Cryptography.X509Certificates.X509Certificate2>
{
    public CloudCertificates()
        : base(StringComparer.OrdinalIgnoreCase)
    {
    }
}
