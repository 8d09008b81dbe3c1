using System.Runtime.CompilerServices;
using System.Threading.Channels;

namespace SiteLink.Endpoints;

/// <summary>Queues each connection for the application to accept.</summary>
internal sealed class ListenerBinding : EndpointBinding, ITunnelListener
{
    private readonly Channel<TunnelConnection> _backlog;
    private readonly int _capacity;

    public ListenerBinding(TunnelSession session, string name, int backlog, EndpointOptions? options)
        : base(session, name, options)
    {
        _capacity = backlog;
        _backlog = Channel.CreateBounded<TunnelConnection>(new BoundedChannelOptions(backlog)
        {
            SingleWriter = false,
            FullMode = BoundedChannelFullMode.Wait,
        });
    }

    public override TunnelEndpointKind Kind => TunnelEndpointKind.Listener;

    public async ValueTask<TunnelConnection> AcceptAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            return await _backlog.Reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (ChannelClosedException ex)
        {
            throw new ObjectDisposedException($"The listener for endpoint '{Name}' is unbound.", ex);
        }
    }

    public async IAsyncEnumerable<TunnelConnection> AcceptAllAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        while (await _backlog.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
        {
            while (_backlog.Reader.TryRead(out var connection))
            {
                yield return connection;
            }
        }
    }

    public override Task ServeAsync(Offer offer, CancellationToken cancellationToken)
    {
        if (_backlog.Reader.Count >= _capacity)
        {
            Session.RefuseOverloaded(offer, Name);
            return Task.CompletedTask;
        }

        var tunnel = Session.TryOpenStream(offer);
        if (tunnel is null)
        {
            return Task.CompletedTask;
        }

        if (!_backlog.Writer.TryWrite(new TunnelConnection(offer.Info, tunnel)))
        {
            // Full or unbound since the check above.
            tunnel.Abort();
        }

        return Task.CompletedTask;
    }

    protected override void OnClosed()
    {
        _backlog.Writer.TryComplete();
        // Connections nobody accepted are aborted so their clients are not left waiting.
        while (_backlog.Reader.TryRead(out var pending))
        {
            pending.Stream.Abort();
        }
    }
}
