using System.Globalization;
using System.Net.Sockets;

namespace SiteLink.Endpoints;

/// <summary>Forwards each connection to a TCP service the agent connects to.</summary>
internal sealed class TcpForwardBinding : EndpointBinding
{
    private readonly string _host;
    private readonly int _port;

    public TcpForwardBinding(TunnelSession session, string name, string host, int port)
        : base(session, name)
    {
        _host = host;
        _port = port;
    }

    public override TunnelEndpointKind Kind => TunnelEndpointKind.TcpForward;

    public override string Upstream => _host.Contains(':', StringComparison.Ordinal)
        ? $"[{_host}]:{_port.ToString(CultureInfo.InvariantCulture)}"
        : $"{_host}:{_port.ToString(CultureInfo.InvariantCulture)}";

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
