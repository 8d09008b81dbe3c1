namespace SiteLink;

/// <summary>What an endpoint forwards its connections to.</summary>
public enum TunnelEndpointKind
{
    /// <summary>A service the agent connects to (<see cref="ITunnelSession.ForwardAsync(string, Uri, EndpointOptions?, CancellationToken)"/>).</summary>
    Forward,

    /// <summary>An in-process <see cref="TunnelConnectionHandler"/>.</summary>
    Handler,

    /// <summary>A <see cref="ITunnelListener"/> the application accepts from.</summary>
    Listener,
}

/// <summary>A named internal endpoint bound on a session. Dispose it to unbind.</summary>
public interface ITunnelEndpoint : IAsyncDisposable
{
    /// <summary>The internal endpoint name, as the relay's cloud endpoints refer to it.</summary>
    string Name { get; }

    /// <summary>What the endpoint forwards to.</summary>
    TunnelEndpointKind Kind { get; }

    /// <summary>For <see cref="TunnelEndpointKind.Forward"/>, the service connections go to (<c>tcp://host:port</c>); otherwise <see langword="null"/>.</summary>
    Uri? Upstream { get; }

    /// <summary>The description sent to the relay (<see cref="EndpointOptions.Description"/>); null when none.</summary>
    string? Description { get; }

    /// <summary>The metadata sent to the relay (<see cref="EndpointOptions.Metadata"/>), as it was when the endpoint was bound.</summary>
    IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Whether the endpoint is still bound.</summary>
    bool IsBound { get; }

    /// <summary>
    /// Completes when the endpoint ends for good: successfully when the application unbound it or closed the session;
    /// faulted with the <see cref="TunnelException"/> that ended it when the relay refused it on a rebind
    /// (<see cref="TunnelBindException"/>) or the session faulted. A lost connection does not end it (it is bound again).
    /// It completes as soon as the agent stops routing connections to the endpoint; <c>DisposeAsync</c> returns once the
    /// relay also confirmed the route is gone.
    /// </summary>
    Task Completion { get; }
}

/// <summary>An endpoint whose connections the application accepts itself.</summary>
public interface ITunnelListener : ITunnelEndpoint
{
    /// <summary>
    /// Waits for the next connection routed to this endpoint.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The listener was unbound or the session closed.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was signalled.</exception>
    ValueTask<TunnelConnection> AcceptAsync(CancellationToken cancellationToken = default);

    /// <summary>Yields connections as they arrive, until the listener is unbound or <paramref name="cancellationToken"/> is signalled.</summary>
    IAsyncEnumerable<TunnelConnection> AcceptAllAsync(CancellationToken cancellationToken = default);
}
