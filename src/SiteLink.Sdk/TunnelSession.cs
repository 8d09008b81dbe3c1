using System.Collections.Concurrent;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SiteLink.Diagnostics;
using SiteLink.Endpoints;
using SiteLink.Protocol;
using SiteLink.Protocol.V1;

namespace SiteLink;

/// <summary>The SDK's <see cref="ITunnelSession"/>. Create one with <see cref="ConnectAsync"/>.</summary>
public sealed class TunnelSession : ITunnelSession
{
    private readonly ILogger _logger;
    private readonly string _clientId;
    private readonly ConcurrentDictionary<string, EndpointBinding> _bindingsById = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, EndpointBinding> _bindingsByName = new(StringComparer.OrdinalIgnoreCase);
    private readonly ConcurrentDictionary<string, TaskCompletionSource<BindResult>> _pendingBinds = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<Task, byte> _connections = new();
    private readonly CancellationTokenSource _closing = new();
    private RelayConnection? _connection;
    private Task _readLoop = Task.CompletedTask;
    private volatile TunnelSessionState _state = TunnelSessionState.Connecting;
    private int _disposed;

    private TunnelSession(TunnelSessionOptions options)
    {
        Options = options;
        _logger = options.LoggerFactory?.CreateLogger("SiteLink.TunnelSession") ?? NullLogger.Instance;
        _clientId = options.ClientId ?? Guid.NewGuid().ToString("N");
        Relay = new RelayInfo("", "", options.RelayUrl!);
    }

    internal TunnelSessionOptions Options { get; }

    /// <inheritdoc />
    public string SessionId { get; private set; } = "";

    /// <inheritdoc />
    public RelayInfo Relay { get; private set; }

    /// <inheritdoc />
    public TunnelSessionState State => _state;

    /// <inheritdoc />
    public IReadOnlyCollection<ITunnelEndpoint> Endpoints => _bindingsByName.Values.Where(b => b.IsBound).ToArray();

    /// <summary>The number of tunnelled connections being served right now.</summary>
    public int ActiveConnections => _connections.Count;

    /// <summary>
    /// Connects to the relay and returns the running session.
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

        var session = new TunnelSession(options);
        await session.ConnectCoreAsync(cancellationToken).ConfigureAwait(false);
        return session;
    }

    private async Task ConnectCoreAsync(CancellationToken cancellationToken)
    {
        var connection = await RelayConnection.ConnectAsync(Options, _clientId, null, cancellationToken).ConfigureAwait(false);
        var welcome = connection.Welcome;
        _connection = connection;
        SessionId = welcome.SessionId;
        Relay = new RelayInfo(welcome.RelayId, welcome.Region, Options.RelayUrl!);
        _state = TunnelSessionState.Connected;
        SessionLog.Connected(_logger, welcome.RelayId, welcome.Region, Options.RelayUrl!, welcome.SessionId);
        _readLoop = ReadLoopAsync(connection);
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
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var connection = _connection;
        if (connection is null || _state != TunnelSessionState.Connected)
        {
            throw new TunnelConnectionException($"Cannot bind '{binding.Name}': the session is {_state}.");
        }

        if (!_bindingsByName.TryAdd(binding.Name, binding))
        {
            throw new ArgumentException($"An endpoint named '{binding.Name}' is already bound in this session.", nameof(binding));
        }

        var answer = new TaskCompletionSource<BindResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pendingBinds[binding.BindId] = answer;
        _bindingsById[binding.BindId] = binding;
        try
        {
            var bind = new Bind { BindId = binding.BindId, Name = binding.Name, Kind = ErrorMapping.ToWireKind(binding.Kind) };
            if (!connection.Send(new AgentMessage { Bind = bind }))
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
                connection.Send(new AgentMessage { Unbind = new Unbind { BindId = binding.BindId } });
                throw new TunnelConnectionException($"The relay did not answer the bind of '{binding.Name}' within {Options.RequestTimeout}.", ex);
            }

            if (result.Status != BindStatus.Ok)
            {
                var code = ErrorMapping.FromBindStatus(result.Status);
                SessionLog.BindRefused(_logger, binding.Name, code, result.Message);
                throw new TunnelBindException(binding.Name, code, $"The relay refused to bind '{binding.Name}': {result.Message}");
            }

            SessionLog.EndpointBound(_logger, binding.Name, binding.Kind);
            return binding;
        }
        catch
        {
            binding.MarkUnbound();
            _bindingsById.TryRemove(binding.BindId, out _);
            _bindingsByName.TryRemove(new KeyValuePair<string, EndpointBinding>(binding.Name, binding));
            throw;
        }
        finally
        {
            _pendingBinds.TryRemove(binding.BindId, out _);
        }
    }

    internal ValueTask UnbindAsync(EndpointBinding binding)
    {
        if (binding.MarkUnbound())
        {
            _bindingsById.TryRemove(binding.BindId, out _);
            _bindingsByName.TryRemove(new KeyValuePair<string, EndpointBinding>(binding.Name, binding));
            _connection?.Send(new AgentMessage { Unbind = new Unbind { BindId = binding.BindId } });
            SessionLog.EndpointUnbound(_logger, binding.Name);
        }

        return ValueTask.CompletedTask;
    }

    private async Task ReadLoopAsync(RelayConnection connection)
    {
        Exception? failure = null;
        try
        {
            while (await connection.Incoming.MoveNext(connection.Lifetime).ConfigureAwait(false))
            {
                Dispatch(connection, connection.Incoming.Current);
            }
        }
        catch (Exception ex) when (ex is RpcException or OperationCanceledException or IOException or InvalidOperationException)
        {
            failure = ex;
        }

        if (_closing.IsCancellationRequested)
        {
            return;
        }

        // Not closing: the relay or the network ended the session.
        _state = TunnelSessionState.Faulted;
        var reason = failure switch
        {
            null => "the relay ended the session",
            RpcException rpc => $"{rpc.StatusCode}: {rpc.Status.Detail}",
            _ => failure.Message,
        };
        SessionLog.ConnectionLost(_logger, Options.RelayUrl!, reason, failure);
        var lost = new TunnelConnectionException($"The connection to the relay was lost: {reason}", failure);
        foreach (var pending in _pendingBinds.Values)
        {
            pending.TrySetException(lost);
        }
    }

    private void Dispatch(RelayConnection connection, RelayMessage message)
    {
        switch (message.KindCase)
        {
            case RelayMessage.KindOneofCase.BindResult:
                var result = message.BindResult;
                if (result.Status == BindStatus.Ok && _bindingsById.TryGetValue(result.BindId, out var bound))
                {
                    // Marked here, in order, so an OpenStream right behind the result finds the endpoint bound.
                    bound.MarkBound();
                }

                if (_pendingBinds.TryGetValue(result.BindId, out var answer))
                {
                    answer.TrySetResult(result);
                }

                break;
            case RelayMessage.KindOneofCase.OpenStream:
                Track(ServeAsync(message.OpenStream));
                break;
            case RelayMessage.KindOneofCase.Heartbeat:
                connection.Send(new AgentMessage { HeartbeatAck = new HeartbeatAck { Sequence = message.Heartbeat.Sequence } });
                break;
            case RelayMessage.KindOneofCase.Drain:
                SessionLog.DrainRequested(_logger, message.Drain.Reason);
                break;
            case RelayMessage.KindOneofCase.Error:
                SessionLog.RelayError(_logger, message.Error.Code.ToString(), message.Error.Message);
                break;
            default:
                // HeartbeatAck, UnbindResult and messages of later protocol versions need no action here.
                break;
        }
    }

    private void Track(Task task)
    {
        _connections.TryAdd(task, 0);
        task.ContinueWith(static (t, state) => ((ConcurrentDictionary<Task, byte>)state!).TryRemove(t, out _), _connections, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    private async Task ServeAsync(OpenStream offer)
    {
        // Leave the read loop at once; serving (connecting upstream, bridging) happens here.
        await Task.Yield();
        if (!_bindingsById.TryGetValue(offer.BindId, out var binding) || !binding.IsBound
            || !string.Equals(binding.Name, offer.EndpointName, StringComparison.OrdinalIgnoreCase))
        {
            SessionLog.UnknownBind(_logger, offer.StreamId, offer.BindId);
            Refuse(offer, StreamRefusal.UnknownEndpoint, $"no endpoint is bound with id {offer.BindId}");
            return;
        }

        var info = new TunnelConnectionInfo(binding.Name, offer.ClientAddress, string.IsNullOrEmpty(offer.Sni) ? null : offer.Sni, offer.StreamId);
        SessionLog.ConnectionOpened(_logger, offer.StreamId, offer.ClientAddress, binding.Name);
        await binding.ServeAsync(offer, info, _closing.Token).ConfigureAwait(false);
    }

    internal TunnelStream? TryOpenStream(OpenStream offer, string endpointName)
    {
        var connection = _connection;
        try
        {
            if (connection is null || connection.Lifetime.IsCancellationRequested)
            {
                throw new InvalidOperationException("the connection to the relay is closed");
            }

            return connection.OpenStream(SessionId, offer.StreamId, () => Refuse(offer, StreamRefusal.Aborted, "aborted by the agent"), connection.Lifetime);
        }
        catch (Exception ex) when (ex is InvalidOperationException or ObjectDisposedException or RpcException)
        {
            SessionLog.StreamOpenFailed(_logger, offer.StreamId, endpointName, ex.Message);
            return null;
        }
    }

    internal void RefuseUpstreamUnavailable(OpenStream offer, EndpointBinding binding, string reason)
    {
        SessionLog.UpstreamConnectFailed(_logger, binding.Name, binding.Upstream ?? "", offer.StreamId, reason);
        Refuse(offer, StreamRefusal.UpstreamUnavailable, $"endpoint '{binding.Name}': upstream unreachable ({reason})");
    }

    internal void RefuseOverloaded(OpenStream offer, string endpointName)
    {
        SessionLog.ListenerBacklogFull(_logger, endpointName, offer.StreamId);
        Refuse(offer, StreamRefusal.Overloaded, $"endpoint '{endpointName}': listener backlog full");
    }

    private void Refuse(OpenStream offer, StreamRefusal reason, string message) =>
        _connection?.Send(new AgentMessage { StreamRefused = new StreamRefused { StreamId = offer.StreamId, Reason = reason, Message = message } });

    internal void OnHandlerFailed(OpenStream offer, string endpointName, Exception exception) =>
        SessionLog.HandlerFailed(_logger, endpointName, offer.StreamId, exception);

    internal void OnConnectionClosed(OpenStream offer, string endpointName, BridgeResult result) =>
        SessionLog.ConnectionClosed(_logger, offer.StreamId, endpointName, result);

    /// <summary>
    /// Closes the session: unbinds every endpoint so no new connection arrives, says goodbye to the relay, aborts
    /// connections still running, and closes the connection to the relay.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        var connection = _connection;
        foreach (var binding in _bindingsByName.Values)
        {
            await UnbindAsync(binding).ConfigureAwait(false);
        }

        connection?.Send(new AgentMessage { Goodbye = new Goodbye { Reason = "session disposed" } });
        await _closing.CancelAsync().ConfigureAwait(false);
        _state = TunnelSessionState.Closed;
        await Task.WhenAll(_connections.Keys).WaitAsync(Options.StreamCloseTimeout, Options.TimeProvider).ContinueWith(static _ => { }, TaskScheduler.Default).ConfigureAwait(false);
        if (connection is not null)
        {
            using var flush = new CancellationTokenSource(TimeSpan.FromSeconds(2), Options.TimeProvider);
            await connection.CompleteAsync(flush.Token).ConfigureAwait(false);
            await connection.DisposeAsync().ConfigureAwait(false);
        }

        await _readLoop.ConfigureAwait(false);
        SessionLog.Closed(_logger, SessionId);
        _closing.Dispose();
    }
}
