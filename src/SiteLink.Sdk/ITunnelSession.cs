namespace SiteLink;

/// <summary>
/// An agent's session with a SiteLink relay: one outbound HTTP/2 connection carrying a control stream and one
/// stream per tunnelled connection. Endpoints bound on the session receive the connections the relay routes to them.
/// Create one with <see cref="TunnelSession.ConnectAsync"/>; dispose it to unbind everything and disconnect.
/// </summary>
public interface ITunnelSession : IAsyncDisposable
{
    /// <summary>The relay-assigned identifier of the current session.</summary>
    string SessionId { get; }

    /// <summary>Which relay this session is connected to.</summary>
    RelayInfo Relay { get; }

    /// <summary>
    /// Each relay this session connects to and how that connection stands: one entry for
    /// <see cref="TunnelSessionOptions.RelayUrl"/>, one per relay with <see cref="TunnelSessionOptions.RelayUrls"/>, in
    /// the order given. (The default, for implementations of one relay such as test doubles, describes <see cref="Relay"/>.)
    /// </summary>
    IReadOnlyList<TunnelRelayStatus> Relays => [new TunnelRelayStatus(Relay.Url, Relay.RelayId, Relay.Region, State, LastHeartbeatRoundTrip, SessionId, Fault)];

    /// <summary>The session's state.</summary>
    TunnelSessionState State { get; }

    /// <summary>The endpoints currently bound (while reconnecting, none are).</summary>
    IReadOnlyCollection<ITunnelEndpoint> Endpoints { get; }

    /// <summary>Why the session is <see cref="TunnelSessionState.Faulted"/>; null in any other state.</summary>
    TunnelException? Fault { get; }

    /// <summary>The round-trip time of the last heartbeat the relay answered; null before the first answer.</summary>
    TimeSpan? LastHeartbeatRoundTrip { get; }

    /// <summary>The number of tunnelled connections being served right now.</summary>
    int ActiveConnections { get; }

    /// <summary>Raised on every state change, with the reason. Handlers run on the session's threads and must not block.</summary>
    event EventHandler<TunnelStateChangedEventArgs>? StateChanged;

    /// <summary>Raised when a reconnect attempt failed, with the attempt number, the delay before the next and the cause.</summary>
    event EventHandler<TunnelReconnectEventArgs>? ReconnectAttemptFailed;

    /// <summary>Raised after each bind, including the automatic rebinds after a reconnect; a refused rebind removes the endpoint.</summary>
    event EventHandler<TunnelBindEventArgs>? BindCompleted;

    /// <summary>Raised when the relay hands the agent a tunnelled connection, before it is served.</summary>
    event EventHandler<TunnelConnectionEventArgs>? ConnectionOpened;

    /// <summary>Raised once per opened connection when it ends, with its outcome and duration.</summary>
    event EventHandler<TunnelConnectionEventArgs>? ConnectionClosed;

    /// <summary>
    /// Closes the session gracefully: new connections stop at once (every endpoint is unbound), connections in flight
    /// may finish until <see cref="TunnelSessionOptions.DrainTimeout"/> or until <paramref name="cancellationToken"/>
    /// is signalled, then the rest are closed and the connection to the relay ends. Calling it again returns the same task.
    /// </summary>
    Task CloseAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// Binds <paramref name="name"/> so that each connection the relay routes to it is forwarded to the service at
    /// <paramref name="upstream"/> (<c>tcp://host:port</c>), which the agent connects to itself.
    /// </summary>
    /// <param name="name">The internal endpoint name the relay's cloud endpoints refer to (letters, digits, '-', '_', '.').</param>
    /// <param name="upstream">Where connections go, e.g. <c>new Uri("tcp://10.0.0.12:5432")</c>.</param>
    /// <param name="options">The endpoint's settings (description, metadata); copied, null for the defaults.</param>
    /// <param name="cancellationToken">Stops waiting for the relay's answer (the endpoint is then removed).</param>
    /// <returns>The endpoint; dispose it to unbind.</returns>
    /// <remarks>
    /// While the session is connecting or reconnecting, the endpoint is accepted at once (not bound yet) and bound with
    /// the others once connected; <see cref="BindCompleted"/> and <see cref="ITunnelEndpoint.Completion"/> tell the outcome.
    /// </remarks>
    /// <exception cref="TunnelBindException">The relay refused the name (access list, taken, invalid, limit).</exception>
    /// <exception cref="TunnelConnectionException">The session is faulted or closed, or the relay did not answer.</exception>
    /// <exception cref="ArgumentException">
    /// The name is empty or already bound in this session, the upstream is not <c>tcp://host:port</c>, or the options
    /// are past their limits.
    /// </exception>
    Task<ITunnelEndpoint> ForwardAsync(string name, Uri upstream, EndpointOptions? options = null, CancellationToken cancellationToken = default);

    /// <summary>
    /// Binds <paramref name="name"/> to an in-process handler, called once per tunnelled connection with a duplex stream.
    /// The connection is closed when the handler's task completes; an exception from the handler aborts it and is logged.
    /// </summary>
    /// <param name="name">The internal endpoint name.</param>
    /// <param name="handler">Serves one connection; called concurrently for concurrent connections.</param>
    /// <param name="options">The endpoint's settings; copied, null for the defaults.</param>
    /// <param name="cancellationToken">Stops waiting for the relay's answer.</param>
    /// <exception cref="TunnelBindException">The relay refused the name.</exception>
    /// <exception cref="TunnelConnectionException">The session is faulted or closed, or the relay did not answer.</exception>
    /// <exception cref="ArgumentException">The name is empty or already bound, or the options are past their limits.</exception>
    Task<ITunnelEndpoint> BindHandlerAsync(string name, TunnelConnectionHandler handler, EndpointOptions? options = null, CancellationToken cancellationToken = default);

    /// <summary>
    /// Binds <paramref name="name"/> to a listener the application pulls connections from, like a socket listener.
    /// </summary>
    /// <param name="name">The internal endpoint name.</param>
    /// <param name="options">The endpoint's settings; copied, null for the defaults.</param>
    /// <param name="cancellationToken">Stops waiting for the relay's answer.</param>
    /// <exception cref="TunnelBindException">The relay refused the name.</exception>
    /// <exception cref="TunnelConnectionException">The session is faulted or closed, or the relay did not answer.</exception>
    /// <exception cref="ArgumentException">The name is empty or already bound, or the options are past their limits.</exception>
    Task<ITunnelListener> ListenAsync(string name, EndpointOptions? options = null, CancellationToken cancellationToken = default);
}

/// <summary>The lifecycle of a <see cref="ITunnelSession"/>.</summary>
public enum TunnelSessionState
{
    /// <summary>Connecting to the relay for the first time.</summary>
    Connecting,

    /// <summary>Connected; bound endpoints receive connections.</summary>
    Connected,

    /// <summary>The connection was lost; the session is trying to connect again.</summary>
    Reconnecting,

    /// <summary>The session stopped because of an error retrying cannot fix (bad token, permission, version) or a lost connection.</summary>
    Faulted,

    /// <summary>The session was disposed.</summary>
    Closed,
}

/// <summary>The relay a session is connected to, as it introduced itself.</summary>
/// <param name="RelayId">The relay's identifier.</param>
/// <param name="Region">The relay's region or point of presence, empty when it names none.</param>
/// <param name="Url">The address the agent dialled.</param>
public sealed record RelayInfo(string RelayId, string Region, Uri Url);

/// <summary>Handles one tunnelled connection of an in-process endpoint.</summary>
/// <param name="connection">The connection: a duplex stream and who connected. Disposed by the SDK after the handler returns.</param>
/// <param name="cancellationToken">Signalled when the session is closing or the connection was aborted.</param>
public delegate Task TunnelConnectionHandler(TunnelConnection connection, CancellationToken cancellationToken);

/// <summary>Shorthands of <see cref="ITunnelSession"/> (extension methods, so the interface stays small for test doubles).</summary>
public static class TunnelSessionExtensions
{
    /// <summary>As <see cref="ITunnelSession.ForwardAsync(string, Uri, EndpointOptions?, CancellationToken)"/> with default options.</summary>
    public static Task<ITunnelEndpoint> ForwardAsync(this ITunnelSession session, string name, Uri upstream, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(session);
        return session.ForwardAsync(name, upstream, null, cancellationToken);
    }

    /// <summary>As <see cref="ITunnelSession.BindHandlerAsync(string, TunnelConnectionHandler, EndpointOptions?, CancellationToken)"/> with default options.</summary>
    public static Task<ITunnelEndpoint> BindHandlerAsync(this ITunnelSession session, string name, TunnelConnectionHandler handler, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(session);
        return session.BindHandlerAsync(name, handler, null, cancellationToken);
    }

    /// <summary>As <see cref="ITunnelSession.ListenAsync(string, EndpointOptions?, CancellationToken)"/> with default options.</summary>
    public static Task<ITunnelListener> ListenAsync(this ITunnelSession session, string name, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(session);
        return session.ListenAsync(name, null, cancellationToken);
    }
}
