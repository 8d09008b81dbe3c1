using System.Net.Sockets;

namespace SiteLink.Endpoints;

/// <summary>Forwards each connection to a TCP service the agent connects to (<c>tcp://host:port</c>).</summary>
internal sealed class ForwardBinding : EndpointBinding
{
    private readonly Uri _upstream;
    private readonly string _host;
    private readonly int _port;
    private readonly ProxyProtocolVersion _proxyProtocol;

    public ForwardBinding(TunnelSession session, string name, Uri upstream, EndpointOptions? options)
        : base(session, name, options)
    {
        _upstream = upstream;
        _host = Upstreams.HostOf(upstream);
        _port = upstream.Port;
        _proxyProtocol = options?.ProxyProtocol ?? ProxyProtocolVersion.None;
    }

    public override TunnelEndpointKind Kind => TunnelEndpointKind.Forward;

    public override Uri Upstream => _upstream;

    public override async Task ServeAsync(Offer offer, CancellationToken cancellationToken)
    {
        Socket? upstream = null;
        try
        {
            // Inside the try: even creating the socket can fail (no file descriptors left), and the offer must be answered.
            upstream = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            using var timeout = new CancellationTokenSource(Session.Options.UpstreamConnectTimeout, Session.Options.TimeProvider);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
            await upstream.ConnectAsync(_host, _port, linked.Token).ConfigureAwait(false);
            if (_proxyProtocol != ProxyProtocolVersion.None)
            {
                // Before any byte of the client's: the upstream reads who connected, then the connection.
                var header = ProxyProtocolHeader.Create(_proxyProtocol, offer.Info.ClientAddress, upstream.RemoteEndPoint, offer.Info.ServerName);
                await upstream.SendAsync(header, SocketFlags.None, linked.Token).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is SocketException or OperationCanceledException)
        {
            upstream?.Dispose();
            var reason = ex is SocketException se
                ? $"{se.SocketErrorCode}: {se.Message}"
                : cancellationToken.IsCancellationRequested ? "session closing" : $"connect timed out after {Session.Options.UpstreamConnectTimeout}";
            Session.RefuseUpstreamUnavailable(offer, this, reason);
            return;
        }

        var tunnel = Session.TryOpenStream(offer);
        if (tunnel is null)
        {
            upstream.Dispose();
            return;
        }

        var result = await StreamBridge.RunAsync(upstream, tunnel, cancellationToken).ConfigureAwait(false);
        Session.OnConnectionClosed(offer, result);
    }
}
