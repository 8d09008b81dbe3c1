using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using SiteLink.Relay.Hosting;
using SiteLink.Relay.Security;

namespace SiteLink.Relay.Tests;

/// <summary>
/// The agent port lets OpenSSL free idle connections' record buffers (34 KiB per agent session): on Linux, with the
/// .NET this is built for, the mode must take; a .NET or OpenSSL that changes what it relies on fails here, not silently
/// in the relay's memory.
/// </summary>
[TestFixture]
[Category("Operator")]
public sealed class TlsBufferReleaseTests
{
    [Test]
    public async Task OnLinux_TheModeIsSet_AndBytesStillFlowBothWays()
    {
        if (!OperatingSystem.IsLinux())
        {
            Assert.Ignore("SslStream is OpenSSL on Linux only.");
        }

        using var certificate = RelayCertificate.CreateDevelopmentCertificate();
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        using var client = new TcpClient();
        await client.ConnectAsync((IPEndPoint)listener.LocalEndpoint);
        using var accepted = await listener.AcceptTcpClientAsync();
        await using var server = new SslStream(accepted.GetStream());
        var pin = certificate.GetCertHashString(HashAlgorithmName.SHA256);
        await using var agent = new SslStream(client.GetStream(), false, (_, presented, _, _) => presented?.GetCertHashString(HashAlgorithmName.SHA256) == pin);
        await Task.WhenAll(
            server.AuthenticateAsServerAsync(new SslServerAuthenticationOptions { ServerCertificate = certificate }),
            agent.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = "localhost" }));

        var applied = TlsBufferRelease.TryApply(server);

        // More than a record each way, so buffers are freed and allocated again in the middle of a message.
        var up = RandomNumberGenerator.GetBytes(100_000);
        var down = RandomNumberGenerator.GetBytes(100_000);
        var received = new byte[up.Length];
        var returned = new byte[down.Length];
        await Task.WhenAll(
            agent.WriteAsync(up).AsTask(),
            server.ReadExactlyAsync(received).AsTask(),
            server.WriteAsync(down).AsTask(),
            agent.ReadExactlyAsync(returned).AsTask());

        Assert.Multiple(() =>
        {
            Assert.That(TlsBufferRelease.IsAvailable, Is.True, "SslStream's private _securityContext, or OpenSSL 3's libssl, is not what it was");
            Assert.That(applied, Is.True);
            Assert.That(received, Is.EqualTo(up));
            Assert.That(returned, Is.EqualTo(down));
        });
    }
}
