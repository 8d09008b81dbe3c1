using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;

namespace SiteLink.AspNetCore.Transport;

/// <summary>
/// One Kestrel address served by one listener endpoint of the session. The endpoint outlives reconnections (the SDK
/// binds it again), so accepting goes on across them; it ends when Kestrel unbinds, the session closes, or the relay
/// refuses a rebind — then <see cref="AcceptAsync"/> returns null, which stops Kestrel's accept loop for this address.
/// </summary>
internal sealed class SiteLinkConnectionListener(SiteLinkEndPoint endPoint, ITunnelListener listener, ConnectionSettings settings, ILogger logger) : IConnectionListener
{
    private int _unbinding;

    public EndPoint EndPoint => endPoint;

    public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
    {
        TunnelConnection tunnel;
        try
        {
            tunnel = await listener.AcceptAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (ObjectDisposedException)
        {
            if (Volatile.Read(ref _unbinding) == 0)
            {
                // Not Kestrel's doing: the relay refused a rebind, or the session faulted or closed underneath the server.
                var reason = listener.Completion.Exception?.InnerException?.Message ?? "the endpoint was unbound or the session closed";
                TransportLog.EndpointEnded(logger, endPoint.EndpointName, reason);
            }

            return null;
        }

        var connection = new SiteLinkConnection(tunnel, endPoint, settings);
        connection.Start();
        return connection;
    }

    /// <summary>Stops new connections (the relay removes the route); those accepted go on until Kestrel closes them.</summary>
    public async ValueTask UnbindAsync(CancellationToken cancellationToken = default)
    {
        Volatile.Write(ref _unbinding, 1);
        await listener.DisposeAsync().AsTask().WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    public ValueTask DisposeAsync()
    {
        Volatile.Write(ref _unbinding, 1);
        return listener.DisposeAsync();
    }
}
