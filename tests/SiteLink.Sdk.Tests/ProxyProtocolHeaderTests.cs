using System.Net;
using SiteLink.Endpoints;

namespace SiteLink.Sdk.Tests;

/// <summary>The PROXY protocol headers a forward endpoint sends, byte for byte against HAProxy's specification.</summary>
[TestFixture]
[Category("ProxyProtocol")]
public sealed class ProxyProtocolHeaderTests
{
    private static readonly byte[] Signature = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

    [Test]
    public void V1_IPv4_IPv6_AndUnknown()
    {
        var v4 = ProxyProtocolHeader.Create(ProxyProtocolVersion.V1, IPEndPoint.Parse("203.0.113.7:51234"), IPEndPoint.Parse("10.0.0.12:5432"), null);
        var v6 = ProxyProtocolHeader.Create(ProxyProtocolVersion.V1, IPEndPoint.Parse("[2001:db8::7]:51234"), IPEndPoint.Parse("[fd00::12]:5432"), null);
        var unknown = ProxyProtocolHeader.Create(ProxyProtocolVersion.V1, null, IPEndPoint.Parse("10.0.0.12:5432"), null);
        var mixed = ProxyProtocolHeader.Create(ProxyProtocolVersion.V1, IPEndPoint.Parse("203.0.113.7:51234"), IPEndPoint.Parse("[fd00::12]:5432"), null);
        // A dual-mode upstream socket reports an IPv4 upstream as IPv4-mapped IPv6: still TCP4.
        var dualMode = ProxyProtocolHeader.Create(ProxyProtocolVersion.V1, IPEndPoint.Parse("203.0.113.7:51234"), IPEndPoint.Parse("[::ffff:10.0.0.12]:5432"), null);

        Assert.Multiple(() =>
        {
            Assert.That(System.Text.Encoding.ASCII.GetString(v4), Is.EqualTo("PROXY TCP4 203.0.113.7 10.0.0.12 51234 5432\r\n"));
            Assert.That(System.Text.Encoding.ASCII.GetString(v6), Is.EqualTo("PROXY TCP6 2001:db8::7 fd00::12 51234 5432\r\n"));
            Assert.That(System.Text.Encoding.ASCII.GetString(unknown), Is.EqualTo("PROXY UNKNOWN\r\n"));
            Assert.That(System.Text.Encoding.ASCII.GetString(mixed), Is.EqualTo("PROXY TCP6 ::ffff:203.0.113.7 fd00::12 51234 5432\r\n"));
            Assert.That(System.Text.Encoding.ASCII.GetString(dualMode), Is.EqualTo("PROXY TCP4 203.0.113.7 10.0.0.12 51234 5432\r\n"));
        });
    }

    [Test]
    public void V2_IPv4_WithTheServerNameAsAnAuthorityTlv()
    {
        var header = ProxyProtocolHeader.Create(ProxyProtocolVersion.V2, IPEndPoint.Parse("203.0.113.7:51234"), IPEndPoint.Parse("10.0.0.12:5432"), "acme-db.relay.test");

        byte[] expected =
        [
            .. Signature,
            0x21, 0x11, 0x00, (byte)(12 + 3 + 18),
            203, 0, 113, 7, 10, 0, 0, 12,
            0xC8, 0x22, 0x15, 0x38,
            0x02, 0x00, 18, .. "acme-db.relay.test"u8.ToArray(),
        ];
        Assert.That(header, Is.EqualTo(expected));
    }

    [Test]
    public void V2_IPv6_AndLocalWhenTheClientIsUnknown()
    {
        var v6 = ProxyProtocolHeader.Create(ProxyProtocolVersion.V2, IPEndPoint.Parse("[2001:db8::7]:1"), IPEndPoint.Parse("[fd00::12]:2"), null);
        var local = ProxyProtocolHeader.Create(ProxyProtocolVersion.V2, null, IPEndPoint.Parse("10.0.0.12:5432"), "ignored");

        Assert.Multiple(() =>
        {
            Assert.That(v6[..16], Is.EqualTo(Signature.Concat(new byte[] { 0x21, 0x21, 0x00, 36 }).ToArray()));
            Assert.That(v6[16..32], Is.EqualTo(IPAddress.Parse("2001:db8::7").GetAddressBytes()));
            Assert.That(v6[32..48], Is.EqualTo(IPAddress.Parse("fd00::12").GetAddressBytes()));
            Assert.That(v6[48..52], Is.EqualTo(new byte[] { 0, 1, 0, 2 }));
            Assert.That(v6, Has.Length.EqualTo(52));
            Assert.That(local, Is.EqualTo(Signature.Concat(new byte[] { 0x20, 0x00, 0x00, 0x00 }).ToArray()));
        });
    }

    [Test]
    public async Task ProxyProtocolOnAnInProcessEndpoint_IsRefused_WithTheReason()
    {
        var options = new TunnelSessionOptions { RelayUrl = new Uri("https://127.0.0.1:9"), AuthToken = "token-0123456789abcdef0123" };
        await using var session = TunnelSession.CreateUnstarted(options);

        var ex = Assert.ThrowsAsync<ArgumentException>(() => session.ListenAsync("jobs", new EndpointOptions { ProxyProtocol = ProxyProtocolVersion.V2 }));

        Assert.That(ex!.Message, Does.Contain("ProxyProtocol applies to forward endpoints"));
    }
}
