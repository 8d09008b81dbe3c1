using Microsoft.Extensions.Logging;

namespace SiteLink.AspNetCore.Transport;

/// <summary>The transport's log messages (category <c>SiteLink.AspNetCore</c>). Event ids are stable; retired ones are never reused.</summary>
internal static partial class TransportLog
{
    public const string Category = "SiteLink.AspNetCore";

    [LoggerMessage(EventId = 1, Level = LogLevel.Debug, Message = "Kestrel listens on SiteLink endpoint '{Endpoint}' (bound: {Bound}).")]
    public static partial void Listening(ILogger logger, string endpoint, bool bound);

    [LoggerMessage(EventId = 2, Level = LogLevel.Warning,
        Message = "SiteLink endpoint '{Endpoint}' is not bound after {Waited} (session {State}): the server starts anyway; the endpoint is bound once the session reaches the relay.")]
    public static partial void NotBoundYet(ILogger logger, string endpoint, TimeSpan waited, TunnelSessionState state);

    [LoggerMessage(EventId = 3, Level = LogLevel.Error,
        Message = "SiteLink endpoint '{Endpoint}' ended ({Reason}): Kestrel accepts no more connections on it until the server restarts.")]
    public static partial void EndpointEnded(ILogger logger, string endpoint, string reason);

    [LoggerMessage(EventId = 4, Level = LogLevel.Debug, Message = "Connection {ConnectionId} from {Client}: {Direction} ended: {Reason}")]
    public static partial void ConnectionFailed(ILogger logger, string connectionId, System.Net.EndPoint? client, string direction, string reason);

}
