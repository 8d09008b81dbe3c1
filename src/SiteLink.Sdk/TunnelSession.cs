using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Polly;
using SiteLink.Diagnostics;
using SiteLink.Endpoints;
using SiteLink.Protocol;
using SiteLink.Protocol.V1;
using SiteLink.Resilience;

namespace SiteLink;

/// <summary>The SDK's <see cref="ITunnelSession"/>. Create one with <see cref="ConnectAsync"/>.</summary>
/// <remarks>
/// A supervisor loop owns the connection to the relay: when a connection ends (heartbeat silence, network failure,
/// relay restart, relay drain) it reconnects through a Polly pipeline and binds every endpoint again. Errors that a
/// retry cannot fix (authentication, permission, version) move the session to <see cref="TunnelSessionState.Faulted"/>.
/// </remarks>
public sealed partial class TunnelSession : ITunnelSession, IDisposable
{
    private readonly ILogger _logger;
    private readonly string _clientId;
    private readonly ResiliencePipeline _reconnect;
    private readonly ConcurrentDictionary<string, EndpointBinding> _bindingsById = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, EndpointBinding> _bindingsByName = new(StringComparer.OrdinalIgnoreCase);
    private readonly ConcurrentDictionary<string, TaskCompletionSource<BindResult>> _pendingBinds = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, TaskCompletionSource> _pendingUnbinds = new(StringComparer.Ordinal);
    private readonly ActivityCounter _activeConnections = new();
    private readonly ConnectionLimit _connectionLimit;
    private readonly OfferLog _offerLog;
    private readonly SdkTelemetry _telemetry;
    private readonly CancellationTokenSource _stopping = new();
    private readonly CancellationTokenSource _aborting = new();
    private readonly object _stateGate = new();
    private volatile ConnectionRun? _run;
    private Task _supervisor = Task.CompletedTask;
    private Task? _closeTask;
    private readonly CancellationTokenSource _closeAbort = new();
    private TunnelSessionState _state = TunnelSessionState.Connecting;
    private TunnelException? _fault;
    private bool _started;
    private int _disposed;

    private TunnelSession(TunnelSessionOptions options)
    {
        Options = options = options.Snapshot();
        var several = options.AllRelayUrls.Count > 1;
        _logger = options.LoggerFactory?.CreateLogger("SiteLink.TunnelSession") ?? NullLogger.Instance;
        _clientId = options.ClientId ?? Guid.NewGuid().ToString("N");
        _relay = new RelayInfo("", "", options.AllRelayUrls[0]);
        _reconnect = ReconnectPipeline.Create(options.Reconnect, options.TimeProvider, OnReconnectAttemptFailed);
        _connectionLimit = new ConnectionLimit(options.MaxConcurrentConnections);
        _offerLog = new OfferLog(options.TimeProvider, _logger);
        _telemetry = SdkTelemetry.For(options.MeterFactory);
        if (several)
        {
            // One session per relay does the work (and logs, and counts itself in the telemetry): see TunnelSession.Relays.cs.
            _links = [.. options.AllRelayUrls.Select(url => new TunnelSession(LinkOptions(options, url)))];
            AttachLinks();
            return;
        }

        if (options.RelayUrl!.Scheme == Uri.UriSchemeHttp)
        {
            SessionLog.InsecureTransport(_logger, options.RelayUrl);
        }

        _telemetry.Register(this);
        foreach (var endpoint in options.Endpoints)
        {
            // Validated before the session is created.
            if (ForwardEndpointOptions.TryParseUpstream(endpoint.Upstream, out var upstream))
            {
                Declare(new ForwardBinding(this, endpoint.Name, upstream, endpoint.ToEndpointOptions()));
            }
        }
    }

    internal TunnelSessionOptions Options { get; }

    /// <inheritdoc />
    /// <remarks>With several relays (<see cref="TunnelSessionOptions.RelayUrls"/>), the first connected one's session.</remarks>
    public string SessionId
    {
        get => CurrentLink?.SessionId ?? _sessionId;
        private set => _sessionId = value;
    }

    /// <inheritdoc />
    /// <remarks>With several relays, the first connected one (<see cref="Relays"/> lists them all).</remarks>
    public RelayInfo Relay
    {
        get => CurrentLink?.Relay ?? _relay;
        private set => _relay = value;
    }

    /// <inheritdoc />
    public TunnelSessionState State
    {
        get
        {
            lock (_stateGate)
            {
                return _state;
            }
        }
    }

    /// <inheritdoc />
    public TunnelException? Fault
    {
        get
        {
            lock (_stateGate)
            {
                return _fault;
            }
        }
    }

    /// <inheritdoc />
    public TimeSpan? LastHeartbeatRoundTrip => _links is null ? _run?.Heartbeat.LastRoundTrip : CurrentLink?.LastHeartbeatRoundTrip;

    /// <inheritdoc />
    public IReadOnlyCollection<ITunnelEndpoint> Endpoints => _links is null
        ? _bindingsByName.Values.Where(b => b.IsBound).ToArray()
        : _linkedEndpoints.Values.Where(e => e.IsBound).ToArray();

    /// <inheritdoc />
    public int ActiveConnections => _links is null ? _activeConnections.Count : _links.Sum(l => l.ActiveConnections);

    /// <inheritdoc />
    public event EventHandler<TunnelStateChangedEventArgs>? StateChanged;

    /// <inheritdoc />
    public event EventHandler<TunnelReconnectEventArgs>? ReconnectAttemptFailed;

    /// <inheritdoc />
    public event EventHandler<TunnelBindEventArgs>? BindCompleted;

    /// <inheritdoc />
    public event EventHandler<TunnelConnectionEventArgs>? ConnectionOpened;

    /// <inheritdoc />
    public event EventHandler<TunnelConnectionEventArgs>? ConnectionClosed;

    /// <summary>Throws <see cref="ArgumentException"/> listing every problem of <paramref name="options"/> (what <see cref="ConnectAsync"/> and diagnose check first).</summary>
    internal static void ThrowIfInvalid(TunnelSessionOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate();
        if (errors.Count > 0)
        {
            throw new ArgumentException("Invalid SiteLink session options:" + Environment.NewLine + "- " + string.Join(Environment.NewLine + "- ", errors), nameof(options));
        }
    }

    /// <summary>
    /// Connects to the relay and returns the running session. This first connection is tried once: a bad token,
    /// refused session or unreachable relay throws at once. Once connected, the session reconnects by itself.
    /// Returns the concrete type (as <c>GrpcChannel.ForAddress</c> does); <see cref="ITunnelSession"/>, which it
    /// implements in full, is for dependency injection and test doubles.
    /// </summary>
    /// <exception cref="ArgumentException">The options are invalid; the message lists every problem.</exception>
    /// <exception cref="TunnelAuthenticationException">The relay rejected the authtoken.</exception>
    /// <exception cref="TunnelPermissionException">The relay refused the session (a limit, a protocol version it does not speak).</exception>
    /// <exception cref="TunnelVersionException">The relay requires a newer SDK (its <c>MinimumAgentVersion</c>); it names both versions.</exception>
    /// <exception cref="TunnelConnectionException">The relay could not be reached, or its certificate was not trusted.</exception>
    public static async Task<TunnelSession> ConnectAsync(TunnelSessionOptions options, CancellationToken cancellationToken = default)
    {
        ThrowIfInvalid(options);
        if (options.AllRelayUrls.Count > 1)
        {
            return await ConnectSeveralAsync(options, cancellationToken).ConfigureAwait(false);
        }

        var session = new TunnelSession(options) { _started = true };
        ConnectionRun run;
        try
        {
            run = await session.ConnectOnceAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // Whatever ended the first attempt (a refusal, the caller's cancellation, anything), the session never
            // reaches the caller: nothing of it may stay registered.
            if (ex is TunnelException fault)
            {
                session.SetState(TunnelSessionState.Faulted, fault.Message, fault);
            }
            else
            {
                session.SetState(TunnelSessionState.Closed, $"connecting ended: {ex.GetType().Name}", ex);
            }

            session._telemetry.Unregister(session);
            session._offerLog.Dispose();
            throw;
        }

        session.SetState(TunnelSessionState.Connected, $"connected to relay {session.Relay.RelayId}", null, out var declared);
        session._supervisor = session.SuperviseAsync(run);
        try
        {
            // Endpoints declared in the options are part of connecting: a refusal fails the call.
            foreach (var binding in declared)
            {
                await session.BindOnAsync(run, binding, isRebind: false, cancellationToken).ConfigureAwait(false);
            }
        }
        catch
        {
            await session.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        return session;
    }

    private void SetState(TunnelSessionState state, string reason, Exception? exception) => SetState(state, reason, exception, out _);

    /// <summary>
    /// Changes the state. When it becomes Connected, <paramref name="toBind"/> is the list of endpoints this (re)connect
    /// must bind, taken under the same lock as the change: an endpoint bound concurrently is either in it or sees
    /// Connected and binds itself, never both (<see cref="BindAsync"/>).
    /// </summary>
    private void SetState(TunnelSessionState state, string reason, Exception? exception, out EndpointBinding[] toBind)
    {
        TunnelSessionState previous;
        toBind = [];
        lock (_stateGate)
        {
            previous = _state;
            if (previous == state || previous == TunnelSessionState.Closed)
            {
                return;
            }

            _state = state;
            if (state == TunnelSessionState.Faulted)
            {
                _fault = exception as TunnelException;
            }
            else if (state == TunnelSessionState.Connected)
            {
                toBind = [.. _bindingsByName.Values.Where(b => !b.IsClosed)];
            }
        }

        SessionLog.StateChanged(_logger, previous, state, reason);
        if (state is TunnelSessionState.Faulted or TunnelSessionState.Closed)
        {
            // The session's end is every endpoint's end: their Completion says how.
            foreach (var binding in _bindingsByName.Values)
            {
                binding.Close(state == TunnelSessionState.Faulted ? exception as TunnelException ?? new TunnelConnectionException(reason, exception, isTransient: false) : null);
            }
        }

        if (state == TunnelSessionState.Faulted && exception is TunnelException fault && _links is null)
        {
            // (With several relays each relay's link logged its own fault, naming its relay.)
            // One line an operator can act on; the state change above says when, this says why and what to do.
            SessionLog.Faulted(_logger, fault.TunnelError, fault.Message, FaultAdvice.For(fault.TunnelError), _relay.Url);
        }

        Raise(StateChanged, new TunnelStateChangedEventArgs(previous, state, reason, exception));
    }

    private void Raise<T>(EventHandler<T>? handler, T args)
        where T : EventArgs
    {
        if (handler is null)
        {
            return;
        }

        try
        {
            handler(this, args);
        }
#pragma warning disable CA1031 // An application's event handler must not break the session.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            TryLog(() => SessionLog.EventHandlerFailed(_logger, typeof(T).Name, ex));
        }
    }

    /// <inheritdoc />
    public Task CloseAsync(CancellationToken cancellationToken = default)
    {
        Task task;
        lock (_stateGate)
        {
            // Started on the thread pool, never inline: the close raises events and logs (application code), which
            // must not run while this lock is held.
            _closeTask ??= Task.Run(CloseCoreAsync, CancellationToken.None);
            task = _closeTask;
        }

        // Every caller's token can cut the drain short, not only the first one's.
        if (cancellationToken.CanBeCanceled && !task.IsCompleted)
        {
            var registration = cancellationToken.UnsafeRegister(static state => ((TunnelSession)state!).AbortClose(), this);
            _ = task.ContinueWith(static (_, state) => ((CancellationTokenRegistration)state!).Dispose(), registration,
                CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }

        return task;
    }

    /// <summary>Ends the drain of a close in progress (or to come) at once: connections in flight are aborted.</summary>
    private void AbortClose()
    {
        try
        {
            _closeAbort.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // The close is over.
        }
    }

    private async Task CloseCoreAsync()
    {
        var cancellationToken = _closeAbort.Token;
        if (_links is not null)
        {
            await CloseLinksAsync(cancellationToken).ConfigureAwait(false);
            return;
        }

        // 1. No new connections: unbind everything and say goodbye, so the relay offers nothing more.
        await _stopping.CancelAsync().ConfigureAwait(false);
        var run = _run;
        foreach (var binding in _bindingsByName.Values)
        {
            // Closing: the Goodbye below ends every bind at once; no need to wait for each confirmation.
            await UnbindAsync(binding, awaitRelay: false).ConfigureAwait(false);
        }

        run?.Connection.Send(new AgentMessage { Goodbye = new Goodbye { Reason = "session closing" } });

        // 2. Let connections in flight finish, up to the drain deadline (or the caller's patience).
        try
        {
            await _activeConnections.WhenIdleAsync().WaitAsync(Options.DrainTimeout, Options.TimeProvider, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is TimeoutException or OperationCanceledException)
        {
            SessionLog.DrainDeadlineReached(_logger, _activeConnections.Count);
        }

        // 3. Close what is left, then the connection itself.
        await _aborting.CancelAsync().ConfigureAwait(false);
        run = _run;
        if (run is not null)
        {
            using var flush = new CancellationTokenSource(TimeSpan.FromSeconds(2), Options.TimeProvider);
            await run.Connection.CompleteAsync(flush.Token).ConfigureAwait(false);
            // Let the relay read the Goodbye and the end of the stream and end the call itself before the call is reset:
            // a reset that overtakes them makes a clean close look like a lost connection at the relay (and in the
            // vendor's session.disconnected events).
            try
            {
                await run.Completion.WaitAsync(flush.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // The relay did not end the call in time: disposing resets it.
            }

            await run.DisposeAsync().ConfigureAwait(false);
        }

        await _supervisor.ConfigureAwait(false);
        if (_run is { } last && last != run)
        {
            await last.DisposeAsync().ConfigureAwait(false);
        }

        SetState(TunnelSessionState.Closed, "the session was closed", null);
        _telemetry.Unregister(this);
        _offerLog.Dispose();
        if (string.IsNullOrEmpty(SessionId))
        {
            SessionLog.ClosedBeforeConnecting(_logger);
        }
        else
        {
            SessionLog.Closed(_logger, SessionId);
        }
    }

    /// <summary>
    /// Closes the session at once, without waiting for connections in flight (they are aborted), and releases it.
    /// For a graceful close use <see cref="CloseAsync"/> or <see cref="DisposeAsync"/>. Blocks until the connection to
    /// the relay is closed.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        // At once, whatever is in progress: a graceful close already draining is cut short too.
        AbortClose();
        CloseAsync().GetAwaiter().GetResult();
        _stopping.Dispose();
        _aborting.Dispose();
    }

    /// <summary>Closes the session gracefully (see <see cref="CloseAsync"/>) and releases it.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await CloseAsync().ConfigureAwait(false);
        _stopping.Dispose();
        _aborting.Dispose();
    }
}
