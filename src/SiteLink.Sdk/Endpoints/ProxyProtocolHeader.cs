using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace SiteLink.Endpoints;

/// <summary>
/// The PROXY protocol header (HAProxy's specification, versions 1 and 2) a forward endpoint sends its upstream before
/// the connection's first byte, so the upstream sees the public client's address and port rather than the agent's.
/// </summary>
internal static class ProxyProtocolHeader
{
    private static readonly byte[] V2Signature = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

    /// <summary>PP2_TYPE_AUTHORITY: the host name the client asked for (TLS server name).</summary>
    private const byte AuthorityTlv = 0x02;

    /// <summary>
    /// The header for a connection from <paramref name="client"/> to <paramref name="destination"/> (the upstream as the
    /// agent reaches it). An unknown client, or one of another address family than the destination, is sent as
    /// <c>PROXY UNKNOWN</c> (v1) or the LOCAL command (v2), which upstreams treat as "use the connection's own address".
    /// </summary>
    public static byte[] Create(ProxyProtocolVersion version, EndPoint? client, EndPoint? destination, string? serverName)
    {
        // A dual-mode socket reports an IPv4 peer as ::ffff:a.b.c.d: the header names it as the IPv4 address it is.
        var source = Unmapped(client as IPEndPoint);
        var target = Unmapped(destination as IPEndPoint);
        if (source is not null && target is not null && source.AddressFamily != target.AddressFamily)
        {
            // Present both as IPv6 when one is (an IPv4 client reaching an IPv6 upstream, or the reverse).
            source = new IPEndPoint(source.Address.MapToIPv6(), source.Port);
            target = new IPEndPoint(target.Address.MapToIPv6(), target.Port);
        }

        return version switch
        {
            ProxyProtocolVersion.V1 => V1(source, target),
            ProxyProtocolVersion.V2 => V2(source, target, serverName),
            _ => throw new ArgumentOutOfRangeException(nameof(version), version, "No PROXY protocol header for this version."),
        };
    }

    private static IPEndPoint? Unmapped(IPEndPoint? endPoint) =>
        endPoint is { Address.IsIPv4MappedToIPv6: true } ? new IPEndPoint(endPoint.Address.MapToIPv4(), endPoint.Port) : endPoint;

    private static byte[] V1(IPEndPoint? source, IPEndPoint? target)
    {
        if (source is null || target is null)
        {
            return "PROXY UNKNOWN\r\n"u8.ToArray();
        }

        var family = source.AddressFamily == AddressFamily.InterNetwork ? "TCP4" : "TCP6";
        return Encoding.ASCII.GetBytes(string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"PROXY {family} {source.Address} {target.Address} {source.Port} {target.Port}\r\n"));
    }

    private static byte[] V2(IPEndPoint? source, IPEndPoint? target, string? serverName)
    {
        var authority = string.IsNullOrEmpty(serverName) ? [] : Encoding.ASCII.GetBytes(serverName);
        var tlv = authority.Length == 0 ? 0 : 3 + authority.Length;
        if (source is null || target is null)
        {
            // LOCAL: the upstream keeps the connection's own addresses.
            var local = new byte[16];
            V2Signature.CopyTo(local, 0);
            local[12] = 0x20;
            local[13] = 0x00;
            return local;
        }

        var ipv4 = source.AddressFamily == AddressFamily.InterNetwork;
        var addresses = ipv4 ? 12 : 36;
        var header = new byte[16 + addresses + tlv];
        V2Signature.CopyTo(header, 0);
        header[12] = 0x21; // version 2, PROXY
        header[13] = (byte)(ipv4 ? 0x11 : 0x21); // TCP over IPv4 / IPv6
        BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(14), (ushort)(addresses + tlv));
        var at = 16;
        var size = ipv4 ? 4 : 16;
        source.Address.TryWriteBytes(header.AsSpan(at, size), out _);
        target.Address.TryWriteBytes(header.AsSpan(at + size, size), out _);
        BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(at + (2 * size)), (ushort)source.Port);
        BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(at + (2 * size) + 2), (ushort)target.Port);
        if (tlv > 0)
        {
            var t = 16 + addresses;
            header[t] = AuthorityTlv;
            BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(t + 1), (ushort)authority.Length);
            authority.CopyTo(header, t + 3);
        }

        return header;
    }
}
