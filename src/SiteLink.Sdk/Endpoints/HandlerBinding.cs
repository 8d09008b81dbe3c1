using SiteLink.Protocol;
using SiteLink.Protocol.V1;

namespace SiteLink.Endpoints;

/// <summary>Hands each connection to an in-process handler.</summary>
internal sealed class HandlerBinding : EndpointBinding
{
    private readonly TunnelConnectionHandler _handler;

    public HandlerBinding(TunnelSession session, string name, TunnelConnectionHandler handler)
        : base(session, name)
    {
        _handler = handler;
    }

    public override TunnelEndpointKind Kind => TunnelEndpointKind.Handler;

    public override async Task ServeAsync(ConnectionRun run, OpenStream offer, TunnelConnectionInfo info, CancellationToken cancellationToken)
    {
        var tunnel = Session.TryOpenStream(run, offer, Name);
        if (tunnel is null)
        {
            return;
        }

        var connection = new TunnelConnection(info, tunnel);
        BridgeResult result;
        try
        {
            await _handler(connection, cancellationToken).ConfigureAwait(false);
            await connection.DisposeAsync().ConfigureAwait(false);
            result = BridgeResult.Completed;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            tunnel.Abort();
            result = BridgeResult.Canceled;
        }
#pragma warning disable CA1031 // A handler's failure must not take the session down; it is logged and the connection aborted.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            // Logged before the abort, so whoever sees the connection fail can already find why.
            Session.OnHandlerFailed(offer, Name, ex);
            tunnel.Abort();
            result = BridgeResult.UpstreamFailed;
        }

        Session.OnConnectionClosed(offer, Name, result);
    }
}
