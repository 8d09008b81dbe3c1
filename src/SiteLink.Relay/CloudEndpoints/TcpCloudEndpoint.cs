using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Sessions;

namespace SiteLink.Relay.CloudEndpoints;

/// <summary>A TCP cloud endpoint: a listening socket whose connections are routed to an internal endpoint.</summary>
internal sealed class TcpCloudEndpoint : IAsyncDisposable
{
    private readonly CloudEndpointOptions _options;
    private readonly ConnectionRouter _router;
    private readonly ILogger _logger;
    private readonly Socket _listener;
    private readonly CancellationTokenSource _stopping = new();
    private Task _acceptLoop = Task.CompletedTask;
    private int _disposed;

    public TcpCloudEndpoint(CloudEndpointOptions options, ConnectionRouter router, ILogger logger)
    {
        _options = options;
        _router = router;
        _logger = logger;
        var endPoint = RelayOptionsValidator.ParseEndPoint(options.Listen);
        _listener = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        if (endPoint.AddressFamily == AddressFamily.InterNetworkV6 && endPoint.Address.Equals(IPAddress.IPv6Any))
        {
            _listener.DualMode = true;
        }

        _listener.Bind(endPoint);
        LocalEndPoint = (IPEndPoint)_listener.LocalEndPoint!;
    }

    public string Name => _options.Name;

    /// <summary>The address actually bound (the real port when the configuration said 0).</summary>
    public IPEndPoint LocalEndPoint { get; }

    public void Start()
    {
        _listener.Listen(1024);
        RelayLog.CloudEndpointListening(_logger, _options.Name, LocalEndPoint.ToString(), _options.Tenant, _options.Endpoint);
        _acceptLoop = AcceptLoopAsync(_stopping.Token);
    }

    private async Task AcceptLoopAsync(CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionAborted or SocketError.ConnectionReset or SocketError.TooManyOpenSockets)
            {
                // One failed accept (client gone, or out of descriptors for a moment) must not stop the endpoint.
                RelayLog.AcceptFailed(_logger, _options.Name, ex);
                if (ex.SocketErrorCode == SocketError.TooManyOpenSockets)
                {
                    await Task.Delay(50, cancellationToken).ConfigureAwait(false);
                }

                continue;
            }

            client.NoDelay = true;
            _router.Offer(_options, client);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _stopping.CancelAsync().ConfigureAwait(false);
        _listener.Dispose();
        try
        {
            await _acceptLoop.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }

        _stopping.Dispose();
    }
}
