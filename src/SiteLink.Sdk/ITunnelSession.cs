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
    /// Binds <paramref name="name"/> so that each connection the relay routes to it is forwarded to the TCP service at
    /// <paramref name="host"/>:<paramref name="port"/>, which the agent connects to itself.
    /// </summary>
    /// <remarks>
    /// While the session is connecting or reconnecting, the endpoint is accepted at once (not bound yet) and bound with
    /// the others once connected; <see cref="BindCompleted"/> tells the outcome.
    /// </remarks>
    /// <exception cref="TunnelBindException">The relay refused the name (access list, taken, invalid, limit).</exception>
    /// <exception cref="TunnelConnectionException">The session is faulted or closed, or the relay did not answer.</exception>
    /// <exception cref="ArgumentException">The name is empty or already bound in this session, or the port is out of range.</exception>
    Task<ITunnelEndpoint> BindTcpAsync(string name, string host, int port, CancellationToken cancellationToken = default);

    /// <summary>
    /// Binds <paramref name="name"/> to an in-process handler, called once per tunnelled connection with a duplex stream.
    /// The connection is closed when the handler's task completes; an exception from the handler aborts it and is logged.
    /// </summary>
    /// <exception cref="TunnelBindException">The relay refused the name.</exception>
    Task<ITunnelEndpoint> BindHandlerAsync(string name, TunnelConnectionHandler handler, CancellationToken cancellationToken = default);

    /// <summary>
    /// Binds <paramref name="name"/> to a listener the application pulls connections from, like a socket listener.
    /// </summary>
    /// <exception cref="TunnelBindException">The relay refused the name.</exception>
    Task<ITunnelListener> ListenAsync(string name, CancellationToken cancellationToken = default);
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
