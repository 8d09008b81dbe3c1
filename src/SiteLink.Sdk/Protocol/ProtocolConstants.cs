using System.Reflection;

namespace SiteLink.Protocol;

/// <summary>The agent's own wire settings (the names both ends share are in <c>SiteLink.Internal.WireNames</c>).</summary>
internal static class ProtocolConstants
{
    /// <summary>Largest data frame the agent sends unless the relay announces a smaller limit.</summary>
    public const int DefaultMaxFrameSize = 64 * 1024;

    /// <summary>Largest message either side accepts: a frame plus protobuf overhead.</summary>
    public const int MaxMessageSize = 4 * 1024 * 1024;

    public static string SdkVersion { get; } =
        typeof(ProtocolConstants).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0]
        ?? "0.0.0";
}
