using System.Net;
using System.Net.Sockets;

namespace SiteLink.Relay.Security;

/// <summary>The key per-address limits count by: an IPv4 address, or the /64 network of an IPv6 address.</summary>
internal static class ClientAddress
{
    /// <summary>
    /// The address a limit counts <paramref name="endPoint"/> under. IPv4-mapped IPv6 addresses count as IPv4; an IPv6
    /// address counts as its /64, the block one host or site is usually given, so one client cannot multiply its
    /// allowance by using many addresses of its own network. Anything else counts as <see cref="IPAddress.None"/>.
    /// </summary>
    public static IPAddress KeyOf(EndPoint? endPoint) => endPoint is IPEndPoint ip ? KeyOf(ip.Address) : IPAddress.None;

    /// <inheritdoc cref="KeyOf(EndPoint?)"/>
    public static IPAddress KeyOf(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
        {
            return address.MapToIPv4();
        }

        if (address.AddressFamily != AddressFamily.InterNetworkV6)
        {
            return address;
        }

        Span<byte> bytes = stackalloc byte[16];
        address.TryWriteBytes(bytes, out _);
        bytes[8..].Clear();
        return new IPAddress(bytes);
    }
}
