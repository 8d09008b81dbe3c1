using Microsoft.Extensions.Logging;

namespace SiteLink.Relay.Diagnostics;

/// <summary>The relay's log messages. Event ids are stable: a retired id is never reused. Secrets are never logged.</summary>
internal static partial class RelayLog
{
    [LoggerMessage(1, LogLevel.Information, "Agent port listening on {Url} ({Security}).")]
    public static partial void AgentPortListening(ILogger logger, string url, string security);

    [LoggerMessage(2, LogLevel.Information, "Cloud endpoint '{CloudEndpoint}' listening on {Address}, forwarding to {Tenant}/{Endpoint}.")]
    public static partial void CloudEndpointListening(ILogger logger, string cloudEndpoint, string address, string tenant, string endpoint);

    [LoggerMessage(3, LogLevel.Information, "TLS certificate SHA-256 (pin this in agents): {Sha256}")]
    public static partial void CertificateFingerprint(ILogger logger, string sha256);

    [LoggerMessage(10, LogLevel.Warning, "Refused call from {Peer}: {Reason}.")]
    public static partial void AuthenticationFailed(ILogger logger, string peer, string reason);

    [LoggerMessage(11, LogLevel.Information, "Session {SessionId} started for token '{TokenName}' (tenant {Tenant}) from {Peer}, agent {ClientId} SDK {SdkVersion}.")]
    public static partial void SessionStarted(ILogger logger, string sessionId, string tokenName, string tenant, string peer, string clientId, string sdkVersion);

    [LoggerMessage(12, LogLevel.Information, "Session {SessionId} ended: {Reason}.")]
    public static partial void SessionEnded(ILogger logger, string sessionId, string reason);

    [LoggerMessage(13, LogLevel.Warning, "Refused session for token '{TokenName}': {Reason}.")]
    public static partial void SessionRefused(ILogger logger, string tokenName, string reason);

    [LoggerMessage(14, LogLevel.Warning, "Session {SessionId} sent nothing for {Silence}; dropping it and its endpoints.")]
    public static partial void SessionSilent(ILogger logger, string sessionId, TimeSpan silence);

    [LoggerMessage(15, LogLevel.Information, "Session {SessionId} replaced by session {NewSessionId} of the same agent.")]
    public static partial void SessionTakenOver(ILogger logger, string sessionId, string newSessionId);

    [LoggerMessage(16, LogLevel.Information, "Relay stopping: asked {Sessions} session(s) to drain; {Connections} connection(s) in flight, waiting up to {Deadline}.")]
    public static partial void Draining(ILogger logger, int sessions, long connections, TimeSpan deadline);

    [LoggerMessage(17, LogLevel.Warning, "Drain deadline reached with {Connections} connection(s) still open; closing them.")]
    public static partial void DrainDeadlineReached(ILogger logger, long connections);

    [LoggerMessage(20, LogLevel.Information, "Session {SessionId} bound '{Endpoint}' (tenant {Tenant}).")]
    public static partial void Bound(ILogger logger, string sessionId, string endpoint, string tenant);

    [LoggerMessage(21, LogLevel.Warning, "Session {SessionId}: bind of '{Endpoint}' refused: {Status}: {Reason}.")]
    public static partial void BindRefused(ILogger logger, string sessionId, string endpoint, string status, string reason);

    [LoggerMessage(22, LogLevel.Information, "Session {SessionId} unbound '{Endpoint}'.")]
    public static partial void Unbound(ILogger logger, string sessionId, string endpoint);

    [LoggerMessage(30, LogLevel.Warning, "Cloud endpoint '{CloudEndpoint}': refused connection from {Client}: {Reason}.")]
    public static partial void ConnectionRefused(ILogger logger, string cloudEndpoint, string client, string reason);

    [LoggerMessage(31, LogLevel.Debug, "Cloud endpoint '{CloudEndpoint}': connection {StreamId} from {Client} offered to session {SessionId}.")]
    public static partial void ConnectionOffered(ILogger logger, string cloudEndpoint, string streamId, string client, string sessionId);

    [LoggerMessage(32, LogLevel.Debug, "Connection {StreamId} closed: {Outcome}; {BytesIn} bytes in, {BytesOut} bytes out.")]
    public static partial void ConnectionClosed(ILogger logger, string streamId, string outcome, long bytesIn, long bytesOut);

    [LoggerMessage(33, LogLevel.Warning, "Session {SessionId} asked for stream '{StreamId}', which is unknown, expired, used or not its own.")]
    public static partial void UnknownStream(ILogger logger, string sessionId, string streamId);

    [LoggerMessage(34, LogLevel.Warning, "Session {SessionId}: protocol error: {Detail}.")]
    public static partial void ProtocolError(ILogger logger, string sessionId, string detail);

    [LoggerMessage(35, LogLevel.Error, "Cloud endpoint '{CloudEndpoint}': accept loop failed.")]
    public static partial void AcceptFailed(ILogger logger, string cloudEndpoint, Exception exception);
}
