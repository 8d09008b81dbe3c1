using System.Reflection;

namespace SiteLink.Protocol;

/// <summary>Names and numbers both ends of the wire agree on.</summary>
internal static class ProtocolConstants
{
    /// <summary>The wire protocol version of protos/sitelink/v1.</summary>
    public const uint ProtocolVersion = 1;

    public const string AuthorizationHeader = "authorization";
    public const string StreamIdHeader = "sitelink-stream-id";
    public const string SessionIdHeader = "sitelink-session-id";
    public const string ParkedHeader = "sitelink-parked";

    /// <summary>Largest data frame the agent sends unless the relay announces a smaller limit.</summary>
    public const int DefaultMaxFrameSize = 64 * 1024;

    /// <summary>Largest message either side accepts: a frame plus protobuf overhead.</summary>
    public const int MaxMessageSize = 4 * 1024 * 1024;

    public static string SdkVersion { get; } =
        typeof(ProtocolConstants).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0]
        ?? "0.0.0";
}
