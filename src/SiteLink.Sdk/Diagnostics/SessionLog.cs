using Microsoft.Extensions.Logging;

namespace SiteLink.Diagnostics;

/// <summary>The SDK's log messages. Event ids are stable: a retired id is never reused.</summary>
internal static partial class SessionLog
{
    [LoggerMessage(1, LogLevel.Information, "Connected to relay {RelayId} ({Region}) at {RelayUrl}; session {SessionId}.")]
    public static partial void Connected(ILogger logger, string relayId, string region, Uri relayUrl, string sessionId);

    // One line at Warning (a lost connection is expected and recovered from); the exception and its trace at Debug.
    [LoggerMessage(2, LogLevel.Warning, "Connection to relay {RelayUrl} lost: {Reason}")]
    public static partial void ConnectionLost(ILogger logger, Uri relayUrl, string reason);

    [LoggerMessage(35, LogLevel.Debug, "Connection to relay {RelayUrl} lost; the error behind it:")]
    public static partial void ConnectionLostDetail(ILogger logger, Uri relayUrl, Exception exception);

    [LoggerMessage(3, LogLevel.Information, "Session {SessionId} closed.")]
    public static partial void Closed(ILogger logger, string sessionId);

    [LoggerMessage(36, LogLevel.Warning, "{Count} more '{Event}' warning(s) in the last {Interval} (held back from the log; every connection is counted in sitelink.connections).")]
    public static partial void HeldBackSummary(ILogger logger, long count, OfferEvent @event, TimeSpan interval);

    [LoggerMessage(40, LogLevel.Warning, "Endpoint '{EndpointName}': the TLS handshake of connection {StreamId} failed: {Reason}. ({Suppressed} more since the last such message.)")]
    public static partial void TlsHandshakeFailed(ILogger logger, string endpointName, string streamId, string reason, long suppressed);

    [LoggerMessage(39, LogLevel.Error, "Unexpected failure {Activity}; what it had started was ended and the session goes on.")]
    public static partial void UnexpectedFailure(ILogger logger, string activity, Exception exception);

    [LoggerMessage(38, LogLevel.Warning, "The relay did not confirm the unbind of endpoint '{EndpointName}' within {Timeout}; it forgets it with the session at the latest.")]
    public static partial void UnbindUnconfirmed(ILogger logger, string endpointName, TimeSpan timeout);

    [LoggerMessage(33, LogLevel.Information, "Session closed before it ever connected.")]
    public static partial void ClosedBeforeConnecting(ILogger logger);

    [LoggerMessage(34, LogLevel.Error, "The session stopped and will not retry ({TunnelError}): {Message} What to do: {Advice} (relay {RelayUrl})")]
    public static partial void Faulted(ILogger logger, TunnelError tunnelError, string message, string advice, Uri relayUrl);

    [LoggerMessage(4, LogLevel.Information, "Session state {Previous} -> {State}: {Reason}")]
    public static partial void StateChanged(ILogger logger, TunnelSessionState previous, TunnelSessionState state, string reason);

    [LoggerMessage(5, LogLevel.Warning, "Reconnect attempt {Attempt} failed, next in {Delay}: {Reason}")]
    public static partial void ReconnectAttemptFailed(ILogger logger, int attempt, TimeSpan delay, string reason);

    [LoggerMessage(37, LogLevel.Warning, "Connecting to the relay: attempt {Attempt} failed, next in {Delay}: {Reason}")]
    public static partial void ConnectAttemptFailed(ILogger logger, int attempt, TimeSpan delay, string reason);

    [LoggerMessage(6, LogLevel.Warning, "Drain deadline reached with {Count} connection(s) still open; closing them.")]
    public static partial void DrainDeadlineReached(ILogger logger, int count);

    [LoggerMessage(7, LogLevel.Error, "An application handler of the {EventName} event threw; the session goes on.")]
    public static partial void EventHandlerFailed(ILogger logger, string eventName, Exception exception);

    [LoggerMessage(8, LogLevel.Warning, "No answer from the relay within {Tolerance} of a heartbeat; closing the connection and reconnecting.")]
    public static partial void HeartbeatMissed(ILogger logger, TimeSpan tolerance);

    [LoggerMessage(9, LogLevel.Information, "Reconnected to relay {RelayId}; binding {Count} endpoint(s) again.")]
    public static partial void Reconnected(ILogger logger, string relayId, int count);

    [LoggerMessage(10, LogLevel.Information, "Endpoint '{EndpointName}' bound ({Kind}).")]
    public static partial void EndpointBound(ILogger logger, string endpointName, TunnelEndpointKind kind);

    [LoggerMessage(11, LogLevel.Warning, "The relay refused to bind endpoint '{EndpointName}': {Code}: {Reason}")]
    public static partial void BindRefused(ILogger logger, string endpointName, BindErrorCode code, string reason);

    [LoggerMessage(12, LogLevel.Information, "Endpoint '{EndpointName}' unbound.")]
    public static partial void EndpointUnbound(ILogger logger, string endpointName);

    [LoggerMessage(20, LogLevel.Debug, "Connection {StreamId} from {ClientAddress} to endpoint '{EndpointName}' opened.")]
    public static partial void ConnectionOpened(ILogger logger, string streamId, string clientAddress, string endpointName);

    [LoggerMessage(21, LogLevel.Debug, "Connection {StreamId} to endpoint '{EndpointName}' closed: {Result}.")]
    public static partial void ConnectionClosed(ILogger logger, string streamId, string endpointName, BridgeResult result);

    [LoggerMessage(22, LogLevel.Warning, "Refused connection {StreamId}: the relay asked for bind {BindId}, which this agent has not bound. ({Suppressed} more since the last such message.)")]
    public static partial void UnknownBind(ILogger logger, string streamId, string bindId, long suppressed);

    [LoggerMessage(23, LogLevel.Warning, "Endpoint '{EndpointName}': upstream {Upstream} unreachable, connection {StreamId} refused: {Reason}. ({Suppressed} more since the last such message.)")]
    public static partial void UpstreamConnectFailed(ILogger logger, string endpointName, string upstream, string streamId, string reason, long suppressed);

    [LoggerMessage(24, LogLevel.Error, "Endpoint '{EndpointName}': the handler failed on connection {StreamId}; the connection was aborted. ({Suppressed} more since the last such message.)")]
    public static partial void HandlerFailed(ILogger logger, string endpointName, string streamId, long suppressed, Exception exception);

    [LoggerMessage(25, LogLevel.Warning, "Endpoint '{EndpointName}': listener backlog full, connection {StreamId} refused. ({Suppressed} more since the last such message.)")]
    public static partial void ListenerBacklogFull(ILogger logger, string endpointName, string streamId, long suppressed);

    [LoggerMessage(26, LogLevel.Warning, "Could not open the stream of connection {StreamId} to endpoint '{EndpointName}': {Reason}. ({Suppressed} more since the last such message.)")]
    public static partial void StreamOpenFailed(ILogger logger, string streamId, string endpointName, string reason, long suppressed);

    [LoggerMessage(27, LogLevel.Warning, "Endpoint '{EndpointName}': connection {StreamId} refused: the agent already serves {Max} connections ({Limit}). ({Suppressed} more since the last such message.)")]
    public static partial void ConnectionLimitReached(ILogger logger, string endpointName, string streamId, string limit, int max, long suppressed);

    [LoggerMessage(28, LogLevel.Warning, "Ignored an offer from the relay with malformed ids (stream {StreamId}). ({Suppressed} more since the last such message.)")]
    public static partial void MalformedOffer(ILogger logger, string streamId, long suppressed);

    [LoggerMessage(29, LogLevel.Warning, "Connecting to the relay at {RelayUrl} without TLS (AllowInsecureTransport): the authtoken and all traffic are unencrypted. For development on this machine only.")]
    public static partial void InsecureTransport(ILogger logger, Uri relayUrl);

    [LoggerMessage(30, LogLevel.Warning, "The relay reported an error: {Code}: {Message}. ({Suppressed} more since the last such message.)")]
    public static partial void RelayError(ILogger logger, string code, string message, long suppressed);

    [LoggerMessage(31, LogLevel.Warning, "The relay asked this agent to drain: {Reason}")]
    public static partial void DrainRequested(ILogger logger, string reason);
}
