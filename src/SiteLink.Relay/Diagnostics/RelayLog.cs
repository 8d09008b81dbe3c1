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

    [LoggerMessage(4, LogLevel.Information, "Agent port TLS certificate: {Certificate}.")]
    public static partial void CertificateServed(ILogger logger, string certificate);

    [LoggerMessage(5, LogLevel.Warning, "UNSAFE: {What} on {Address}, which is not a loopback address, because {Setting} is set. {Consequence}")]
    public static partial void UnsafeOnNetwork(ILogger logger, string what, string address, string setting, string consequence);

    [LoggerMessage(6, LogLevel.Warning, "Token '{TokenName}' is weak ({Why}); accepted only because the agent port is on loopback. Generate one with: openssl rand -base64 32")]
    public static partial void WeakToken(ILogger logger, string tokenName, string why);

    [LoggerMessage(7, LogLevel.Information, "Authtokens reloaded from configuration: {Count} token(s); {Ended} session(s) of removed or changed tokens ended.")]
    public static partial void TokensReloaded(ILogger logger, int count, int ended);

    [LoggerMessage(8, LogLevel.Error, "The changed authtoken configuration is invalid and was not applied; the relay keeps the tokens it had. {Problems}")]
    public static partial void TokensReloadRejected(ILogger logger, string problems);

    [LoggerMessage(9, LogLevel.Warning, "Cloud endpoint '{CloudEndpoint}' forwards to tenant '{Tenant}', which no longer has a token: its connections are refused until one is added.")]
    public static partial void CloudEndpointWithoutToken(ILogger logger, string cloudEndpoint, string tenant);

    [LoggerMessage(10, LogLevel.Warning, "Refused call from {Peer}: {Reason}. ({Suppressed} more refused since the last such message.)")]
    public static partial void AuthenticationFailed(ILogger logger, string peer, string reason, long suppressed);

    [LoggerMessage(11, LogLevel.Information, "Session {SessionId} started for token '{TokenName}' (tenant {Tenant}) from {Peer}, agent {ClientId} SDK {SdkVersion}.")]
    public static partial void SessionStarted(ILogger logger, string sessionId, string tokenName, string tenant, string peer, string clientId, string sdkVersion);

    [LoggerMessage(12, LogLevel.Information, "Session {SessionId} ended: {Reason}.")]
    public static partial void SessionEnded(ILogger logger, string sessionId, string reason);

    [LoggerMessage(13, LogLevel.Warning, "Refused session for token '{TokenName}': {Reason}. ({Suppressed} more refused since the last such message.)")]
    public static partial void SessionRefused(ILogger logger, string tokenName, string reason, long suppressed);

    [LoggerMessage(14, LogLevel.Warning, "Session {SessionId} sent nothing for {Silence}; dropping it and its endpoints.")]
    public static partial void SessionSilent(ILogger logger, string sessionId, TimeSpan silence);

    [LoggerMessage(15, LogLevel.Information, "Session {SessionId} replaced by session {NewSessionId} of the same agent.")]
    public static partial void SessionTakenOver(ILogger logger, string sessionId, string newSessionId);

    [LoggerMessage(16, LogLevel.Information, "Relay stopping: asked {Sessions} session(s) to drain; {Connections} connection(s) in flight, waiting up to {Deadline}.")]
    public static partial void Draining(ILogger logger, int sessions, long connections, TimeSpan deadline);

    [LoggerMessage(17, LogLevel.Warning, "Drain deadline reached with {Connections} connection(s) still open; closing them.")]
    public static partial void DrainDeadlineReached(ILogger logger, long connections);

    [LoggerMessage(20, LogLevel.Information, "Session {SessionId} bound '{Endpoint}' (tenant {Tenant}){Description}.")]
    public static partial void Bound(ILogger logger, string sessionId, string endpoint, string tenant, string description);

    [LoggerMessage(21, LogLevel.Warning, "Session {SessionId}: bind of '{Endpoint}' refused: {Status}: {Reason}. ({Suppressed} more since the last such message.)")]
    public static partial void BindRefused(ILogger logger, string sessionId, string endpoint, string status, string reason, long suppressed);

    [LoggerMessage(22, LogLevel.Information, "Session {SessionId} unbound '{Endpoint}'.")]
    public static partial void Unbound(ILogger logger, string sessionId, string endpoint);

    [LoggerMessage(18, LogLevel.Warning, "Agent port: refused the connection of {Peer}: {Reason}. ({Suppressed} more refused since the last such message.)")]
    public static partial void AgentConnectionRefused(ILogger logger, string peer, string reason, long suppressed);

    [LoggerMessage(19, LogLevel.Warning, "Agent port: closed the connection of {Peer}: {Reason}. ({Suppressed} more closed since the last such message.)")]
    public static partial void AgentConnectionClosed(ILogger logger, string peer, string reason, long suppressed);

    [LoggerMessage(23, LogLevel.Warning, "Refused control stream from {Peer}: {Reason}. ({Suppressed} more since the last such message.)")]
    public static partial void HandshakeRefused(ILogger logger, string peer, string reason, long suppressed);

    [LoggerMessage(43, LogLevel.Warning, "Refused agent '{ClientId}' of token '{TokenName}' (tenant {Tenant}) from {Peer}: it runs SDK '{AgentVersion}', older than Relay:MinimumAgentVersion {MinimumVersion} (or not a version); it must be updated. ({Suppressed} more since the last such message.)")]
    public static partial void AgentVersionRefused(ILogger logger, string clientId, string tokenName, string tenant, string peer, string agentVersion, string minimumVersion, long suppressed);

    [LoggerMessage(30, LogLevel.Warning, "Cloud endpoint '{CloudEndpoint}': refused connection from {Client}: {Reason}. ({Suppressed} more refused since the last such message.)")]
    public static partial void ConnectionRefused(ILogger logger, string cloudEndpoint, string client, string reason, long suppressed);

    [LoggerMessage(36, LogLevel.Warning, "Cloud endpoints: {Count} more public connection(s) refused in the last {Interval} (by reason: metric sitelink.relay.connection.refusals).")]
    public static partial void ConnectionsRefusedSummary(ILogger logger, long count, TimeSpan interval);

    [LoggerMessage(37, LogLevel.Warning, "Agent port: {Count} more connection(s) refused in the last {Interval}.")]
    public static partial void AgentConnectionsRefusedSummary(ILogger logger, long count, TimeSpan interval);

    [LoggerMessage(38, LogLevel.Warning, "Agent port: {Count} more connection(s) closed in the last {Interval}.")]
    public static partial void AgentConnectionsClosedSummary(ILogger logger, long count, TimeSpan interval);

    [LoggerMessage(39, LogLevel.Warning, "{Count} more {What} in the last {Interval} (held back from the log; every one is counted in the metrics).")]
    public static partial void HeldBackSummary(ILogger logger, long count, string what, TimeSpan interval);

    [LoggerMessage(31, LogLevel.Debug, "Cloud endpoint '{CloudEndpoint}': connection {StreamId} from {Client} offered to session {SessionId}.")]
    public static partial void ConnectionOffered(ILogger logger, string cloudEndpoint, string streamId, string client, string sessionId);

    [LoggerMessage(32, LogLevel.Debug, "Connection {StreamId} closed: {Outcome}; {BytesIn} bytes in, {BytesOut} bytes out.")]
    public static partial void ConnectionClosed(ILogger logger, string streamId, string outcome, long bytesIn, long bytesOut);

    [LoggerMessage(33, LogLevel.Warning, "Session {SessionId} asked for stream '{StreamId}', which is unknown, expired, used or not its own. ({Suppressed} more since the last such message.)")]
    public static partial void UnknownStream(ILogger logger, string sessionId, string streamId, long suppressed);

    [LoggerMessage(34, LogLevel.Warning, "Session {SessionId}: protocol error: {Detail}. ({Suppressed} more since the last such message.)")]
    public static partial void ProtocolError(ILogger logger, string sessionId, string detail, long suppressed);

    [LoggerMessage(35, LogLevel.Warning, "Cloud endpoint '{CloudEndpoint}': accepting a connection failed ({Error}); still accepting.")]
    public static partial void AcceptFailed(ILogger logger, string cloudEndpoint, string error);

    [LoggerMessage(40, LogLevel.Information, "Cloud endpoint '{CloudEndpoint}': {Client} denied by policy rule '{Rule}': {Reason}. ({Suppressed} more denials since the last such message.)")]
    public static partial void PolicyDenied(ILogger logger, string cloudEndpoint, string client, string rule, string reason, long suppressed);

    [LoggerMessage(41, LogLevel.Error, "Traffic policies in the configuration were not applied: {Problems} The relay keeps the policies it had.")]
    public static partial void PoliciesReloadRejected(ILogger logger, string problems);

    [LoggerMessage(42, LogLevel.Information, "Cloud endpoint '{CloudEndpoint}': traffic policy reloaded; new connections and every request from now on follow it (HTTP keep-alive connections included), established TCP and TLS connections go on as they are.")]
    public static partial void PolicyReloaded(ILogger logger, string cloudEndpoint);

    [LoggerMessage(50, LogLevel.Information, "Cloud endpoint '{CloudEndpoint}' started on {Address}, forwarding to {Tenant}/{Endpoint} (runtime).")]
    public static partial void CloudEndpointStarted(ILogger logger, string cloudEndpoint, string address, string tenant, string endpoint);

    [LoggerMessage(51, LogLevel.Information, "Cloud endpoint '{CloudEndpoint}' stopped (runtime): no new connections; its {Connections} established ones go on until they close.")]
    public static partial void CloudEndpointStopped(ILogger logger, string cloudEndpoint, int connections);

    [LoggerMessage(52, LogLevel.Information, "Cloud endpoint '{CloudEndpoint}' replaced (runtime; changed: {Changes}): new connections go to {Address}, forwarding to {Tenant}/{Endpoint}; the {Connections} established ones go on as they were until they close.")]
    public static partial void CloudEndpointReplaced(ILogger logger, string cloudEndpoint, string changes, string address, string tenant, string endpoint, int connections);

    [LoggerMessage(53, LogLevel.Information, "Cloud endpoint '{CloudEndpoint}' updated in place (runtime; changed: {Changes}): new connections and requests follow it, established connections go on as they are.")]
    public static partial void CloudEndpointUpdated(ILogger logger, string cloudEndpoint, string changes);

    [LoggerMessage(54, LogLevel.Warning, "Cloud endpoint '{CloudEndpoint}' was not applied: {Problem}")]
    public static partial void CloudEndpointNotApplied(ILogger logger, string cloudEndpoint, string problem);

    [LoggerMessage(55, LogLevel.Information, "The {Protocol} listener on {Address} stopped: no cloud endpoint is served on it any more (connections it accepted go on until they close).")]
    public static partial void CloudListenerStopped(ILogger logger, string protocol, string address);
}
