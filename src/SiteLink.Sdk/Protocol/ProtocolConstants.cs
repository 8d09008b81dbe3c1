using System.Reflection;

namespace SiteLink.Protocol;

/// <summary>The agent's own wire settings (the names both ends share are in <c>SiteLink.Internal.WireNames</c>).</summary>
internal static class ProtocolConstants
{
    /// <summary>Largest data frame the agent sends unless the relay announces a smaller limit.</summary>
    public const int DefaultMaxFrameSize = 64 * 1024;

    /// <summary>
    /// Largest message either side accepts: the largest frame a relay may announce (1 MiB) plus protobuf overhead. A relay
    /// cannot make the agent buffer more per message.
    /// </summary>
    public const int MaxMessageSize = (1024 * 1024) + 1024;

    /// <summary>
    /// Multiplexed data call: the agent's receive window per connection, what the relay may send on one connection
    /// before the agent's reader consumed it (a connection whose application stops reading holds at most this).
    /// </summary>
    public const int MuxWindow = 4 * 1024 * 1024;

    /// <summary>Multiplexed data call: data held for all connections together before the agent stops reading the call.</summary>
    public const long MuxBufferBudget = 32 * 1024 * 1024;

    /// <summary>Control messages queued for the relay and not yet written; a relay that stops reading fills it.</summary>
    public const int MaxControlQueue = 1024;

    public static string SdkVersion { get; } =
        typeof(ProtocolConstants).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0]
        ?? "0.0.0";
}
