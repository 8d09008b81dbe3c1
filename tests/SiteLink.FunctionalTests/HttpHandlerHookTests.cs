using System.Net.Sockets;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>ConfigureHttpHandler adjusts the connection to the relay without weakening its trust or its protocol.</summary>
[TestFixture]
[Category("Surface")]
public sealed class HttpHandlerHookTests
{
    [Test]
    public async Task TheHook_IsApplied_AndThePinStillHolds()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);
        var dialled = 0;
        var options = relay.AgentOptions();
        options.ConfigureHttpHandler = handler => handler.ConnectCallback = async (context, ct) =>
        {
            Interlocked.Increment(ref dialled);
            var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            await socket.ConnectAsync(context.DnsEndPoint, ct);
            return new NetworkStream(socket, ownsSocket: true);
        };
        await using (var session = await TunnelSession.ConnectAsync(options).DefaultTimeout())
        {
            Assert.That(session.State, Is.EqualTo(TunnelSessionState.Connected));
        }

        var wrongPin = relay.AgentOptions();
        wrongPin.PinnedCertificateSha256 = new string('A', 64);
        wrongPin.ConfigureHttpHandler = handler => handler.ConnectTimeout = TimeSpan.FromSeconds(5);
        var refused = Assert.ThrowsAsync<TunnelConnectionException>(async () => await TunnelSession.ConnectAsync(wrongPin).DefaultTimeout());

        Assert.Multiple(() =>
        {
            Assert.That(dialled, Is.GreaterThanOrEqualTo(1), "the application's connect callback dialled the relay");
            Assert.That(refused!.TunnelError, Is.EqualTo(TunnelError.CertificateRejected), "a hook does not drop the pin");
        });
    }

    [Test]
    public async Task AHookThatReplacesTheCertificateValidation_IsRefused_NotObeyed()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);
        var options = relay.AgentOptions();
        options.PinnedCertificateSha256 = new string('A', 64);
        // What an application might try to "fix" a certificate error with; the SDK must refuse it, not run with it.
#pragma warning disable CA5359 // Deliberately insecure: the test checks that it is refused.
        options.ConfigureHttpHandler = handler => handler.SslOptions.RemoteCertificateValidationCallback = (_, _, _, _) => true;
#pragma warning restore CA5359

        var ex = Assert.ThrowsAsync<TunnelConnectionException>(async () => await TunnelSession.ConnectAsync(options).DefaultTimeout());

        Assert.Multiple(() =>
        {
            Assert.That(ex!.IsTransient, Is.False);
            Assert.That(ex.Message, Does.Contain("replaced the relay's certificate validation"));
            Assert.That(relay.Server.SessionCount, Is.Zero, "nothing reached the relay with the weakened trust");
        });
    }

    [Test]
    public async Task AHookThatChangesTheNameTheCertificateIsCheckedAgainst_IsRefused()
    {
        await using var relay = await TestRelay.StartAsync([]);
        var options = relay.AgentOptions();
        options.ConfigureHttpHandler = handler => handler.SslOptions.TargetHost = "some-other-name.example";

        var ex = Assert.ThrowsAsync<TunnelConnectionException>(async () => await TunnelSession.ConnectAsync(options).DefaultTimeout());

        Assert.Multiple(() =>
        {
            Assert.That(ex!.IsTransient, Is.False);
            Assert.That(ex.Message, Does.Contain("TargetHost"));
            Assert.That(relay.Server.SessionCount, Is.Zero);
        });
    }

    [Test]
    [Category("Proxy")]
    public async Task AHookThatReplacesTheProxysConnectCallback_IsRefused_NotAWayAroundTheProxy()
    {
        await using var proxy = await TinyproxyServer.StartAsync();
        await using var relay = await TestRelay.StartAsync([]);
        var options = relay.AgentOptions();
        options.Proxy.Address = proxy.Address;
        options.ConfigureHttpHandler = handler => handler.ConnectCallback = async (context, ct) =>
        {
            var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            await socket.ConnectAsync(context.DnsEndPoint, ct);
            return new NetworkStream(socket, ownsSocket: true);
        };

        var ex = Assert.ThrowsAsync<TunnelConnectionException>(async () => await TunnelSession.ConnectAsync(options).DefaultTimeout());

        Assert.Multiple(() =>
        {
            Assert.That(ex!.IsTransient, Is.False);
            Assert.That(ex.Message, Does.Contain("replaced ConnectCallback"));
            Assert.That(relay.Server.SessionCount, Is.Zero, "nothing went around the proxy");
            Assert.That(proxy.ConnectRequests, Is.Empty);
        });
    }
}
