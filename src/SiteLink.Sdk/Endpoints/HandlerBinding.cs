
namespace SiteLink.Endpoints;

/// <summary>Hands each connection to an in-process handler.</summary>
internal sealed class HandlerBinding : EndpointBinding
{
    private readonly TunnelConnectionHandler _handler;

    public HandlerBinding(TunnelSession session, string name, TunnelConnectionHandler handler, EndpointOptions? options)
        : base(session, name, options)
    {
        _handler = handler;
    }

    public override TunnelEndpointKind Kind => TunnelEndpointKind.Handler;

    public override async Task ServeAsync(Offer offer, CancellationToken cancellationToken)
    {
        var tunnel = Session.TryOpenStream(offer);
        if (tunnel is null)
        {
            return;
        }

        var connection = new TunnelConnection(offer.Info, tunnel);
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
            Session.OnHandlerFailed(offer, ex);
            tunnel.Abort();
            result = BridgeResult.UpstreamFailed;
        }

        Session.OnConnectionClosed(offer, result);
    }
}
