using SiteLink.Protocol.V1;

namespace SiteLink.Endpoints;

/// <summary>
/// An endpoint bound (or being bound) on a session: its name, its relay bind id, and how it serves a connection.
/// </summary>
internal abstract class EndpointBinding : ITunnelEndpoint
{
    private readonly TunnelSession _session;
    private int _bound;

    protected EndpointBinding(TunnelSession session, string name)
    {
        _session = session;
        Name = name;
        BindId = "b-" + Guid.NewGuid().ToString("N");
    }

    public string Name { get; }

    public string BindId { get; }

    public abstract TunnelEndpointKind Kind { get; }

    public virtual string? Upstream => null;

    public bool IsBound => Volatile.Read(ref _bound) == 1;

    protected TunnelSession Session => _session;

    internal void MarkBound() => Volatile.Write(ref _bound, 1);

    /// <summary>Marks the endpoint unbound; returns false when it already was.</summary>
    internal virtual bool MarkUnbound() => Interlocked.Exchange(ref _bound, 0) == 1;

    /// <summary>Serves one connection the relay offered. Must answer the offer: open the stream or refuse it.</summary>
    public abstract Task ServeAsync(OpenStream offer, TunnelConnectionInfo info, CancellationToken cancellationToken);

    public ValueTask DisposeAsync() => _session.UnbindAsync(this);
}
