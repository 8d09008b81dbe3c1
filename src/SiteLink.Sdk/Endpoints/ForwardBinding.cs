using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using SiteLink.Bridging;
using SiteLink.Internal;

namespace SiteLink.Endpoints;

/// <summary>Forwards each connection to a TCP service the agent connects to (<c>tcp://host:port</c>).</summary>
internal sealed class ForwardBinding : EndpointBinding
{
    private readonly Uri _upstream;
    private readonly string _host;
    private readonly int _port;
    private readonly ProxyProtocolVersion _proxyProtocol;
    private readonly UpstreamTlsOptions? _upstreamTls;
    private readonly SslServerAuthenticationOptions? _tlsServer;

    public ForwardBinding(TunnelSession session, string name, Uri upstream, EndpointOptions? options)
        : base(session, name, options)
    {
        _upstream = upstream;
        _host = Upstreams.HostOf(upstream);
        _port = upstream.Port;
        _proxyProtocol = options?.ProxyProtocol ?? ProxyProtocolVersion.None;
        _upstreamTls = Upstreams.IsTls(upstream) ? options?.UpstreamTls ?? new UpstreamTlsOptions() : null;
        _tlsServer = options?.TlsServer;
    }

    public override TunnelEndpointKind Kind => TunnelEndpointKind.Forward;

    public override Uri Upstream => _upstream;

    public override async Task ServeAsync(Offer offer, CancellationToken cancellationToken)
    {
        Socket? upstream = null;
        SslStream? upstreamTls = null;
        try
        {
            // Inside the try: even creating the socket can fail (no file descriptors left), and the offer must be answered.
            upstream = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            using var timeout = new CancellationTokenSource(Session.Options.UpstreamConnectTimeout, Session.Options.TimeProvider);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
            await upstream.ConnectAsync(_host, _port, linked.Token).ConfigureAwait(false);
            if (_proxyProtocol != ProxyProtocolVersion.None)
            {
                // Before any byte of the client's (and before TLS): the upstream reads who connected, then the connection.
                var header = ProxyProtocolHeader.Create(_proxyProtocol, offer.Info.ClientAddress, upstream.RemoteEndPoint, offer.Info.ServerName);
                await upstream.SendAsync(header, SocketFlags.None, linked.Token).ConfigureAwait(false);
            }

            if (_upstreamTls is not null)
            {
                upstreamTls = new SslStream(new NetworkStream(upstream, ownsSocket: false), leaveInnerStreamOpen: false);
                await upstreamTls.AuthenticateAsClientAsync(_upstreamTls.ClientOptions(_host), linked.Token).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is SocketException or OperationCanceledException or AuthenticationException or IOException)
        {
            if (upstreamTls is not null)
            {
                await upstreamTls.DisposeAsync().ConfigureAwait(false);
            }

            upstream?.Dispose();
            var reason = ex switch
            {
                SocketException se => $"{se.SocketErrorCode}: {se.Message}",
                AuthenticationException or IOException => $"TLS to the upstream failed: {ex.Message}",
                _ when cancellationToken.IsCancellationRequested => "session closing",
                _ => $"connect timed out after {Session.Options.UpstreamConnectTimeout}",
            };
            Session.RefuseUpstreamUnavailable(offer, this, reason);
            return;
        }

        var tunnel = Session.TryOpenStream(offer);
        if (tunnel is null)
        {
            if (upstreamTls is not null)
            {
                await upstreamTls.DisposeAsync().ConfigureAwait(false);
            }

            upstream.Dispose();
            return;
        }

        if (_tlsServer is null && upstreamTls is null)
        {
            // Bytes as they come: the socket fast path.
            var plain = await StreamBridge.RunAsync(upstream, tunnel, cancellationToken).ConfigureAwait(false);
            Session.OnConnectionClosed(offer, plain);
            return;
        }

        var upstreamSide = upstreamTls is { } tls
            ? new Duplex(tls, async () => { await tls.ShutdownAsync().ConfigureAwait(false); ShutdownSend(upstream); }, () => SocketIo.Reset(upstream), async () => { await tls.DisposeAsync().ConfigureAwait(false); upstream.Dispose(); })
            : new Duplex(new NetworkStream(upstream, ownsSocket: false), () => { ShutdownSend(upstream); return ValueTask.CompletedTask; }, () => SocketIo.Reset(upstream), () => { upstream.Dispose(); return ValueTask.CompletedTask; });
        Duplex tunnelSide;
        if (_tlsServer is null)
        {
            tunnelSide = new Duplex(tunnel, () => tunnel.CompleteWritesAsync(), tunnel.Abort, () => tunnel.DisposeAsync());
        }
        else
        {
            // TLS ends here, inside the customer's network: the relay carried only ciphertext.
            var serverTls = new SslStream(tunnel, leaveInnerStreamOpen: true);
            try
            {
                using var handshake = new CancellationTokenSource(Session.Options.UpstreamConnectTimeout, Session.Options.TimeProvider);
                using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, handshake.Token);
                await serverTls.AuthenticateAsServerAsync(_tlsServer, linked.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is AuthenticationException or IOException or OperationCanceledException)
            {
                Session.OnTlsHandshakeFailed(offer, ex);
                await serverTls.DisposeAsync().ConfigureAwait(false);
                tunnel.Abort();
                upstreamSide.Abort();
                Session.OnConnectionClosed(offer, BridgeResult.TunnelFailed);
                return;
            }

            tunnelSide = new Duplex(serverTls, async () => { await serverTls.ShutdownAsync().ConfigureAwait(false); await tunnel.CompleteWritesAsync().ConfigureAwait(false); }, tunnel.Abort,
                async () => { await serverTls.DisposeAsync().ConfigureAwait(false); await tunnel.DisposeAsync().ConfigureAwait(false); });
        }

        var result = await StreamPump.RunAsync(upstreamSide, tunnelSide, cancellationToken).ConfigureAwait(false);
        Session.OnConnectionClosed(offer, result);
    }

    private static void ShutdownSend(Socket socket)
    {
        try
        {
            socket.Shutdown(SocketShutdown.Send);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // Already gone; the other direction reports it.
        }
    }
}
