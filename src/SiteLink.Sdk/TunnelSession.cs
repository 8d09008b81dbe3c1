using System.Collections.Concurrent;
using Grpc.Core;
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
public sealed class TunnelSession : ITunnelSession, IDisposable
{
    private readonly ILogger _logger;
    private readonly string _clientId;
    private readonly ResiliencePipeline _reconnect;
    private readonly ConcurrentDictionary<string, EndpointBinding> _bindingsById = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, EndpointBinding> _bindingsByName = new(StringComparer.OrdinalIgnoreCase);
    private readonly ConcurrentDictionary<string, TaskCompletionSource<BindResult>> _pendingBinds = new(StringComparer.Ordinal);
    private readonly ActivityCounter _activeConnections = new();
    private readonly SdkTelemetry _telemetry;
    private readonly CancellationTokenSource _stopping = new();
    private readonly CancellationTokenSource _aborting = new();
    private readonly object _stateGate = new();
    private volatile ConnectionRun? _run;
    private Task _supervisor = Task.CompletedTask;
    private Task? _closeTask;
    private TunnelSessionState _state = TunnelSessionState.Connecting;
    private TunnelException? _fault;
    private bool _started;
    private int _disposed;

    private TunnelSession(TunnelSessionOptions options)
    {
        Options = options;
        _logger = options.LoggerFactory?.CreateLogger("SiteLink.TunnelSession") ?? NullLogger.Instance;
        _clientId = options.ClientId ?? Guid.NewGuid().ToString("N");
        Relay = new RelayInfo("", "", options.RelayUrl!);
        _reconnect = ReconnectPipeline.Create(options.Reconnect, options.TimeProvider, OnReconnectAttemptFailed);
        _telemetry = SdkTelemetry.For(options.MeterFactory);
        _telemetry.Register(this);
        foreach (var endpoint in options.Endpoints)
        {
            // Validated before the session is created.
            if (TunnelEndpointOptions.TryParseUpstream(endpoint.Upstream, out var host, out var port))
            {
                Declare(new TcpForwardBinding(this, endpoint.Name, host, port));
            }
        }
    }

    /// <summary>
    /// Creates a session that is not connected yet, for a host: endpoints may be declared with <see cref="Declare"/>,
    /// then <see cref="StartInBackground"/> connects (retrying transient failures) without blocking the caller.
    /// </summary>
    internal static TunnelSession CreateUnstarted(TunnelSessionOptions options) => new(options);

    /// <summary>Adds an endpoint to bind whenever the session connects. Before start only.</summary>
    internal void Declare(EndpointBinding binding)
    {
        if (!_bindingsByName.TryAdd(binding.Name, binding))
        {
            throw new ArgumentException($"An endpoint named '{binding.Name}' is declared more than once.", nameof(binding));
        }

        _bindingsById[binding.BindId] = binding;
    }

    /// <summary>Declares an in-process handler endpoint (used by the host integration).</summary>
    internal void DeclareHandler(string name, TunnelConnectionHandler handler) => Declare(new HandlerBinding(this, name, handler));

    /// <summary>Connects in the background, retrying transient failures forever, then binds the declared endpoints.</summary>
    internal void StartInBackground()
    {
        lock (_stateGate)
        {
            if (_started)
            {
                return;
            }

            _started = true;
        }

        _supervisor = RunInBackgroundAsync();
    }

    private async Task RunInBackgroundAsync()
    {
        ConnectionRun run;
        try
        {
            run = await _reconnect.ExecuteAsync(async ct => await ConnectOnceAsync(ct).ConfigureAwait(false), _stopping.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
        {
            return;
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            var fault = ex as TunnelException ?? new TunnelConnectionException($"Connecting failed: {ex.Message}", ex, isTransient: false);
            SetState(TunnelSessionState.Faulted, fault.Message, fault);
            return;
        }

        if (_stopping.IsCancellationRequested)
        {
            await run.DisposeAsync().ConfigureAwait(false);
            return;
        }

        SetState(TunnelSessionState.Connected, $"connected to relay {Relay.RelayId}", null);
        await RebindAllAsync(run, isRebind: false).ConfigureAwait(false);
        await SuperviseAsync(run).ConfigureAwait(false);
    }

    internal TunnelSessionOptions Options { get; }

    /// <inheritdoc />
    public string SessionId { get; private set; } = "";

    /// <inheritdoc />
    public RelayInfo Relay { get; private set; }

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
    public TimeSpan? LastHeartbeatRoundTrip => _run?.Heartbeat.LastRoundTrip;

    /// <inheritdoc />
    public IReadOnlyCollection<ITunnelEndpoint> Endpoints => _bindingsByName.Values.Where(b => b.IsBound).ToArray();

    /// <summary>The number of tunnelled connections being served right now.</summary>
    public int ActiveConnections => _activeConnections.Count;

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

    /// <summary>
    /// Connects to the relay and returns the running session. This first connection is tried once: a bad token,
    /// refused session or unreachable relay throws at once. Once connected, the session reconnects by itself.
    /// </summary>
    /// <exception cref="ArgumentException">The options are invalid; the message lists every problem.</exception>
    /// <exception cref="TunnelAuthenticationException">The relay rejected the authtoken.</exception>
    /// <exception cref="TunnelPermissionException">The relay refused the session (limit, version).</exception>
    /// <exception cref="TunnelConnectionException">The relay could not be reached, or its certificate was not trusted.</exception>
    public static async Task<ITunnelSession> ConnectAsync(TunnelSessionOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate();
        if (errors.Count > 0)
        {
            throw new ArgumentException("Invalid SiteLink session options:" + Environment.NewLine + "- " + string.Join(Environment.NewLine + "- ", errors), nameof(options));
        }

        var session = new TunnelSession(options) { _started = true };
        ConnectionRun run;
        try
        {
            run = await session.ConnectOnceAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (TunnelException ex)
        {
            session.SetState(TunnelSessionState.Faulted, ex.Message, ex);
            session._telemetry.Unregister(session);
            throw;
        }

        session.SetState(TunnelSessionState.Connected, $"connected to relay {session.Relay.RelayId}", null);
        session._supervisor = session.SuperviseAsync(run);
        try
        {
            // Endpoints declared in the options are part of connecting: a refusal fails the call.
            foreach (var binding in session._bindingsByName.Values.ToArray())
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

    /// <summary>One attempt: connect, handshake, start the read loop and heartbeats. Throws a typed exception.</summary>
    private async Task<ConnectionRun> ConnectOnceAsync(CancellationToken cancellationToken)
    {
        var previous = string.IsNullOrEmpty(SessionId) ? null : SessionId;
        var connection = await RelayConnection.ConnectAsync(Options, _clientId, previous, cancellationToken).ConfigureAwait(false);
        var welcome = connection.Welcome;
        var run = new ConnectionRun(connection, Options, Dispatch, _logger, rtt => _telemetry.HeartbeatRoundTrip.Record(rtt.TotalSeconds))
        {
            ParkedTarget = (int)Math.Min((uint)Options.ParkedStreams, welcome.Limits?.MaxParkedStreams ?? 0),
        };
        SessionId = welcome.SessionId;
        Relay = new RelayInfo(welcome.RelayId, welcome.Region, Options.RelayUrl!);
        _run = run;
        run.Start();
        EnsureParked(run);
        SessionLog.Connected(_logger, welcome.RelayId, welcome.Region, Options.RelayUrl!, welcome.SessionId);
        return run;
    }

    /// <summary>Watches the current connection; when it ends, reconnects and binds every endpoint again.</summary>
    private async Task SuperviseAsync(ConnectionRun run)
    {
        while (true)
        {
            var end = await run.Completion.ConfigureAwait(false);
            if (_stopping.IsCancellationRequested)
            {
                return;
            }

            foreach (var binding in _bindingsByName.Values)
            {
                binding.SetBound(false);
            }

            FailPendingBinds(new TunnelConnectionException($"The connection to the relay was lost: {end.Reason}", end.Exception));
            SessionLog.ConnectionLost(_logger, Options.RelayUrl!, end.Reason, end.Exception);
            if (end.Exception is TunnelException { IsTransient: false } permanent)
            {
                await run.DisposeAsync().ConfigureAwait(false);
                SetState(TunnelSessionState.Faulted, end.Reason, permanent);
                return;
            }

            SetState(TunnelSessionState.Reconnecting, end.Reason, end.Exception);
            if (end.Drain)
            {
                // The relay is going away: let its connections finish there while the session moves on.
                _ = DrainAsync(run, end.DrainDeadline);
            }
            else
            {
                await run.DisposeAsync().ConfigureAwait(false);
            }

            try
            {
                run = await _reconnect.ExecuteAsync(async ct => await ConnectOnceAsync(ct).ConfigureAwait(false), _stopping.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                var fault = ex as TunnelException ?? new TunnelConnectionException($"Reconnecting failed: {ex.Message}", ex, isTransient: false);
                SetState(TunnelSessionState.Faulted, fault.Message, fault);
                return;
            }

            if (_stopping.IsCancellationRequested)
            {
                await run.DisposeAsync().ConfigureAwait(false);
                return;
            }

            SetState(TunnelSessionState.Connected, $"reconnected to relay {Relay.RelayId}", null);
            _telemetry.Reconnects.Add(1);
            SessionLog.Reconnected(_logger, Relay.RelayId, _bindingsByName.Count);
            await RebindAllAsync(run, isRebind: true).ConfigureAwait(false);
        }
    }

    private void OnReconnectAttemptFailed(int attempt, TimeSpan delay, Exception? exception)
    {
        SessionLog.ReconnectAttemptFailed(_logger, attempt, delay, exception?.Message ?? "unknown");
        _telemetry.ConnectFailures.Add(1, new KeyValuePair<string, object?>(SdkTelemetry.ErrorTypeTag, exception?.GetType().Name ?? "unknown"));
        Raise(ReconnectAttemptFailed, new TunnelReconnectEventArgs(attempt, delay, exception));
    }

    private async Task RebindAllAsync(ConnectionRun run, bool isRebind)
    {
        var rebinds = _bindingsByName.Values.Where(b => !b.IsClosed).Select(async binding =>
        {
            try
            {
                await BindOnAsync(run, binding, isRebind, CancellationToken.None).ConfigureAwait(false);
            }
            catch (TunnelBindException)
            {
                // Refused now (e.g. the token's ACL changed): the endpoint is gone; BindCompleted said why.
                RemoveBinding(binding);
            }
            catch (TunnelException)
            {
                // The connection dropped while rebinding; the supervisor reconnects and tries again.
            }
        });
        await Task.WhenAll(rebinds).ConfigureAwait(false);
    }

    private async Task DrainAsync(ConnectionRun run, TimeSpan deadline)
    {
        var limit = deadline > TimeSpan.Zero && deadline < Options.DrainTimeout ? deadline : Options.DrainTimeout;
        run.Connection.Send(new AgentMessage { Goodbye = new Goodbye { Reason = "draining at the relay's request" } });
        try
        {
            await run.Streams.WhenIdleAsync().WaitAsync(limit, Options.TimeProvider).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // Connections still open at the deadline are closed with the connection.
        }

        await run.DisposeAsync().ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async Task<ITunnelEndpoint> BindTcpAsync(string name, string host, int port, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(host);
        ArgumentOutOfRangeException.ThrowIfLessThan(port, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(port, 65535);
        return await BindAsync(new TcpForwardBinding(this, CheckName(name), host, port), cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async Task<ITunnelEndpoint> BindHandlerAsync(string name, TunnelConnectionHandler handler, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(handler);
        return await BindAsync(new HandlerBinding(this, CheckName(name), handler), cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async Task<ITunnelListener> ListenAsync(string name, CancellationToken cancellationToken = default)
    {
        return (ListenerBinding)await BindAsync(new ListenerBinding(this, CheckName(name), Options.ListenerBacklog), cancellationToken).ConfigureAwait(false);
    }

    private static string CheckName(string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        return name;
    }

    private async Task<EndpointBinding> BindAsync(EndpointBinding binding, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0 || _stopping.IsCancellationRequested, this);
        var run = _run;
        var state = State;
        if (run is null || state != TunnelSessionState.Connected)
        {
            throw new TunnelConnectionException($"Cannot bind '{binding.Name}': the session is {state}.");
        }

        if (!_bindingsByName.TryAdd(binding.Name, binding))
        {
            throw new ArgumentException($"An endpoint named '{binding.Name}' is already bound in this session.", nameof(binding));
        }

        _bindingsById[binding.BindId] = binding;
        try
        {
            await BindOnAsync(run, binding, isRebind: false, cancellationToken).ConfigureAwait(false);
            return binding;
        }
        catch
        {
            RemoveBinding(binding);
            throw;
        }
    }

    /// <summary>Sends Bind on <paramref name="run"/> and waits for the answer. Reports the outcome in <see cref="BindCompleted"/>.</summary>
    private async Task BindOnAsync(ConnectionRun run, EndpointBinding binding, bool isRebind, CancellationToken cancellationToken)
    {
        var answer = new TaskCompletionSource<BindResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pendingBinds[binding.BindId] = answer;
        try
        {
            var bind = new Bind { BindId = binding.BindId, Name = binding.Name, Kind = ErrorMapping.ToWireKind(binding.Kind) };
            if (!run.Connection.Send(new AgentMessage { Bind = bind }))
            {
                throw new TunnelConnectionException($"Cannot bind '{binding.Name}': the connection to the relay is closing.");
            }

            BindResult result;
            try
            {
                result = await answer.Task.WaitAsync(Options.RequestTimeout, Options.TimeProvider, cancellationToken).ConfigureAwait(false);
            }
            catch (TimeoutException ex)
            {
                run.Connection.Send(new AgentMessage { Unbind = new Unbind { BindId = binding.BindId } });
                throw new TunnelConnectionException($"The relay did not answer the bind of '{binding.Name}' within {Options.RequestTimeout}.", ex);
            }

            if (result.Status != BindStatus.Ok)
            {
                var code = ErrorMapping.FromBindStatus(result.Status);
                SessionLog.BindRefused(_logger, binding.Name, code, result.Message);
                throw new TunnelBindException(binding.Name, code, $"The relay refused to bind '{binding.Name}': {result.Message}");
            }

            SessionLog.EndpointBound(_logger, binding.Name, binding.Kind);
            Raise(BindCompleted, new TunnelBindEventArgs(binding.Name, isRebind, null));
        }
        catch (TunnelException ex)
        {
            Raise(BindCompleted, new TunnelBindEventArgs(binding.Name, isRebind, ex));
            throw;
        }
        finally
        {
            _pendingBinds.TryRemove(new KeyValuePair<string, TaskCompletionSource<BindResult>>(binding.BindId, answer));
        }
    }

    private void FailPendingBinds(TunnelException reason)
    {
        foreach (var pending in _pendingBinds.Values)
        {
            pending.TrySetException(reason);
        }
    }

    private void RemoveBinding(EndpointBinding binding)
    {
        binding.Close();
        _bindingsById.TryRemove(binding.BindId, out _);
        _bindingsByName.TryRemove(new KeyValuePair<string, EndpointBinding>(binding.Name, binding));
    }

    internal ValueTask UnbindAsync(EndpointBinding binding)
    {
        if (!binding.IsClosed)
        {
            RemoveBinding(binding);
            _run?.Connection.Send(new AgentMessage { Unbind = new Unbind { BindId = binding.BindId } });
            SessionLog.EndpointUnbound(_logger, binding.Name);
        }

        return ValueTask.CompletedTask;
    }

    private void Dispatch(ConnectionRun run, RelayMessage message)
    {
        switch (message.KindCase)
        {
            case RelayMessage.KindOneofCase.BindResult:
                var result = message.BindResult;
                if (result.Status == BindStatus.Ok && _bindingsById.TryGetValue(result.BindId, out var bound) && !bound.IsClosed)
                {
                    // Marked here, in order, so an OpenStream right behind the result finds the endpoint bound.
                    bound.SetBound(true);
                }

                if (_pendingBinds.TryGetValue(result.BindId, out var answer))
                {
                    answer.TrySetResult(result);
                }

                break;
            case RelayMessage.KindOneofCase.OpenStream:
                _ = ServeAsync(run, message.OpenStream);
                break;
            case RelayMessage.KindOneofCase.Heartbeat:
                run.Connection.Send(new AgentMessage { HeartbeatAck = new HeartbeatAck { Sequence = message.Heartbeat.Sequence } });
                break;
            case RelayMessage.KindOneofCase.Drain:
                SessionLog.DrainRequested(_logger, message.Drain.Reason);
                run.End($"the relay is draining: {message.Drain.Reason}", new TunnelConnectionException("The relay asked the agent to reconnect elsewhere."),
                    drain: true, drainDeadline: TimeSpan.FromMilliseconds(message.Drain.DeadlineMs));
                break;
            case RelayMessage.KindOneofCase.Error:
                SessionLog.RelayError(_logger, message.Error.Code.ToString(), message.Error.Message);
                break;
            default:
                // HeartbeatAck (handled by the run), UnbindResult and messages of later protocol versions need no action.
                break;
        }
    }

    /// <summary>Keeps the run's parked data streams at their target, so new connections are paired without a round trip.</summary>
    private void EnsureParked(ConnectionRun run)
    {
        while (!_stopping.IsCancellationRequested && run.TryReserveParked())
        {
            AsyncDuplexStreamingCall<StreamFrame, StreamFrame> call;
            try
            {
                call = run.Connection.OpenParked(run.SessionId, run.Connection.Lifetime);
            }
            catch (Exception ex) when (ex is InvalidOperationException or ObjectDisposedException or RpcException)
            {
                run.OnParkedDone();
                return;
            }

            _ = WaitParkedAsync(run, call);
        }
    }

    private async Task WaitParkedAsync(ConnectionRun run, AsyncDuplexStreamingCall<StreamFrame, StreamFrame> call)
    {
        OpenStream? open = null;
        try
        {
            if (await call.ResponseStream.MoveNext(run.Connection.Lifetime).ConfigureAwait(false))
            {
                open = call.ResponseStream.Current.Open;
            }
        }
        catch (Exception ex) when (ex is RpcException or OperationCanceledException or IOException or InvalidOperationException)
        {
            // The relay released it (session ending, limit) or the connection died: it is not parked again here.
        }

        run.OnParkedDone();
        if (open is null)
        {
            call.Dispose();
            return;
        }

        // Replace it before serving, so the next connection finds a parked stream too.
        EnsureParked(run);
        await ServeAsync(run, open, call).ConfigureAwait(false);
    }

    private async Task ServeAsync(ConnectionRun run, OpenStream message, AsyncDuplexStreamingCall<StreamFrame, StreamFrame>? parkedCall = null)
    {
        // Leave the read loop at once; serving (connecting upstream, bridging) happens here.
        await Task.Yield();
        if (!_bindingsById.TryGetValue(message.BindId, out var binding) || !binding.IsBound || _stopping.IsCancellationRequested
            || !string.Equals(binding.Name, message.EndpointName, StringComparison.OrdinalIgnoreCase))
        {
            SessionLog.UnknownBind(_logger, message.StreamId, message.BindId);
            _telemetry.OnRefused(message.EndpointName, "unknown_endpoint");
            Refuse(run, message, parkedCall, StreamRefusal.UnknownEndpoint, $"no endpoint is bound with id {message.BindId}");
            return;
        }

        var info = new TunnelConnectionInfo(binding.Name, message.ClientAddress, string.IsNullOrEmpty(message.Sni) ? null : message.Sni, message.StreamId);
        SessionLog.ConnectionOpened(_logger, message.StreamId, message.ClientAddress, binding.Name);
        var telemetry = new ConnectionTelemetry(_telemetry, Options.TimeProvider, info, (outcome, duration) =>
            Raise(ConnectionClosed, new TunnelConnectionEventArgs(info, outcome switch
            {
                "completed" => TunnelConnectionOutcome.Completed,
                "refused" => TunnelConnectionOutcome.Refused,
                _ => TunnelConnectionOutcome.Aborted,
            }, duration)));
        Raise(ConnectionOpened, new TunnelConnectionEventArgs(info, null, TimeSpan.Zero));
        var offer = new Offer(run, message, info, telemetry, parkedCall);
        await binding.ServeAsync(offer, _aborting.Token).ConfigureAwait(false);
    }

    /// <summary>Opens the data stream for an offer on the connection it came from; null (and logged) when that connection is gone.</summary>
    internal TunnelStream? TryOpenStream(Offer offer)
    {
        var run = offer.Run;
        if (run.HasEnded && !run.IsDraining)
        {
            SessionLog.StreamOpenFailed(_logger, offer.StreamId, offer.Info.EndpointName, "the connection to the relay is closed");
            offer.Telemetry.End("refused");
            return null;
        }

        _activeConnections.Increment();
        run.Streams.Increment();
        try
        {
            void Released()
            {
                run.Streams.Decrement();
                _activeConnections.Decrement();
            }

            // A parked stream is already open and paired at the relay: an abort resets it, nothing else to say.
            var stream = offer.ParkedCall is { } parked
                ? run.Connection.WrapStream(parked, null, Released)
                : run.Connection.OpenStream(run.SessionId, offer.StreamId, () => Refuse(run, offer.Message, null, StreamRefusal.Aborted, "aborted by the agent"), Released, run.Connection.Lifetime);
            stream.Telemetry = offer.Telemetry;
            return stream;
        }
        catch (Exception ex) when (ex is InvalidOperationException or ObjectDisposedException or RpcException)
        {
            run.Streams.Decrement();
            _activeConnections.Decrement();
            offer.Telemetry.End("refused");
            SessionLog.StreamOpenFailed(_logger, offer.StreamId, offer.Info.EndpointName, ex.Message);
            return null;
        }
    }

    internal void RefuseUpstreamUnavailable(Offer offer, EndpointBinding binding, string reason)
    {
        SessionLog.UpstreamConnectFailed(_logger, binding.Name, binding.Upstream ?? "", offer.StreamId, reason);
        offer.Telemetry.End("refused");
        Refuse(offer.Run, offer.Message, offer.ParkedCall, StreamRefusal.UpstreamUnavailable, $"endpoint '{binding.Name}': upstream unreachable ({reason})");
    }

    internal void RefuseOverloaded(Offer offer, string endpointName)
    {
        SessionLog.ListenerBacklogFull(_logger, endpointName, offer.StreamId);
        offer.Telemetry.End("refused");
        Refuse(offer.Run, offer.Message, offer.ParkedCall, StreamRefusal.Overloaded, $"endpoint '{endpointName}': listener backlog full");
    }

    /// <summary>
    /// Refuses an offer over the control stream. A parked stream it came on is released once the relay, having read the
    /// refusal, ends it (or after StreamCloseTimeout): resetting it first could overtake the refusal.
    /// </summary>
    private void Refuse(ConnectionRun run, OpenStream offer, AsyncDuplexStreamingCall<StreamFrame, StreamFrame>? parkedCall, StreamRefusal reason, string message)
    {
        run.Connection.Send(new AgentMessage { StreamRefused = new StreamRefused { StreamId = offer.StreamId, Reason = reason, Message = message } });
        if (parkedCall is not null)
        {
            _ = ReleaseRefusedAsync(parkedCall);
        }
    }

    private async Task ReleaseRefusedAsync(AsyncDuplexStreamingCall<StreamFrame, StreamFrame> call)
    {
        using var timeout = new CancellationTokenSource(Options.StreamCloseTimeout, Options.TimeProvider);
        try
        {
            while (await call.ResponseStream.MoveNext(timeout.Token).ConfigureAwait(false))
            {
            }
        }
        catch (Exception ex) when (ex is RpcException or OperationCanceledException or IOException or InvalidOperationException)
        {
            // Ended by the relay (expected) or timed out.
        }
        finally
        {
            call.Dispose();
        }
    }


    internal void OnHandlerFailed(Offer offer, Exception exception) =>
        SessionLog.HandlerFailed(_logger, offer.Info.EndpointName, offer.StreamId, exception);

    internal void OnConnectionClosed(Offer offer, BridgeResult result) =>
        SessionLog.ConnectionClosed(_logger, offer.StreamId, offer.Info.EndpointName, result);

    private void SetState(TunnelSessionState state, string reason, Exception? exception)
    {
        TunnelSessionState previous;
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
        }

        SessionLog.StateChanged(_logger, previous, state, reason);
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
            SessionLog.EventHandlerFailed(_logger, typeof(T).Name, ex);
        }
    }

    /// <inheritdoc />
    public Task CloseAsync(CancellationToken cancellationToken = default)
    {
        lock (_stateGate)
        {
            _closeTask ??= CloseCoreAsync(cancellationToken);
            return _closeTask;
        }
    }

    private async Task CloseCoreAsync(CancellationToken cancellationToken)
    {
        // 1. No new connections: unbind everything and say goodbye, so the relay offers nothing more.
        await _stopping.CancelAsync().ConfigureAwait(false);
        var run = _run;
        foreach (var binding in _bindingsByName.Values)
        {
            await UnbindAsync(binding).ConfigureAwait(false);
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
            await run.DisposeAsync().ConfigureAwait(false);
        }

        await _supervisor.ConfigureAwait(false);
        if (_run is { } last && last != run)
        {
            await last.DisposeAsync().ConfigureAwait(false);
        }

        SetState(TunnelSessionState.Closed, "the session was closed", null);
        _telemetry.Unregister(this);
        SessionLog.Closed(_logger, SessionId);
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

        using var now = new CancellationTokenSource();
        now.Cancel();
        CloseAsync(now.Token).GetAwaiter().GetResult();
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
