using System.Buffers.Text;
using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using SiteLink.Internal;
using SiteLink.Protocol.V1;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Events;
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
    private readonly AgentConnections _connections;
    private readonly RelayCounters _counters;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly AuthFailureLog _authFailures;
    private readonly PeerEventLog _sampled;
    private readonly AgentVersionPolicy _versions;
    private readonly SessionEvents _events;
    private readonly IRelayEventSink _sink;

    public TunnelService(RelayOptions options, AuthTokenStore tokens, SessionRegistry registry, ConnectionRouter router, AgentConnections connections, RelayCounters counters, TimeProvider timeProvider, AuthFailureLog authFailures, PeerEventLog sampled, SessionEvents events, ILogger<TunnelService> logger, AgentVersionPolicy versions, IRelayEventSink sink)
    {
        _sampled = sampled;
        _versions = versions;
        _sink = sink;
        _events = events;
        _options = options;
        _tokens = tokens;
        _registry = registry;
        _router = router;
        _connections = connections;
        _counters = counters;
        _timeProvider = timeProvider;
        _authFailures = authFailures;
        _logger = logger;
    }

    public async Task Control(IAsyncStreamReader<AgentMessage> requestStream, IServerStreamWriter<RelayMessage> responseStream, ServerCallContext context)
    {
        var http = context.GetHttpContext();
        var token = Authenticate(context);
        var address = ClientAddress.KeyOf(http.Connection.RemoteIpAddress ?? IPAddress.None);
        if (_registry.TryBeginHandshake(token.Name, address) is { } busy)
        {
            if (_sampled.Sessions.ShouldLog(out var suppressed))
            {
                RelayLog.SessionRefused(_logger, token.Name, busy, suppressed);
            }

            throw new RpcException(new Status(StatusCode.Unavailable, busy));
        }

        Hello hello;
        try
        {
            hello = await ReadHelloAsync(requestStream, context).ConfigureAwait(false);
        }
        finally
        {
            _registry.EndHandshake(token.Name, address);
        }

        if (_versions.Check(hello.SdkVersion) is { } tooOld)
        {
            throw RefuseAgentVersion(tooOld, token, hello, http, context);
        }

        var limits = _options.Limits;
        // The highest version both speak: 2 (multiplexed data calls) when the agent offers it and this relay allows it.
        var version = Math.Min(Math.Max(hello.ProtocolVersion, hello.MaxProtocolVersion), limits.Multiplexing ? WireNames.MultiplexedProtocolVersion : WireNames.ProtocolVersion);
        var session = new AgentSession(
            NewId("s_"),
            token,
            SafeText.Clean(hello.ClientId, SafeText.MaxIdLength),
            context.Peer,
            SafeText.Clean(hello.SdkVersion, SafeText.MaxIdLength),
            http.Connection.Id,
            limits.MaxControlQueueMessages,
            limits.MaxControlQueueBytes,
            _counters,
            _timeProvider)
        {
            Metadata = CleanMetadata(hello.Metadata),
            RoundTrip = TcpRoundTrip.Of(http.Features.Get<Microsoft.AspNetCore.Connections.Features.IConnectionSocketFeature>()?.Socket),
            ProtocolVersion = version,
        };
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
            RelayLog.SessionTakenOver(_logger, previous.Id, session.Id);
            EndSession(previous, SessionEnd.TakenOver(session.Id));
        }

        if (_registry.TryAdd(session, _tokens.IsCurrent) is { } refusal)
        {
            if (_sampled.Sessions.ShouldLog(out var suppressed))
            {
                RelayLog.SessionRefused(_logger, token.Name, refusal, suppressed);
            }

            throw new RpcException(new Status(refusal == SessionRegistry.TokenNoLongerValid ? StatusCode.Unauthenticated : StatusCode.ResourceExhausted, refusal));
        }

        MarkProductive(http);
        if (_connections.Find(http) is { } connection && connection.OnSessionStarted() > 1)
        {
            // An agent holds one session per connection; starting session after session on one spends its budget.
            connection.OnWastedCall("sessions started on one connection");
        }

        RelayLog.SessionStarted(_logger, session.Id, token.Name, token.Tenant, context.Peer, session.ClientId, session.SdkVersion);
        _events.Connected(session, RemoteAddress(http));
        session.Send(new RelayMessage
        {
            Welcome = new Welcome
            {
                SessionId = session.Id,
                RelayId = _options.RelayId,
                Region = _options.Region,
                ProtocolVersion = version,
                Limits = new Limits
                {
                    MaxBinds = (uint)limits.MaxBindsPerSession,
                    MaxConcurrentStreams = (uint)limits.MaxConcurrentStreamsPerSession,
                    MaxPendingStreams = (uint)limits.MaxPendingStreamsPerSession,
                    MaxFrameSize = (uint)limits.MaxFrameSize,
                    MaxParkedStreams = (uint)limits.MaxParkedStreamsPerSession,
                    MuxWindow = version >= WireNames.MultiplexedProtocolVersion ? (uint)limits.MuxWindow : 0,
                },
            },
        });

        using var ending = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, session.Lifetime);
        var writer = WriteLoopAsync(session, responseStream, ending.Token);
        var (reason, code) = ("the agent closed the control stream", "agent_closed");
        var silence = SilenceTimeout(hello);
        using var silenceTimer = _timeProvider.CreateTimer(
            _ =>
            {
                RelayLog.SessionSilent(_logger, session.Id, silence);
                EndSession(session, SessionEnd.Silent(silence));
            },
            null,
            silence,
            Timeout.InfiniteTimeSpan);
        try
        {
            while (await requestStream.MoveNext(ending.Token).ConfigureAwait(false))
            {
                silenceTimer.Change(silence, Timeout.InfiniteTimeSpan);
                var message = requestStream.Current;
                if (ReferenceEquals(message, TunnelServiceMethods.MalformedControlMessage))
                {
                    OnProtocolError(session, "a control message could not be parsed; ending the session");
                    session.End(SessionEnd.ProtocolViolation("a control message could not be parsed as sitelink.v1.AgentMessage"));
                    break;
                }

                Handle(session, message);
            }
        }
        catch (Exception ex) when ((ex is OperationCanceledException or IOException or InvalidOperationException or RpcException) && !session.IsLeaving)
        {
            (reason, code) = (ex is RpcException rpc ? $"{rpc.StatusCode}: {SafeText.Clean(rpc.Status.Detail)}" : "the connection was lost", "connection_lost");
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or InvalidOperationException or RpcException)
        {
            // After its Goodbye the agent closes its connection, which may reach the relay as a reset rather than the
            // end of the stream: it left all the same.
        }
#pragma warning disable CA1031 // A bug handling one message must end this session cleanly (and say why), not fault the call silently.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            RelayLog.ProtocolError(_logger, session.Id, $"internal error handling a message: {ex.GetType().Name}: {ex.Message}", 0);
            (reason, code) = ("internal error", "internal_error");
        }
        finally
        {
            EndSession(session, null, reason, code);
            await writer.ConfigureAwait(false);
        }

        var end = session.Ending;
        RelayLog.SessionEnded(_logger, session.Id, end?.Reason ?? reason);
        if (end is null)
        {
            return;
        }

        if (end.Abort)
        {
            // The agent does not read (or is gone): a status it would never read is not worth queueing; reset the call.
            http.Abort();
            return;
        }

        if (!context.CancellationToken.IsCancellationRequested)
        {
            throw new RpcException(end.Status);
        }
    }

    /// <summary>
    /// Removes a session and its routes at once, closes what it was offered, and ends its calls. The first call for a
    /// session publishes its <c>session.disconnected</c> (and an <c>endpoint.unbound</c> per endpoint it still bound),
    /// with why the relay ended it, or else <paramref name="agentReason"/>.
    /// </summary>
    private void EndSession(AgentSession session, SessionEnd? ending, string agentReason = "the session ended", string agentCode = "ended")
    {
        session.End(ending);
        var removal = _registry.Remove(session);
        _router.OnSessionEnded(removal.Offers);
        if (removal.Removed)
        {
            var end = session.Ending;
            _events.Disconnected(session, end?.Reason ?? agentReason, end?.Kind ?? agentCode, removal.Unbound);
        }
    }

    /// <summary>
    /// The agent's metadata as the relay keeps it: at most 16 entries, keys of at most 64 and values of at most 256
    /// characters, control characters replaced; the rest is not kept (it is informational, for operators).
    /// </summary>
    private static Dictionary<string, string> CleanMetadata(Google.Protobuf.Collections.MapField<string, string> metadata)
    {
        var kept = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in metadata.Take(MaxHelloMetadata))
        {
            // Two keys that read alike once cleaned: the first is kept.
            kept.TryAdd(SafeText.Clean(key, SafeText.MaxIdLength), SafeText.Clean(value));
        }

        return kept;
    }

    private const int MaxHelloMetadata = 16;

    /// <summary>The agent's address as the relay saw it (IPv4 clients of a dual-stack socket as IPv4).</summary>
    private static string RemoteAddress(HttpContext http) => http.Connection.RemoteIpAddress is { } address
        ? (address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address).ToString()
        : "unknown";

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
        catch (OperationCanceledException) when (timeout.IsCancellationRequested && !context.CancellationToken.IsCancellationRequested)
        {
            throw Refuse(context, StatusCode.DeadlineExceeded, $"no Hello within {_options.Limits.HelloTimeout}");
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or InvalidOperationException)
        {
            // The client reset the call or its connection went away before Hello: nobody is left to tell.
            throw new RpcException(new Status(StatusCode.Cancelled, "the control stream ended before Hello"));
        }

        if (!received)
        {
            throw Refuse(context, StatusCode.InvalidArgument, "the control stream ended before Hello");
        }

        var first = requestStream.Current;
        if (ReferenceEquals(first, TunnelServiceMethods.MalformedControlMessage))
        {
            throw Refuse(context, StatusCode.InvalidArgument, "the first control message could not be parsed as sitelink.v1.AgentMessage");
        }

        if (first.KindCase != AgentMessage.KindOneofCase.Hello)
        {
            throw Refuse(context, StatusCode.InvalidArgument, $"the first control message must be Hello, not {first.KindCase}");
        }

        if (first.Hello.ProtocolVersion is < WireNames.ProtocolVersion or > WireNames.MultiplexedProtocolVersion)
        {
            throw new RpcException(new Status(StatusCode.FailedPrecondition,
                $"protocol version {first.Hello.ProtocolVersion.ToString(CultureInfo.InvariantCulture)} is not supported; this relay speaks versions {WireNames.ProtocolVersion.ToString(CultureInfo.InvariantCulture)} to {WireNames.MultiplexedProtocolVersion.ToString(CultureInfo.InvariantCulture)}"));
        }

        return first.Hello;
    }

    /// <summary>A handshake that broke the protocol: one warning line, counted, and a status that says what was wrong.</summary>
    private RpcException Refuse(ServerCallContext context, StatusCode code, string detail)
    {
        _counters.OnProtocolError();
        if (_sampled.Handshakes.ShouldLog(out var suppressed))
        {
            RelayLog.HandshakeRefused(_logger, context.Peer, detail, suppressed);
        }

        return new RpcException(new Status(code, detail));
    }

    /// <summary>
    /// An agent older than <see cref="RelayOptions.MinimumAgentVersion"/>, refused before its session starts: counted,
    /// logged once a second (with how many were held back), published as <see cref="RelayEventTypes.AgentVersionRefused"/>,
    /// and answered with the status and trailers the SDK recognises as permanent.
    /// </summary>
    private RpcException RefuseAgentVersion(AgentVersionRefusal refusal, TokenIdentity token, Hello hello, HttpContext http, ServerCallContext context)
    {
        _counters.OnAgentVersionRefused();
        var clientId = SafeText.Clean(hello.ClientId, SafeText.MaxIdLength);
        if (_sampled.AgentVersions.ShouldLog(out var suppressed))
        {
            RelayLog.AgentVersionRefused(_logger, clientId, token.Name, token.Tenant, context.Peer, refusal.AgentVersion, refusal.MinimumVersion, suppressed);
        }

        _sink.Publish(new RelayEvent(RelayEventTypes.AgentVersionRefused, token.Tenant, token.Name, _timeProvider.GetUtcNow(), new Dictionary<string, object?>
        {
            ["agentVersion"] = refusal.AgentVersion,
            ["minimumVersion"] = refusal.MinimumVersion,
            ["clientId"] = clientId,
            ["token"] = token.Name,
            ["remoteAddress"] = new IPEndPoint(http.Connection.RemoteIpAddress ?? IPAddress.None, http.Connection.RemotePort).ToString(),
        }));
        return refusal.ToRpcException();
    }

    /// <summary>A live session broke the protocol: counted, and logged once a second.</summary>
    private void OnProtocolError(AgentSession session, string detail)
    {
        _counters.OnProtocolError();
        if (_sampled.ProtocolErrors.ShouldLog(out var suppressed))
        {
            RelayLog.ProtocolError(_logger, session.Id, detail, suppressed);
        }
    }

    /// <summary>A Stream call for a session or stream that is not there: counted, and logged once a second.</summary>
    private void OnUnknownStream(string sessionId, string streamId)
    {
        _counters.OnUnknownStream();
        if (_sampled.UnknownStreams.ShouldLog(out var suppressed))
        {
            RelayLog.UnknownStream(_logger, sessionId, streamId, suppressed);
        }
    }

    private void Handle(AgentSession session, AgentMessage message)
    {
        switch (message.KindCase)
        {
            case AgentMessage.KindOneofCase.Bind:
                var result = _registry.Bind(session, message.Bind);
                if (result.Status == BindStatus.Ok)
                {
                    // Within the bind rules' limits (checked before it was accepted), so safe to log as is.
                    RelayLog.Bound(_logger, session.Id, message.Bind.Name, session.Token.Tenant, message.Bind.Description.Length == 0 ? "" : $": {message.Bind.Description}");
                    _events.Bound(session, new BoundEndpoint(message.Bind.Name.ToLowerInvariant(), message.Bind.Description, message.Bind.Metadata, message.Bind.Pooling));
                }
                else if (_sampled.Binds.ShouldLog(out var suppressed))
                {
                    RelayLog.BindRefused(_logger, session.Id, SafeText.Clean(message.Bind.Name, SafeText.MaxIdLength), result.Status.ToString(), result.Message, suppressed);
                }

                session.Send(new RelayMessage { BindResult = result });
                break;
            case AgentMessage.KindOneofCase.Unbind:
                var bindId = message.Unbind.BindId;
                var unbound = _registry.Unbind(session, bindId);
                if (unbound is not null)
                {
                    RelayLog.Unbound(_logger, session.Id, unbound.Name);
                    _events.Unbound(session, unbound);
                }

                // Bind ids are at most 64 characters (Bind refuses longer ones), so a longer one is unknown: it is
                // answered without being echoed.
                session.Send(new RelayMessage { UnbindResult = new UnbindResult { BindId = bindId.Length <= SafeText.MaxIdLength ? bindId : "", Found = unbound is not null } });
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
                foreach (var left in _registry.UnbindAll(session))
                {
                    _events.Unbound(session, left);
                }

                break;
            default:
                var detail = message.KindCase == AgentMessage.KindOneofCase.Hello ? "Hello sent twice" : "a message this relay does not understand";
                OnProtocolError(session, detail);
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
                session.OnSent(message);
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
        var http = context.GetHttpContext();
        var session = FindDataCallSession(context, http);

        PendingStream pending;
        IAsyncStreamReader<DataFrame> reader = requestStream;
        var parked = context.RequestHeaders.GetValue(WireNames.ParkedHeader) == "1";
        if (parked)
        {
            var paired = await WaitParkedAsync(session, requestStream, context).ConfigureAwait(false);
            if (paired is null)
            {
                return;
            }

            (pending, reader) = paired.Value;
            MarkProductive(http);
            pending.Refusal = new CancellationTokenSource();
            session.PairedParked[pending.Id] = pending;
        }
        else
        {
            var streamId = context.RequestHeaders.GetValue(WireNames.StreamIdHeader) ?? "";
            MarkProductive(http);
            if (_router.Claim(session, streamId) is not { } claimed)
            {
                if (!session.UnknownStreams.TrySpend())
                {
                    OnProtocolError(session, "too many Stream calls for unknown or expired stream ids; ending the session");
                    EndSession(session, SessionEnd.ProtocolViolation("too many Stream calls for unknown or expired stream ids"));
                }

                throw new RpcException(new Status(StatusCode.NotFound, "unknown, expired or already used stream id"));
            }

            pending = claimed;
        }

        try
        {
            if (parked && !await TryWriteOpenAsync(pending, responseStream, context).ConfigureAwait(false))
            {
                return;
            }

            if (await BridgeAsync(session, pending, reader, responseStream, context.CancellationToken).ConfigureAwait(false) is { } failure)
            {
                throw new RpcException(failure);
            }
        }
        finally
        {
            session.PairedParked.TryRemove(pending.Id, out _);
            pending.Refusal?.Dispose();
            (reader as PrefetchedReader)?.Dispose();
        }
    }

    /// <summary>
    /// The session a data call (Stream or Mux) names, after the same checks for both: the call's token is the session's,
    /// and the call came on the session's own connection.
    /// </summary>
    private AgentSession FindDataCallSession(ServerCallContext context, HttpContext http)
    {
        var token = Authenticate(context);
        var sessionId = context.RequestHeaders.GetValue(WireNames.SessionIdHeader) ?? "";
        if (!_registry.TryGetSession(sessionId, out var session) || session.Token.Name != token.Name)
        {
            OnUnknownStream(SafeText.Clean(sessionId, SafeText.MaxIdLength), SafeText.Clean(context.RequestHeaders.GetValue(WireNames.StreamIdHeader), SafeText.MaxIdLength));
            throw new RpcException(new Status(StatusCode.NotFound, "unknown session for this authtoken"));
        }

        if (session.ConnectionId.Length > 0 && session.ConnectionId != http.Connection.Id)
        {
            // A session's streams share its one HTTP/2 connection, whose flow-control windows bound what the session
            // can make the relay buffer; streams on other connections would multiply that.
            OnUnknownStream(session.Id, "(on another connection than the session's)");
            throw new RpcException(new Status(StatusCode.NotFound, "a session's data streams must use the connection of its control stream"));
        }

        return session;
    }

    /// <summary>
    /// The session's multiplexed data call (protocol version 2): every tunnelled connection of the session from now on,
    /// each opened by a frame of the relay's, until the call or the session ends (connections on it fail then; new ones
    /// go by Stream calls again).
    /// </summary>
    public async Task Mux(IAsyncStreamReader<MuxBatch> requestStream, IServerStreamWriter<MuxBatch> responseStream, ServerCallContext context)
    {
        var http = context.GetHttpContext();
        var session = FindDataCallSession(context, http);
        if (session.ProtocolVersion < WireNames.MultiplexedProtocolVersion)
        {
            OnProtocolError(session, "a multiplexed data call on a session that did not agree to protocol version 2");
            throw new RpcException(new Status(StatusCode.FailedPrecondition, "the session did not agree to protocol version 2 at Hello; it has no multiplexed data call"));
        }

        var limits = _options.Limits;
        var window = long.TryParse(context.RequestHeaders.GetValue(WireNames.WindowHeader), NumberStyles.None, CultureInfo.InvariantCulture, out var announced)
            ? MuxSettings.ClampWindow(announced)
            : MuxSettings.MinWindow;
        var mux = new Multiplexer(responseStream, new MuxSettings(limits.MuxWindow, window, limits.MaxFrameSize, limits.AgentConnectionWindow, limits.MaxConcurrentStreamsPerSession), opens: true)
        {
            ProtocolError = detail => OnProtocolError(session, detail),
        };
        if (!session.TryAttachMux(mux, pending => OpenMultiplexed(session, mux, pending)))
        {
            OnProtocolError(session, "a second multiplexed data call for one session");
            throw new RpcException(new Status(StatusCode.AlreadyExists, "the session has a multiplexed data call already (or is ending)"));
        }

        MarkProductive(http);
        Status ended;
        try
        {
            using var lifetime = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, session.Lifetime);
            ended = await mux.RunAsync(requestStream, lifetime.Token).ConfigureAwait(false);
        }
        finally
        {
            session.DetachMux(mux);
            mux.Stop("the multiplexed data call ended");
        }

        if (ended.StatusCode == StatusCode.InvalidArgument)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "the agent broke the multiplexing protocol (only the relay opens connections)"));
        }
    }

    /// <summary>Opens a public connection on the session's data call and carries it there; false when the call just ended.</summary>
    private bool OpenMultiplexed(AgentSession session, Multiplexer mux, PendingStream pending)
    {
        var connection = mux.Open(new OpenStream { StreamId = pending.Id, BindId = pending.BindId, EndpointName = pending.EndpointName, ClientAddress = pending.ClientAddress, Sni = pending.Client.Sni ?? "" });
        if (connection is null)
        {
            return false;
        }

        pending.Refusal = new CancellationTokenSource();
        session.PairedParked[pending.Id] = pending;
        _ = CarryMultiplexedAsync(session, mux, connection, pending);
        return true;
    }

    private async Task CarryMultiplexedAsync(AgentSession session, Multiplexer mux, MuxConnection connection, PendingStream pending)
    {
        try
        {
            try
            {
                await connection.SendOpenAsync(mux.Lifetime).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is RpcException or OperationCanceledException or IOException or InvalidOperationException)
            {
                _router.CountRefusal(pending.Client, RefusalReason.AgentRefused);
                pending.Client.Reset();
                return;
            }

            var status = await BridgeAsync(session, pending, connection, connection, mux.Lifetime).ConfigureAwait(false);
            await connection.FinishAsync(status).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Nobody awaits this task: whatever failed, the client is not left open and the connection leaves the call.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            pending.Client.Reset();
            if (ex is not (RpcException or OperationCanceledException or IOException or InvalidOperationException))
            {
                RelayLog.ProtocolError(_logger, session.Id, $"internal error carrying a multiplexed connection: {ex.GetType().Name}: {ex.Message}", 0);
            }
        }
        finally
        {
            session.PairedParked.TryRemove(pending.Id, out _);
            pending.Refusal?.Dispose();
            connection.Dispose();
        }
    }

    /// <summary>
    /// Tells the agent which connection its parked stream now carries (the first frame). False when the call died as it
    /// was paired: the public client is reset then, not left waiting.
    /// </summary>
    private async Task<bool> TryWriteOpenAsync(PendingStream pending, IServerStreamWriter<DataFrame> responseStream, ServerCallContext context)
    {
        try
        {
            await responseStream.WriteAsync(new DataFrame
            {
                Open = new OpenStream { StreamId = pending.Id, BindId = pending.BindId, EndpointName = pending.EndpointName, ClientAddress = pending.ClientAddress, Sni = pending.Client.Sni ?? "" },
            }, context.CancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or InvalidOperationException)
        {
            _router.CountRefusal(pending.Client, RefusalReason.AgentRefused);
            pending.Client.Reset();
            return false;
        }
    }

    /// <summary>
    /// Holds a parked stream until a public connection is paired with it; null when it never is (the call ended, the
    /// session released it, or its lifetime ran out). Reads the call meanwhile: an agent has nothing to send before
    /// its stream is paired, so data there ends the call (it could otherwise fill the stream's receive window, and
    /// the relay's memory, on every parked stream). The read in flight is handed to the bridge with the pairing.
    /// </summary>
    private async Task<(PendingStream Pending, IAsyncStreamReader<DataFrame> Reader)?> WaitParkedAsync(AgentSession session, IAsyncStreamReader<DataFrame> requestStream, ServerCallContext context)
    {
        var parked = session.TryPark(_options.Limits.MaxParkedStreamsPerSession)
            ?? throw new RpcException(new Status(StatusCode.ResourceExhausted, "the session parks the maximum number of streams (MaxParkedStreamsPerSession)"));
        using var lifetime = new CancellationTokenSource(_options.Limits.ParkedStreamLifetime, _timeProvider);
        using var waiting = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, session.Lifetime, lifetime.Token);
        var reader = new PrefetchedReader(requestStream, context.CancellationToken);
        var pairing = parked.Pairing.WaitAsync(waiting.Token);
        try
        {
            await Task.WhenAny(pairing, reader.Prefetch).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Inspected below.
        }

        if (pairing.IsCompletedSuccessfully && pairing.Result is { } pending)
        {
            return (pending, reader);
        }

        if (!session.TryUnpark(parked))
        {
            // Paired at the very moment the wait ended: the connection is ours to carry (or to fail with the call).
            if (await parked.Pairing.ConfigureAwait(false) is { } orphan)
            {
                return (orphan, reader);
            }
        }

        // Before the read-ahead is cancelled: did the agent end (or break) the call itself?
        var agentEnded = reader.Prefetch.IsCompleted;
        reader.Dispose();
        bool sentData;
        try
        {
            sentData = agentEnded && await reader.Prefetch.ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or InvalidOperationException or RpcException)
        {
            sentData = false;
        }

        if (sentData)
        {
            requestStream.Current.Release();
            OnProtocolError(session, "data on a parked stream before it was paired; ending that stream");
            throw new RpcException(new Status(StatusCode.InvalidArgument, "a parked stream carries nothing until the relay pairs it with a connection"));
        }

        if (!agentEnded && !context.CancellationToken.IsCancellationRequested)
        {
            // Released by the relay (session ending, lifetime): a normal end, not a wasted call. One the agent ended,
            // reset or broke before it was used is wasted, like any call that did nothing.
            MarkProductive(context.GetHttpContext());
            if (lifetime.IsCancellationRequested)
            {
                _counters.OnParkedStreamExpired();
            }
        }

        return null;
    }

    /// <summary>Carries one connection; the status the agent's side of it ends with, null for OK.</summary>
    private async Task<Status?> BridgeAsync(AgentSession session, PendingStream pending, IAsyncStreamReader<DataFrame> requestStream, IServerStreamWriter<DataFrame> responseStream, CancellationToken callEnded)
    {
        _counters.OnAccepted();
        session.OnStreamStarted();
        long bytesIn = 0, bytesOut = 0;
        ClientBridgeOutcome outcome;
        Status? agentStatus;
        try
        {
            using var lifetime = CancellationTokenSource.CreateLinkedTokenSource(callEnded, session.Lifetime, pending.Refusal?.Token ?? CancellationToken.None);
            pending.Client.Transport.OnBridged();
            (outcome, agentStatus) = await ClientBridge.RunAsync(
                pending.Client,
                requestStream,
                responseStream,
                _options.Limits.MaxFrameSize,
                n => { bytesIn += n; _counters.OnBytesFromClient(n); },
                n => { bytesOut += n; _counters.OnBytesToClient(n); },
                _timeProvider,
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
                return new Status(StatusCode.Aborted, "the public client's connection failed");
            case ClientBridgeOutcome.IdleTimeout:
                _counters.OnIdleTimeout();
                return new Status(StatusCode.DeadlineExceeded, $"the connection carried nothing for {pending.Client.Endpoint.IdleTimeout} (the cloud endpoint's IdleTimeout)");
            case ClientBridgeOutcome.AgentFailed when !callEnded.IsCancellationRequested:
                return agentStatus is { StatusCode: not StatusCode.Cancelled } status
                    ? status
                    : new Status(StatusCode.Aborted, "the connection was aborted");
            default:
                return null;
        }
    }

    private TokenIdentity Authenticate(ServerCallContext context)
    {
        var http = context.GetHttpContext();
        var identity = _tokens.Authenticate(context.RequestHeaders.GetValue(WireNames.AuthorizationHeader), out var failure);
        if (identity is null)
        {
            _authFailures.Record(context.Peer, failure);
            throw new RpcException(new Status(StatusCode.Unauthenticated, failure));
        }

        _connections.Find(http)?.OnAuthenticated();
        return identity;
    }

    private static void MarkProductive(HttpContext http)
    {
        if (http.Features.Get<CallAccounting>() is { } accounting)
        {
            accounting.Productive = true;
        }
    }

    private static string NewId(string prefix)
    {
        Span<byte> bytes = stackalloc byte[12];
        RandomNumberGenerator.Fill(bytes);
        return prefix + Base64Url.EncodeToString(bytes);
    }
}
