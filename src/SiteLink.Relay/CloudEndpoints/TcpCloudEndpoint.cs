using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Hosting;
using SiteLink.Relay.Security;
using SiteLink.Relay.Sessions;

namespace SiteLink.Relay.CloudEndpoints;

/// <summary>
/// A TCP cloud endpoint: a listening socket whose connections are routed to an internal endpoint, within the
/// endpoint's caps on connections in all and per client address.
/// </summary>
internal sealed class TcpCloudEndpoint : IAsyncDisposable
{
    private readonly CloudEndpointOptions _options;
    private readonly ConnectionRouter _router;
    private readonly ILogger _logger;
    private readonly Socket _listener;
    private readonly CancellationTokenSource _stopping = new();
    private readonly KeyedCounter<IPAddress> _perAddress = new();
    private readonly Lock _gate = new();
    private Task _acceptLoop = Task.CompletedTask;
    private int _connections;
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

        try
        {
            _listener.Bind(endPoint);
        }
        catch (SocketException ex)
        {
            _listener.Dispose();
            throw new RelayStartException($"Cloud endpoint '{options.Name}' cannot listen on {endPoint}: {ex.Message}", ex);
        }

        LocalEndPoint = (IPEndPoint)_listener.LocalEndPoint!;
    }

    public string Name => _options.Name;

    /// <summary>The address actually bound (the real port when the configuration said 0).</summary>
    public IPEndPoint LocalEndPoint { get; }

    /// <summary>Public connections open on this endpoint now.</summary>
    public int Connections => Volatile.Read(ref _connections);

    public void Start()
    {
        _listener.Listen(1024);
        RelayLog.CloudEndpointListening(_logger, _options.Name, LocalEndPoint.ToString(), _options.Tenant, _options.Endpoint);
        _acceptLoop = AcceptLoopAsync(_stopping.Token);
    }

    private async Task AcceptLoopAsync(CancellationToken cancellationToken)
    {
        var failures = 0;
        while (!cancellationToken.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(cancellationToken).ConfigureAwait(false);
                failures = 0;
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            catch (SocketException ex)
            {
                // No accept error stops the endpoint: a client that vanished before accept, a moment without file
                // descriptors or buffers. Logged, and retried after a pause that grows while the errors go on.
                RelayLog.AcceptFailed(_logger, _options.Name, $"{ex.SocketErrorCode}: {ex.Message}");
                failures++;
                try
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(1000, 10 * failures)), cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }

                continue;
            }

            try
            {
                Admit(client);
            }
#pragma warning disable CA1031 // Whatever went wrong with one connection, the endpoint goes on accepting the next.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                RelayLog.AcceptFailed(_logger, _options.Name, $"{ex.GetType().Name}: {ex.Message}");
            }
        }
    }

    private void Admit(Socket socket)
    {
        var address = ClientAddress.KeyOf(socket.RemoteEndPoint);
        RefusalReason? refusal = null;
        lock (_gate)
        {
            if (_connections >= _options.MaxConnections)
            {
                refusal = RefusalReason.EndpointLimit;
            }
            else if (!_perAddress.TryIncrement(address, _options.MaxConnectionsPerClientIp))
            {
                refusal = RefusalReason.ClientIpLimit;
            }
            else
            {
                _connections++;
            }
        }

        if (refusal is { } reason)
        {
            _router.Refuse(new PublicConnection(socket, _options), reason, reason == RefusalReason.EndpointLimit
                ? $"the endpoint carries {_options.MaxConnections} connections (limit MaxConnections)"
                : $"{address} has {_options.MaxConnectionsPerClientIp} connections open here (limit MaxConnectionsPerClientIp)");
            return;
        }

        // From here the connection owns its place in the limits: every way it ends (refused, expired, bridged, failed)
        // closes it once, which gives the place back.
        var connection = new PublicConnection(socket, _options, () => Release(address));
        try
        {
            socket.NoDelay = true;
            _router.Offer(connection);
        }
        catch
        {
            connection.Reset();
            throw;
        }
    }

    private void Release(IPAddress address)
    {
        lock (_gate)
        {
            _connections--;
            _perAddress.Decrement(address);
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
