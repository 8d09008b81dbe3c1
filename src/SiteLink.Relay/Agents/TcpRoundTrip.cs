using System.Buffers.Binary;
using System.Net.Sockets;

namespace SiteLink.Relay.Agents;

/// <summary>
/// The kernel's smoothed round-trip time of a TCP connection (Linux <c>TCP_INFO</c>'s <c>tcpi_rtt</c>): what the admin
/// API reports per session, measured by TCP itself on the agent's connection at no cost to the agent. Null elsewhere.
/// </summary>
internal static class TcpRoundTrip
{
    private const int IpProtoTcp = 6;
    private const int TcpInfo = 11;
    private const int RttOffset = 68;

    /// <summary>A reader of <paramref name="socket"/>'s round-trip time; it answers null once the socket is closed.</summary>
    public static Func<TimeSpan?> Of(Socket? socket)
    {
        if (socket is null || !OperatingSystem.IsLinux())
        {
            return static () => null;
        }

        return () =>
        {
            Span<byte> info = stackalloc byte[104];
            try
            {
                var length = socket.GetRawSocketOption(IpProtoTcp, TcpInfo, info);
                return length >= RttOffset + 4 ? TimeSpan.FromMicroseconds(BinaryPrimitives.ReadUInt32LittleEndian(info[RttOffset..])) : null;
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException or PlatformNotSupportedException)
            {
                return null;
            }
        };
    }
}
