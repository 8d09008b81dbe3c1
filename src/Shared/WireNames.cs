namespace SiteLink.Internal;

/// <summary>
/// The names and numbers of protos/sitelink/v1 that live outside the messages (call metadata, the version): one
/// definition for the agent and the relay, so the two ends cannot drift apart.
/// </summary>
internal static class WireNames
{
    /// <summary>The base wire protocol version of protos/sitelink/v1 (Hello.protocol_version): every relay speaks it.</summary>
    public const uint ProtocolVersion = 1;

    /// <summary>The version that adds the multiplexed data call (Tunnel/Mux): the highest either end speaks.</summary>
    public const uint MultiplexedProtocolVersion = 2;

    /// <summary>On the Mux call: the agent's receive window per connection, in bytes (decimal).</summary>
    public const string WindowHeader = "sitelink-window";

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

    /// <summary>
    /// A trailer of a control stream the relay refused for good: what the refusal is about. Its one value so far is
    /// <see cref="AgentVersionRefusal"/>.
    /// </summary>
    public const string RefusalTrailer = "sitelink-refusal";

    /// <summary>
    /// <see cref="RefusalTrailer"/>'s value when the agent's SDK is older than the relay's minimum (with
    /// FAILED_PRECONDITION, <see cref="MinimumVersionTrailer"/> and <see cref="AgentVersionTrailer"/>): an agent must not
    /// retry, only an update helps.
    /// </summary>
    public const string AgentVersionRefusal = "agent-version";

    /// <summary>With <see cref="AgentVersionRefusal"/>: the oldest SDK version the relay accepts.</summary>
    public const string MinimumVersionTrailer = "sitelink-minimum-version";

    /// <summary>With <see cref="AgentVersionRefusal"/>: the SDK version the agent reported, as the relay read it (capped, printable ASCII).</summary>
    public const string AgentVersionTrailer = "sitelink-agent-version";
}
