using System.Buffers.Text;
using System.Globalization;
using System.Security.Cryptography;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using SiteLink.Internal;
using SiteLink.Protocol.V1;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Security;
using SiteLink.Relay.Sessions;

namespace SiteLink.Relay.Agents;

/// <summary>
/// The gRPC service agents talk to: the Control stream of each session and the Stream call of each tunnelled
/// connection. The authtoken is checked on every call. Its methods are bound by <see cref="TunnelServiceMethods"/>.
/// </summary>
internal sealed class TunnelService
{

    private readonly RelayOptions _options;
    private readonly AuthTokenStore _tokens;
    private readonly SessionRegistry _registry;
    private readonly ConnectionRouter _router;
    private readonly RelayCounters _counters;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;

    public TunnelService(RelayOptions options, AuthTokenStore tokens, SessionRegistry registry, ConnectionRouter router, RelayCounters counters, TimeProvider timeProvider, ILogger<TunnelService> logger)
    {
        _options = options;
        _tokens = tokens;
        _registry = registry;
        _router = router;
        _counters = counters;
        _timeProvider = timeProvider;
        _logger = logger;
    }

    public async Task Control(IAsyncStreamReader<AgentMessage> requestStream, IServerStreamWriter<RelayMessage> responseStream, ServerCallContext context)
    {
        var token = Authenticate(context);
        var hello = await ReadHelloAsync(requestStream, context).ConfigureAwait(false);
        var session = new AgentSession(NewId("s_"), token, Truncate(hello.ClientId), context.Peer, Truncate(hello.SdkVersion));
        if (_registry.IsDraining)
        {
            throw new RpcException(new Status(StatusCode.Unavailable, "the relay is shutting down; try again or another relay"));
        }

        // An agent that reconnects before this relay noticed its old connection died names the old session: end it
        // now, so its endpoint names are free for the new one.
        if (!string.IsNullOrEmpty(hello.PreviousSessionId)
            && _registry.TryGetSession(hello.PreviousSessionId, out var previous)
            && previous.Token.Name == token.Name
            && previous.ClientId == session.ClientId)
        {
            _counters.OnSessionTakenOver();
            RelayLog.SessionTakenOver(_logger, previous.Id, session.Id);
            EndSession(previous);
        }

        if (_registry.TryAdd(session) is { } refusal)
        {
            RelayLog.SessionRefused(_logger, token.Name, refusal);
            throw new RpcException(new Status(StatusCode.ResourceExhausted, refusal));
        }

        RelayLog.SessionStarted(_logger, session.Id, token.Name, token.Tenant, context.Peer, session.ClientId, session.SdkVersion);
        session.Send(new RelayMessage
        {
            Welcome = new Welcome
            {
                SessionId = session.Id,
                RelayId = _options.RelayId,
                Region = _options.Region,
                ProtocolVersion = WireNames.ProtocolVersion,
                Limits = new Limits
                {
                    MaxBinds = (uint)_options.Limits.MaxBindsPerSession,
                    MaxConcurrentStreams = (uint)_options.Limits.MaxConcurrentStreamsPerSession,
                    MaxPendingStreams = (uint)_options.Limits.MaxPendingStreamsPerSession,
                    MaxFrameSize = (uint)_options.Limits.MaxFrameSize,
                    MaxParkedStreams = (uint)_options.Limits.MaxParkedStreamsPerSession,
                },
            },
        });

        using var ending = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, session.Lifetime);
        var writer = WriteLoopAsync(session, responseStream, ending.Token);
        var reason = "the agent closed the control stream";
        var silence = SilenceTimeout(hello);
        using var silenceTimer = _timeProvider.CreateTimer(
            _ =>
            {
                _counters.OnSessionTimedOut();
                RelayLog.SessionSilent(_logger, session.Id, silence);
                EndSession(session);
            },
            null,
            silence,
            Timeout.InfiniteTimeSpan);
        try
        {
            while (await requestStream.MoveNext(ending.Token).ConfigureAwait(false))
            {
                silenceTimer.Change(silence, Timeout.InfiniteTimeSpan);
                Handle(session, requestStream.Current);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or InvalidOperationException or RpcException)
        {
            reason = ex is RpcException rpc ? $"{rpc.StatusCode}: {rpc.Status.Detail}" : "the connection was lost";
        }
#pragma warning disable CA1031 // A bug handling one message must end this session cleanly (and say why), not fault the call silently.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            RelayLog.ProtocolError(_logger, session.Id, $"internal error handling a message: {ex.GetType().Name}: {ex.Message}");
            reason = "internal error";
        }
        finally
        {
            EndSession(session);
            await writer.ConfigureAwait(false);
            RelayLog.SessionEnded(_logger, session.Id, reason);
        }
    }

    /// <summary>Removes a session and its routes at once, closes what it was offered, and ends its calls.</summary>
    private void EndSession(AgentSession session)
    {
        var offers = _registry.Remove(session);
        session.End();
        _router.OnSessionEnded(offers);
    }

    /// <summary>The agent's declared heartbeat interval + tolerance, else the relay's default.</summary>
    private TimeSpan SilenceTimeout(Hello hello)
    {
        if (hello.HeartbeatIntervalMs > 0 && hello.HeartbeatToleranceMs > 0)
        {
            var declared = TimeSpan.FromMilliseconds((double)hello.HeartbeatIntervalMs + hello.HeartbeatToleranceMs);
            // Bounded so a misconfigured agent cannot pin a dead session for hours.
            return declared < MaxSilence ? declared : MaxSilence;
        }

        return _options.Limits.SessionSilenceTimeout;
    }

    private static readonly TimeSpan MaxSilence = TimeSpan.FromMinutes(10);

    private async Task<Hello> ReadHelloAsync(IAsyncStreamReader<AgentMessage> requestStream, ServerCallContext context)
    {
        using var timeout = new CancellationTokenSource(_options.Limits.HelloTimeout, _timeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, timeout.Token);
        bool received;
        try
        {
            received = await requestStream.MoveNext(linked.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested)
        {
            throw new RpcException(new Status(StatusCode.DeadlineExceeded, $"no Hello within {_options.Limits.HelloTimeout}"));
        }

        if (!received)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "the control stream ended before Hello"));
        }

        var first = requestStream.Current;
        if (first.KindCase != AgentMessage.KindOneofCase.Hello)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"the first control message must be Hello, not {first.KindCase}"));
        }

        if (first.Hello.ProtocolVersion != WireNames.ProtocolVersion)
        {
            throw new RpcException(new Status(StatusCode.FailedPrecondition,
                $"protocol version {first.Hello.ProtocolVersion.ToString(CultureInfo.InvariantCulture)} is not supported; this relay speaks version {WireNames.ProtocolVersion.ToString(CultureInfo.InvariantCulture)}"));
        }

        return first.Hello;
    }

    private void Handle(AgentSession session, AgentMessage message)
    {
        switch (message.KindCase)
        {
            case AgentMessage.KindOneofCase.Bind:
                var result = _registry.Bind(session, message.Bind);
                if (result.Status == BindStatus.Ok)
                {
                    RelayLog.Bound(_logger, session.Id, message.Bind.Name, session.Token.Tenant);
                }
                else
                {
                    RelayLog.BindRefused(_logger, session.Id, SessionRegistry.Truncate(message.Bind.Name), result.Status.ToString(), result.Message);
                }

                session.Send(new RelayMessage { BindResult = result });
                break;
            case AgentMessage.KindOneofCase.Unbind:
                var name = _registry.Unbind(session, message.Unbind.BindId);
                if (name is not null)
                {
                    RelayLog.Unbound(_logger, session.Id, name);
                }

                session.Send(new RelayMessage { UnbindResult = new UnbindResult { BindId = message.Unbind.BindId, Found = name is not null } });
                break;
            case AgentMessage.KindOneofCase.Heartbeat:
                session.Send(new RelayMessage { HeartbeatAck = new HeartbeatAck { Sequence = message.Heartbeat.Sequence } });
                break;
            case AgentMessage.KindOneofCase.HeartbeatAck:
                break;
            case AgentMessage.KindOneofCase.StreamRefused:
                _router.OnRefusedByAgent(session, message.StreamRefused);
                break;
            case AgentMessage.KindOneofCase.Goodbye:
                session.MarkLeaving();
                _registry.UnbindAll(session);
                break;
            default:
                var detail = message.KindCase == AgentMessage.KindOneofCase.Hello ? "Hello sent twice" : "a message this relay does not understand";
                RelayLog.ProtocolError(_logger, session.Id, detail);
                session.Send(new RelayMessage { Error = new Error { Code = ErrorCode.Protocol, Message = detail } });
                break;
        }
    }

    private static async Task WriteLoopAsync(AgentSession session, IServerStreamWriter<RelayMessage> responseStream, CancellationToken cancellationToken)
    {
        try
        {
            await foreach (var message in session.Outgoing.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                await responseStream.WriteAsync(message, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or InvalidOperationException or RpcException)
        {
            // The session is ending; the read loop reports why.
        }
        finally
        {
            // A dead writer means a dead session: end it so the read loop stops too.
            session.End();
        }
    }

    public async Task Stream(IAsyncStreamReader<DataFrame> requestStream, IServerStreamWriter<DataFrame> responseStream, ServerCallContext context)
    {
        var token = Authenticate(context);
        var sessionId = context.RequestHeaders.GetValue(WireNames.SessionIdHeader) ?? "";
        if (!_registry.TryGetSession(sessionId, out var session) || session.Token.Name != token.Name)
        {
            _counters.OnUnknownStream();
            RelayLog.UnknownStream(_logger, SessionRegistry.Truncate(sessionId), SessionRegistry.Truncate(context.RequestHeaders.GetValue(WireNames.StreamIdHeader) ?? ""));
            throw new RpcException(new Status(StatusCode.NotFound, "unknown session for this authtoken"));
        }

        PendingStream pending;
        if (context.RequestHeaders.GetValue(WireNames.ParkedHeader) == "1")
        {
            var paired = await WaitParkedAsync(session, context).ConfigureAwait(false);
            if (paired is null)
            {
                return;
            }

            pending = paired;
            pending.Refusal = new CancellationTokenSource();
            session.PairedParked[pending.Id] = pending;
            try
            {
                await responseStream.WriteAsync(new DataFrame
                {
                    Open = new OpenStream { StreamId = pending.Id, BindId = pending.BindId, EndpointName = pending.EndpointName, ClientAddress = pending.ClientAddress },
                }, context.CancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or IOException or InvalidOperationException)
            {
                // The parked call died as it was paired: the public client must not be left waiting.
                _counters.OnRefused(RefusalReason.AgentRefused);
                SocketIo.Reset(pending.Client);
                return;
            }
        }
        else
        {
            var streamId = context.RequestHeaders.GetValue(WireNames.StreamIdHeader) ?? "";
            pending = _router.Claim(session, streamId)
                ?? throw new RpcException(new Status(StatusCode.NotFound, "unknown, expired or already used stream id"));
        }

        try
        {
            await BridgeAsync(session, pending, requestStream, responseStream, context).ConfigureAwait(false);
        }
        finally
        {
            session.PairedParked.TryRemove(pending.Id, out _);
            pending.Refusal?.Dispose();
        }
    }

    /// <summary>Holds a parked stream until a public connection is paired with it; null when it never is.</summary>
    private async Task<PendingStream?> WaitParkedAsync(AgentSession session, ServerCallContext context)
    {
        var parked = session.TryPark(_options.Limits.MaxParkedStreamsPerSession)
            ?? throw new RpcException(new Status(StatusCode.ResourceExhausted, "the session parks the maximum number of streams (MaxParkedStreamsPerSession)"));
        using var waiting = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, session.Lifetime);
        try
        {
            return await parked.Pairing.WaitAsync(waiting.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            if (parked.TryEnd())
            {
                return null;
            }

            // Paired at the very moment the call ended: the connection is ours to close.
            var orphan = await parked.Pairing.ConfigureAwait(false);
            if (orphan is not null)
            {
                _counters.OnRefused(RefusalReason.AgentRefused);
                SocketIo.Reset(orphan.Client);
            }

            return null;
        }
    }

    private async Task BridgeAsync(AgentSession session, PendingStream pending, IAsyncStreamReader<DataFrame> requestStream, IServerStreamWriter<DataFrame> responseStream, ServerCallContext context)
    {
        _counters.OnAccepted();
        session.OnStreamStarted();
        long bytesIn = 0, bytesOut = 0;
        ClientBridgeOutcome outcome;
        Status? agentStatus;
        try
        {
            using var lifetime = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, session.Lifetime, pending.Refusal?.Token ?? CancellationToken.None);
            (outcome, agentStatus) = await ClientBridge.RunAsync(
                pending.Client,
                requestStream,
                responseStream,
                _options.Limits.MaxFrameSize,
                n => { bytesIn += n; _counters.OnBytesFromClient(n); },
                n => { bytesOut += n; _counters.OnBytesToClient(n); },
                lifetime.Token).ConfigureAwait(false);
        }
        finally
        {
            session.OnStreamEnded();
            _counters.OnCompleted();
        }

        RelayLog.ConnectionClosed(_logger, pending.Id, outcome.ToString(), bytesIn, bytesOut);
        switch (outcome)
        {
            case ClientBridgeOutcome.ClientFailed:
                throw new RpcException(new Status(StatusCode.Aborted, "the public client's connection failed"));
            case ClientBridgeOutcome.AgentFailed when !context.CancellationToken.IsCancellationRequested:
                throw new RpcException(agentStatus is { StatusCode: not StatusCode.Cancelled } status
                    ? status
                    : new Status(StatusCode.Aborted, "the connection was aborted"));
        }
    }

    private TokenIdentity Authenticate(ServerCallContext context)
    {
        var identity = _tokens.Authenticate(context.RequestHeaders.GetValue(WireNames.AuthorizationHeader), out var failure);
        if (identity is null)
        {
            RelayLog.AuthenticationFailed(_logger, context.Peer, failure);
            throw new RpcException(new Status(StatusCode.Unauthenticated, failure));
        }

        return identity;
    }

    private static string Truncate(string value) => SessionRegistry.Truncate(value);

    private static string NewId(string prefix)
    {
        Span<byte> bytes = stackalloc byte[12];
        RandomNumberGenerator.Fill(bytes);
        return prefix + Base64Url.EncodeToString(bytes);
    }
}
