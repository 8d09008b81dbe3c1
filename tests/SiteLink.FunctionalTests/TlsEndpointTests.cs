using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;

namespace SiteLink.FunctionalTests;

/// <summary>
/// tls cloud endpoints: connections routed by the ClientHello's server name on a shared listener and passed through
/// encrypted to a TLS service behind the agent, with real clients (SslStream, openssl s_client, curl).
/// </summary>
[TestFixture]
[Category("TlsEndpoints")]
public sealed class TlsEndpointTests
{
    private static readonly TimeSpan ProcessTimeout = TimeSpan.FromSeconds(30);

    private static CloudEndpointOptions Tls(string name, string tenant, string endpoint, string hostname)
    {
        var options = new CloudEndpointOptions { Name = name, Protocol = "tls", Listen = "127.0.0.1:0", Tenant = tenant, Endpoint = endpoint };
        options.Hostnames.Add(hostname);
        return options;
    }

    private static async Task<(TestRelay Relay, TlsUpstream Acme, TlsUpstream Globex)> StartAsync(Action<RelayOptions>? configure = null)
    {
        var relay = await TestRelay.StartAsync([], o =>
        {
            o.CloudEndpoints.Add(Tls("acme-db", "acme", "db", "acme-db.relay.test"));
            o.CloudEndpoints.Add(Tls("globex-db", "globex", "db", "*.globex.relay.test"));
            configure?.Invoke(o);
        });
        var acme = new TlsUpstream("acme", "acme-db.relay.test");
        var globex = new TlsUpstream("globex", "shop.globex.relay.test");
        await (await relay.ConnectAgentAsync()).ForwardAsync("db", acme.Uri).DefaultTimeout();
        await (await relay.ConnectAgentAsync(TestRelay.GlobexToken)).ForwardAsync("db", globex.Uri).DefaultTimeout();
        return (relay, acme, globex);
    }

    [Test]
    public async Task AnSslStreamClient_IsRoutedBySni_AndTheRelayCarriesExactlyItsCiphertext()
    {
        var (relay, acme, globex) = await StartAsync();
        await using var _ = relay;
        await using var __ = acme;
        await using var ___ = globex;
        var marker = Encoding.ASCII.GetBytes("SECRET-MARKER-7f3a9c-never-in-clear");
        var payload = marker.Concat(SocketTestExtensions.RandomBytes(4 * 1024 * 1024)).Concat(marker).ToArray();

        var (echo, sent) = await EchoThroughTlsAsync(relay.CloudEndpoint("acme-db"), "acme-db.relay.test", acme.Thumbprint, payload);
        Assert.That(SHA256.HashData(echo), Is.EqualTo(SHA256.HashData(payload)), "4 MiB echoed through TLS end to end");

        await Eventually.WaitUntilAsync(() => acme.LastRawBytesRead.Length > 0, "the upstream finished");
        Assert.Multiple(() =>
        {
            Assert.That(acme.LastRawBytesRead, Is.EqualTo(sent), "the upstream read exactly the bytes the client wrote: the relay passed the ciphertext through untouched");
            Assert.That(sent.AsSpan().IndexOf(marker), Is.EqualTo(-1), "no plaintext on the wire the relay carries");
            Assert.That(relay.CloudEndpoint("globex-db"), Is.EqualTo(relay.CloudEndpoint("acme-db")), "one listener for both tenants");
        });
    }

    /// <summary>
    /// Connects to <paramref name="target"/> with TLS for <paramref name="serverName"/> (trusting only the certificate
    /// <paramref name="thumbprint"/>), sends <paramref name="payload"/>, closes its side and reads the echo to the end.
    /// Returns the echo and the raw bytes the client wrote on the wire.
    /// </summary>
    private static async Task<(byte[] Echo, byte[] Sent)> EchoThroughTlsAsync(IPEndPoint target, string serverName, string thumbprint, byte[] payload)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(target).DefaultTimeout();
        var recording = new RecordingStream(new NetworkStream(socket, ownsSocket: false));
        await using var tls = new SslStream(recording, leaveInnerStreamOpen: true, (_, certificate, _, _) => certificate!.GetCertHashString(HashAlgorithmName.SHA256) == thumbprint);
        await tls.AuthenticateAsClientAsync(serverName).DefaultTimeout();
        var reading = Task.Run(async () =>
        {
            using var echoed = new MemoryStream();
            await tls.CopyToAsync(echoed);
            return echoed.ToArray();
        });
        await tls.WriteAsync(payload).AsTask().DefaultTimeout();
        await tls.ShutdownAsync().DefaultTimeout();
        var echo = await reading.DefaultTimeout();
        return (echo, recording.Written.ToArray());
    }

    [Test]
    public async Task OpensslAndCurl_ReachEachTenantsServiceByName_WithTheServicesOwnCertificate()
    {
        var (relay, acme, globex) = await StartAsync();
        await using var _ = relay;
        await using var __ = acme;
        await using var ___ = globex;
        var port = relay.CloudEndpoint("acme-db").Port;
        var folder = Directory.CreateTempSubdirectory("sitelink-tls-");
        try
        {
            await File.WriteAllTextAsync(Path.Combine(folder.FullName, "globex.pem"), globex.Pem);
            await using var openssl = ProcessRunner.Bash($"echo PING | openssl s_client -connect 127.0.0.1:{port} -servername acme-db.relay.test -quiet -ign_eof", folder.FullName);
            await openssl.WaitForLineAsync("PONG acme", ProcessTimeout);
            await using var curl = ProcessRunner.Start("curl", ["--silent", "--show-error", "--max-time", "20", "--cacert", "globex.pem",
                "--resolve", $"shop.globex.relay.test:{port}:127.0.0.1", $"https://shop.globex.relay.test:{port}/"], folder.FullName);
            var exit = await curl.WaitForExitAsync(ProcessTimeout);

            Assert.Multiple(() =>
            {
                Assert.That(exit, Is.Zero, curl.AllOutput);
                Assert.That(curl.AllOutput, Does.Contain("tls-upstream:globex"), "curl verified globex's own certificate through the relay");
            });
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }

    [Test]
    public async Task ConnectionsTheRelayCannotRoute_AreClosedAtOnce_AndCounted()
    {
        var (relay, acme, globex) = await StartAsync(o => o.Limits.ClientHelloTimeout = TimeSpan.FromMilliseconds(500));
        await using var _ = relay;
        await using var __ = acme;
        await using var ___ = globex;
        var target = relay.CloudEndpoint("acme-db");

        async Task<bool> HandshakeFailsAsync(string targetHost)
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(target).DefaultTimeout();
            await using var tls = new SslStream(new NetworkStream(socket, ownsSocket: false), false, (_, _, _, _) => false);
            try
            {
                await tls.AuthenticateAsClientAsync(targetHost).DefaultTimeout();
                return false;
            }
            catch (Exception ex) when (ex is IOException or System.Security.Authentication.AuthenticationException)
            {
                return true;
            }
        }

        var unknownName = await HandshakeFailsAsync("other.relay.test");
        var noName = await HandshakeFailsAsync("127.0.0.1");
        using var garbage = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await garbage.ConnectAsync(target).DefaultTimeout();
        await garbage.SendAsync("GET / HTTP/1.1\r\nHost: acme-db.relay.test\r\n\r\n"u8.ToArray()).DefaultTimeout();
        var garbageClosed = await garbage.WaitForCloseAsync().DefaultTimeout();
        using var trickle = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await trickle.ConnectAsync(target).DefaultTimeout();
        await trickle.SendAsync(new byte[] { 22, 3, 1 }).DefaultTimeout();
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var trickleClosed = await trickle.WaitForCloseAsync().DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(unknownName && noName, Is.True, "no handshake without a routable name");
            Assert.That(garbageClosed, Is.True);
            Assert.That(trickleClosed, Is.True);
            Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)), "a ClientHello that never completes is closed after ClientHelloTimeout");
            Assert.That(relay.Server.Counters.Refused(RefusalReason.UnknownHost), Is.EqualTo(2));
            Assert.That(relay.Server.Counters.Refused(RefusalReason.BadClientHello), Is.EqualTo(2));
            Assert.That(acme.LastRawBytesRead, Is.Empty, "nothing reached a service");
        });
    }

    [Test]
    public async Task TlsEndingAtTheAgent_TheServiceGetsPlaintext_WhileTheRelayCarriedOnlyTheClientsCiphertext()
    {
        // A certificate for the public name, held by the agent only; the service behind it speaks plain TCP.
        await using var identity = new TlsUpstream("unused", "acme-db.relay.test");
        await using var relay = await TestRelay.StartAsync([], o => o.CloudEndpoints.Add(Tls("acme-db", "acme", "db", "acme-db.relay.test")));
        await using var plain = TestUpstream.Echo();
        await (await relay.ConnectAgentAsync()).ForwardAsync("db", plain.Uri, new EndpointOptions
        {
            TlsServer = new SslServerAuthenticationOptions { ServerCertificate = identity.ServerCertificate },
        }).DefaultTimeout();
        var marker = Encoding.ASCII.GetBytes("SECRET-MARKER-agent-terminated");
        var payload = marker.Concat(SocketTestExtensions.RandomBytes(1024 * 1024)).ToArray();

        var (echo, sent) = await EchoThroughTlsAsync(relay.CloudEndpoint("acme-db"), "acme-db.relay.test", identity.Thumbprint, payload);
        await Eventually.WaitUntilAsync(() => relay.Server.Counters.BytesFromClients == sent.Length, "the relay counted what the client sent");
        Assert.Multiple(() =>
        {
            Assert.That(echo, Is.EqualTo(payload), "decrypted at the agent, echoed by the plain service, encrypted again at the agent");
            Assert.That(sent.AsSpan().IndexOf(marker), Is.EqualTo(-1), "the relay's side of the connection carried no plaintext");
            Assert.That(relay.Server.Counters.BytesFromClients, Is.EqualTo(sent.Length), "and exactly the client's ciphertext");
        });
    }

    [Test]
    public async Task ATlsUpstream_IsVerifiedByPinOrPrivateCa_AndRefusedWhenUntrusted()
    {
        await using var service = new TlsUpstream("acme", "db.internal.test");
        await using var relay = await TestRelay.StartAsync(["pinned", "private-ca", "system", "insecure"]);
        var session = await relay.ConnectAgentAsync();
        var upstream = new Uri($"tls://127.0.0.1:{service.Uri.Port}");
        var pinned = new EndpointOptions();
        pinned.UpstreamTls.PinnedCertificateSha256 = service.Thumbprint;
        var privateCa = new EndpointOptions();
        privateCa.UpstreamTls.ServerName = "db.internal.test";
        privateCa.UpstreamTls.TrustedCertificateAuthorities.Add(service.PublicCertificate);
        var insecure = new EndpointOptions();
        insecure.UpstreamTls.AllowUntrustedCertificate = true;
        await session.ForwardAsync("pinned", upstream, pinned).DefaultTimeout();
        await session.ForwardAsync("private-ca", upstream, privateCa).DefaultTimeout();
        await session.ForwardAsync("system", upstream).DefaultTimeout();
        await session.ForwardAsync("insecure", upstream, insecure).DefaultTimeout();

        async Task<string> PingAsync(string endpoint)
        {
            using var client = await relay.ConnectClientAsync(endpoint);
            var reading = client.ReadToEndAsync();
            try
            {
                await client.SendAllAsync("PING"u8.ToArray()).DefaultTimeout();
                return Encoding.ASCII.GetString(await reading.DefaultTimeout());
            }
            catch (SocketException)
            {
                // The relay resets a connection the agent refused.
                return "reset";
            }
        }

        var answers = new Dictionary<string, string>();
        foreach (var endpoint in new[] { "pinned", "private-ca", "system", "insecure" })
        {
            answers[endpoint] = await PingAsync(endpoint);
        }

        Assert.Multiple(() =>
        {
            Assert.That(answers["pinned"], Is.EqualTo("PONG acme\n"), "trusted by its pin");
            Assert.That(answers["private-ca"], Is.EqualTo("PONG acme\n"), "trusted through the private CA, name checked");
            Assert.That(answers["system"], Is.EqualTo("reset"), "a self-signed certificate is not trusted by the system store: refused");
            Assert.That(answers["insecure"], Is.EqualTo("PONG acme\n"), "the explicit opt-out");
            Assert.That(relay.Logs.Entries.Select(e => e.Message), Has.Some.Contains("TLS to the upstream failed"));
        });
    }

    [Test]
    public async Task AMutualTlsUpstream_ServesTheAgentOnlyWithItsClientCertificate()
    {
        await using var client = new TlsUpstream("client-identity", "agent.customer.test");
        await using var service = new TlsUpstream("acme", "db.internal.test", requiredClientThumbprint: client.Thumbprint);
        await using var relay = await TestRelay.StartAsync(["with-cert", "without-cert"]);
        var session = await relay.ConnectAgentAsync();
        var upstream = new Uri($"tls://127.0.0.1:{service.Uri.Port}");
        var withCert = new EndpointOptions();
        withCert.UpstreamTls.PinnedCertificateSha256 = service.Thumbprint;
        withCert.UpstreamTls.ClientCertificates.Add(client.ServerCertificate);
        var withoutCert = new EndpointOptions();
        withoutCert.UpstreamTls.PinnedCertificateSha256 = service.Thumbprint;
        await session.ForwardAsync("with-cert", upstream, withCert).DefaultTimeout();
        await session.ForwardAsync("without-cert", upstream, withoutCert).DefaultTimeout();

        async Task<string> PingAsync(string endpoint)
        {
            using var socket = await relay.ConnectClientAsync(endpoint);
            var reading = socket.ReadToEndAsync();
            try
            {
                await socket.SendAllAsync("PING"u8.ToArray()).DefaultTimeout();
                return Encoding.ASCII.GetString(await reading.DefaultTimeout());
            }
            catch (SocketException)
            {
                return "reset";
            }
        }

        var answered = await PingAsync("with-cert");
        var refused = await PingAsync("without-cert");

        Assert.Multiple(() =>
        {
            Assert.That(answered, Is.EqualTo("PONG acme\n"), "the agent presented its client certificate");
            Assert.That(refused, Is.Not.EqualTo("PONG acme\n"), "no certificate, no service");
        });
    }
}
