
namespace SiteLink.Endpoints;

/// <summary>
/// An endpoint the application bound on a session: its name, its relay bind id, and how it serves a connection.
/// It outlives connections to the relay: after a reconnect the session binds it again with the same bind id.
/// </summary>
internal abstract class EndpointBinding : ITunnelEndpoint
{
    private readonly TunnelSession _session;
    private int _bound;
    private int _closed;
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);

    protected EndpointBinding(TunnelSession session, string name, EndpointOptions? options)
    {
        _session = session;
        Name = name;
        Description = string.IsNullOrEmpty(options?.Description) ? null : options.Description;
        Metadata = options is null || options.Metadata.Count == 0
            ? System.Collections.ObjectModel.ReadOnlyDictionary<string, string>.Empty
            : options.Metadata.ToDictionary(StringComparer.Ordinal).AsReadOnly();
        Pooling = options?.Pooling ?? false;
        BindId = "b-" + Guid.NewGuid().ToString("N");
        Connections = new Resilience.ConnectionLimit(session.Options.MaxConcurrentConnectionsPerEndpoint);
    }

    /// <summary>The connections this endpoint serves at once (<see cref="TunnelSessionOptions.MaxConcurrentConnectionsPerEndpoint"/>).</summary>
    public Resilience.ConnectionLimit Connections { get; }

    public string Name { get; }

    public string BindId { get; }

    public abstract TunnelEndpointKind Kind { get; }

    public virtual Uri? Upstream => null;

    public string? Description { get; }

    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Bound as a member of a pool (<see cref="EndpointOptions.Pooling"/>).</summary>
    public bool Pooling { get; }

    /// <summary>Bound on the current connection to the relay.</summary>
    public bool IsBound => Volatile.Read(ref _bound) == 1;

    /// <summary>Removed for good: unbound by the application, refused on rebind, or the session closed.</summary>
    public bool IsClosed => Volatile.Read(ref _closed) == 1;

    protected TunnelSession Session => _session;

    /// <summary>Bound (true) or waiting to be bound again after a reconnect (false).</summary>
    internal void SetBound(bool bound) => Volatile.Write(ref _bound, bound ? 1 : 0);

    public Task Completion => _completion.Task;

    /// <summary>Removes the endpoint for good, ended by <paramref name="reason"/> (null: by the application); returns false when it already was.</summary>
    internal bool Close(Exception? reason = null)
    {
        SetBound(false);
        if (Interlocked.Exchange(ref _closed, 1) != 0)
        {
            return false;
        }

        OnClosed();
        if (reason is null)
        {
            _completion.TrySetResult();
        }
        else
        {
            _completion.TrySetException(reason);
            // Most applications never await Completion: its fault must not surface as an unobserved task exception.
            _ = _completion.Task.Exception;
        }

        return true;
    }

    protected virtual void OnClosed()
    {
    }

    /// <summary>Serves one connection the relay offered. Must answer the offer: open the stream or refuse it.</summary>
    public abstract Task ServeAsync(Offer offer, CancellationToken cancellationToken);

    public ValueTask DisposeAsync() => _session.UnbindAsync(this);
}
