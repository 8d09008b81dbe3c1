using System.Buffers;
using System.Net;
using System.Net.Sockets;
using SiteLink.Internal;
using Microsoft.Extensions.Logging;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Hosting;
using SiteLink.Relay.Security;
using SiteLink.Relay.Sessions;

namespace SiteLink.Relay.CloudEndpoints;

/// <summary>
/// A listening socket for cloud endpoints: a tcp endpoint's own port, whose connections all go to it; or a tls listener
/// shared by several tls endpoints, where each connection is routed by the server name of its TLS ClientHello (read,
/// never answered: the bytes, ClientHello included, pass through to the agent as the client sent them). Each endpoint
/// keeps its caps on connections in all and per client address. A tls listener's routes change while it runs
/// (<see cref="Routes"/>); closing the listener leaves the connections it accepted running.
/// </summary>
internal sealed class TcpCloudEndpoint : ICloudListener, IAsyncDisposable
{
    private readonly Admission? _single;
    private readonly RouteTable<Admission> _routes;
    private readonly ConnectionRouter _router;
    private readonly RelayCounters _counters;
    private readonly RelayLimits _limits;
    private readonly ILogger _logger;
    private readonly Socket _listener;
    private readonly CancellationTokenSource _stopping = new();
    private Task _acceptLoop = Task.CompletedTask;
    private readonly LogSampler _refusals;
    private int _readingClientHellos;
    private int _disposed;

    /// <summary>
    /// Binds (but does not listen yet) for <paramref name="routes"/> (made by <see cref="CreateRoute"/>): one tcp
    /// endpoint's, or those of the tls endpoints of one address.
    /// </summary>
    /// <exception cref="RelayStartException">The address cannot be bound.</exception>
    public TcpCloudEndpoint(IReadOnlyList<IEndpointRoute> routes, ConnectionRouter router, RelayCounters counters, RelayLimits limits, ILogger logger)
    {
        _router = router;
        _counters = counters;
        _limits = limits;
        _logger = logger;
        // Public clients cause refusals at will: every one is counted, one a second is logged.
        _refusals = new LogSampler(TimeProvider.System, TimeSpan.FromSeconds(1), (count, interval) => RelayLog.ConnectionsRefusedSummary(logger, count, interval));
        var admissions = routes.Cast<Admission>().ToArray();
        var endpoints = admissions.Select(a => a.Endpoint).ToArray();
        _routes = new RouteTable<Admission>(admissions);
        Protocol = endpoints[0].IsTls ? "tls" : "tcp";
        if (!endpoints[0].IsTls)
        {
            _single = admissions[0];
        }

        Key = RelayOptionsValidator.ListenerKey(endpoints[0]);
        var endPoint = RelayOptionsValidator.ParseEndPoint(endpoints[0].Listen);
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
            _refusals.Dispose();
            throw new RelayStartException($"Cloud endpoint '{Name}' cannot listen on {endPoint}: {ex.Message}", ex);
        }

        LocalEndPoint = (IPEndPoint)_listener.LocalEndPoint!;
    }

    public string Protocol { get; }

    public string Key { get; }

    /// <summary>The endpoints this listener serves now (one for tcp).</summary>
    public IEnumerable<CloudEndpointOptions> Endpoints => _routes.Current.Routes.Select(r => r.Endpoint);

    /// <summary>A name for logs: the endpoint's, or the tls endpoints' joined.</summary>
    public string Name => string.Join(", ", Endpoints.Select(e => e.Name));

    /// <summary>The address actually bound (the real port when the configuration said 0).</summary>
    public IPEndPoint LocalEndPoint { get; }

    public IRouteTable Routes => _routes;

    /// <summary>A new route for a tcp or tls endpoint: its settings and its connection caps.</summary>
    public static IEndpointRoute CreateRoute(CloudEndpointOptions endpoint) => new Admission(endpoint);

    public void Start()
    {
        _listener.Listen(1024);
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
                RelayLog.AcceptFailed(_logger, Name, $"{ex.SocketErrorCode}: {ex.Message}");
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
                RelayLog.AcceptFailed(_logger, Name, $"{ex.GetType().Name}: {ex.Message}");
            }
        }
    }

    private void Admit(Socket socket)
    {
        socket.NoDelay = true;
        if (_single is not null)
        {
            AdmitTo(_single, socket, default, null);
            return;
        }

        // Bounded: a flood of connections that send nothing cannot hold more than this many ClientHello buffers.
        if (Interlocked.Increment(ref _readingClientHellos) > _limits.MaxPendingClientHellos)
        {
            Interlocked.Decrement(ref _readingClientHellos);
            _counters.OnRefused(RefusalReason.EndpointLimit);
            SocketIo.Reset(socket);
            return;
        }

        _ = RouteByServerNameAsync(socket);
    }

    /// <summary>Reads the ClientHello (within ClientHelloTimeout), routes by its server name, and offers the connection.</summary>
    private async Task RouteByServerNameAsync(Socket socket)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(ClientHello.MaxBytes + 1024);
        var filled = 0;
        string? serverName = null;
        string? problem = null;
        var status = ClientHelloStatus.NeedMore;
        try
        {
            using var deadline = new CancellationTokenSource(_limits.ClientHelloTimeout);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(deadline.Token, _stopping.Token);
            while (status == ClientHelloStatus.NeedMore)
            {
                if (filled == buffer.Length)
                {
                    status = ClientHelloStatus.Invalid;
                    problem = "the ClientHello is larger than the relay reads";
                    break;
                }

                int read;
                try
                {
                    read = await socket.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None, linked.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    problem = $"no complete ClientHello within {_limits.ClientHelloTimeout}";
                    break;
                }

                if (read == 0)
                {
                    problem = "the client closed before its ClientHello was complete";
                    break;
                }

                filled += read;
                status = ClientHello.TryReadServerName(buffer.AsSpan(0, filled), out serverName, out problem);
            }

            var admission = status == ClientHelloStatus.Complete ? _routes.Current.Match(serverName) : null;
            if (admission is null)
            {
                var reason = status == ClientHelloStatus.Complete
                    ? serverName is null ? "the ClientHello names no server (SNI)" : $"no endpoint is served at '{serverName}' here"
                    : problem ?? "not a TLS ClientHello";
                _counters.OnRefused(status == ClientHelloStatus.Complete ? RefusalReason.UnknownHost : RefusalReason.BadClientHello);
                if (_refusals.ShouldLog(out var suppressed))
                {
                    RelayLog.ConnectionRefused(_logger, Name, ClientAddress.KeyOf(SafeRemote(socket)).ToString(), reason, suppressed);
                }

                SocketIo.Reset(socket);
                return;
            }

            AdmitTo(admission, socket, buffer.AsMemory(0, filled).ToArray(), serverName);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            SocketIo.Reset(socket);
        }
        finally
        {
            buffer.AsSpan(0, filled).Clear();
            ArrayPool<byte>.Shared.Return(buffer);
            Interlocked.Decrement(ref _readingClientHellos);
        }
    }

    private static EndPoint? SafeRemote(Socket socket)
    {
        try
        {
            return socket.RemoteEndPoint;
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            return null;
        }
    }

    private void AdmitTo(Admission admission, Socket socket, ReadOnlyMemory<byte> prefix, string? serverName)
    {
        // Read once: the settings this connection keeps for its whole life, whatever an update does after.
        var options = admission.Endpoint;
        var remote = SafeRemote(socket);
        if (options.CompiledPolicy is { HasConnectRules: true } policy
            && policy.OnConnect((remote as IPEndPoint)?.Address ?? IPAddress.None) is { } denial)
        {
            // Before the agent hears of it: the client gets a reset, nothing reaches the customer's network.
            _router.OnPolicyDenied(options, remote?.ToString() ?? "unknown", denial);
            SocketIo.Reset(socket);
            return;
        }

        var address = ClientAddress.KeyOf(remote);
        if (admission.TryEnter(options, address) is { } reason)
        {
            _router.Refuse(new PublicConnection(socket, options, null, prefix, serverName), reason, reason == RefusalReason.EndpointLimit
                ? $"the endpoint carries {options.MaxConnections} connections (limit MaxConnections)"
                : $"{address} has {options.MaxConnectionsPerClientIp} connections open here (limit MaxConnectionsPerClientIp)");
            return;
        }

        // From here the connection owns its place in the limits: every way it ends (refused, expired, bridged, failed)
        // closes it once, which gives the place back.
        var connection = new PublicConnection(socket, options, () => admission.Exit(address), prefix, serverName);
        try
        {
            _router.Offer(connection);
        }
        catch
        {
            connection.Reset();
            throw;
        }
    }

    public Task StopAsync(CancellationToken abort) => DisposeAsync().AsTask();

    /// <summary>Stops accepting; the connections accepted go on (they are the router's and the bridges' now).</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _stopping.CancelAsync().ConfigureAwait(false);
        _listener.Dispose();
        _refusals.Dispose();
        try
        {
            await _acceptLoop.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }

        _stopping.Dispose();
    }

    /// <summary>
    /// One endpoint's route: its settings (replaced whole by an update, read once per connection) and its caps on
    /// connections in all and per client address, which connections admitted before an update keep counting against.
    /// </summary>
    private sealed class Admission(CloudEndpointOptions endpoint) : IEndpointRoute
    {
        private readonly KeyedCounter<IPAddress> _perAddress = new();
        private readonly Lock _gate = new();
        private CloudEndpointOptions _endpoint = endpoint;
        private int _connections;

        public CloudEndpointOptions Endpoint => Volatile.Read(ref _endpoint);

        public int ActiveConnections => Volatile.Read(ref _connections);

        public bool TryUpdate(CloudEndpointOptions endpoint)
        {
            Volatile.Write(ref _endpoint, endpoint);
            return true;
        }

        public void Retire()
        {
            // Nothing held beyond the connections themselves, which give their places back as they close.
        }

        /// <summary>Takes a place under <paramref name="options"/>' caps; the refusal reason when there is none.</summary>
        public RefusalReason? TryEnter(CloudEndpointOptions options, IPAddress address)
        {
            lock (_gate)
            {
                if (_connections >= options.MaxConnections)
                {
                    return RefusalReason.EndpointLimit;
                }

                if (!_perAddress.TryIncrement(address, options.MaxConnectionsPerClientIp))
                {
                    return RefusalReason.ClientIpLimit;
                }

                _connections++;
                return null;
            }
        }

        public void Exit(IPAddress address)
        {
            lock (_gate)
            {
                _connections--;
                _perAddress.Decrement(address);
            }
        }
    }
}
