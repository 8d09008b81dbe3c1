namespace SiteLink.Internal;

/// <summary>
/// The names and numbers of protos/sitelink/v1 that live outside the messages (call metadata, the version): one
/// definition for the agent and the relay, so the two ends cannot drift apart.
/// </summary>
internal static class WireNames
{
    /// <summary>The wire protocol version of protos/sitelink/v1.</summary>
    public const uint ProtocolVersion = 1;

    /// <summary>The gRPC service of protos/sitelink/v1 (its Control and Stream methods).</summary>
    public const string ServiceName = "sitelink.v1.Tunnel";

    /// <summary>Carries "Bearer &lt;authtoken&gt;" on every call.</summary>
    public const string AuthorizationHeader = "authorization";

    /// <summary>On a Stream call: the stream id the relay offered in OpenStream.</summary>
    public const string StreamIdHeader = "sitelink-stream-id";

    /// <summary>On a Stream call: the session the stream belongs to.</summary>
    public const string SessionIdHeader = "sitelink-session-id";

    /// <summary>On a Stream call: "1" when the stream is parked, waiting for the relay to pair it.</summary>
    public const string ParkedHeader = "sitelink-parked";
}
