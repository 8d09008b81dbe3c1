using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Relay.Configuration;

namespace SiteLink.FunctionalTests;

/// <summary>C13: mutual TLS on an https cloud endpoint, with certificates the test issues (a CA, an intermediate, leaves).</summary>
[TestFixture]
[Category("TrafficPolicy")]
public sealed class MutualTlsPolicyTests
{
    private CertificateFolder _folder = null!;

    [SetUp]
    public void SetUp() => _folder = new CertificateFolder();

    [TearDown]
    public void TearDown() => _folder.Dispose();

    private static X509Certificate2 Authority(string name, X509Certificate2? issuer = null)
    {
        var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        var notBefore = DateTimeOffset.UtcNow.AddDays(-1);
        if (issuer is null)
        {
            return request.CreateSelfSigned(notBefore, notBefore.AddDays(30));
        }

        using var signed = request.Create(issuer, notBefore, notBefore.AddDays(20), RandomNumberGenerator.GetBytes(8));
        return signed.CopyWithPrivateKey(key);
    }

    private static X509Certificate2 Leaf(string name, X509Certificate2 issuer, bool clientAuth = true)
    {
        var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}, O=Acme", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(clientAuth ? "1.3.6.1.5.5.7.3.2" : "1.3.6.1.5.5.7.3.1")], false));
        var notBefore = DateTimeOffset.UtcNow.AddDays(-1);
        using var signed = request.Create(issuer, notBefore, notBefore.AddDays(10), RandomNumberGenerator.GetBytes(8));
        return signed.CopyWithPrivateKey(key);
    }

    private HttpClient ClientTo(IPEndPoint target, X509Certificate2? certificate, X509Certificate2? intermediate = null) => new(new SocketsHttpHandler
    {
        UseProxy = false,
        ConnectCallback = async (_, ct) =>
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            await socket.ConnectAsync(target, ct);
            return new NetworkStream(socket, ownsSocket: true);
        },
        SslOptions =
        {
            // The relay's self-signed certificate, trusted by its fingerprint; what is tested is the other direction.
            RemoteCertificateValidationCallback = (_, presented, _, _) => presented is X509Certificate2 server && _folder.Thumbprints.Contains(server.GetCertHashString(HashAlgorithmName.SHA256)),
            ClientCertificates = certificate is null ? null : intermediate is null ? [certificate] : [certificate, intermediate],
            LocalCertificateSelectionCallback = certificate is null ? null : (_, _, _, _, _) => certificate,
        },
    }) { Timeout = TimeSpan.FromSeconds(30) };

    [Test]
    public async Task OnlyClientsWithACertificateFromTheConfiguredAuthorities_GetThrough_AndTheSubjectReachesTheService()
    {
        using var root = Authority("Acme Root CA");
        using var intermediate = Authority("Acme Issuing CA", root);
        using var good = Leaf("ops-laptop", intermediate);
        using var serverOnly = Leaf("not-for-clients", intermediate, clientAuth: false);
        using var otherRoot = Authority("Other Root CA");
        using var stranger = Leaf("ops-laptop", otherRoot);
        var bundle = Path.Combine(_folder.FullName, "clients-ca.pem");
        await File.WriteAllTextAsync(bundle, root.ExportCertificatePem() + "\n" + intermediate.ExportCertificatePem() + "\n");

        await using var relay = await TestRelay.StartAsync([], o =>
        {
            var endpoint = new CloudEndpointOptions
            {
                Name = "admin", Protocol = "https", Listen = "127.0.0.1:0", Tenant = "acme", Endpoint = "admin",
                CertificatePath = _folder.Certificate("admin.relay.test"), ClientCertificateAuthorities = bundle, KeepAliveTimeout = TimeSpan.FromSeconds(1),
            };
            endpoint.Hostnames.Add("admin.relay.test");
            var headers = new PolicyRuleOptions { Type = "add-headers" };
            headers.Headers["X-Client-Cert-Subject"] = "${client.cert.subject}";
            headers.Headers["X-Client-Cert-Sha256"] = "${client.cert.sha256}";
            endpoint.Policy.OnHttpRequest.Add(headers);
            o.CloudEndpoints.Add(endpoint);
        });
        await using var web = await WebUpstream.StartAsync("admin");
        await (await relay.ConnectAgentAsync()).ForwardAsync("admin", web.Uri).DefaultTimeout();
        var target = relay.CloudEndpoint("admin");
        var url = $"https://admin.relay.test:{target.Port}/all-headers";

        using var withGood = ClientTo(target, good);
        var seen = await withGood.GetStringAsync(url).DefaultTimeout();
        async Task<Exception?> Refused(X509Certificate2? certificate)
        {
            using var client = ClientTo(target, certificate);
            try
            {
                await client.GetStringAsync(url).DefaultTimeout();
                return null;
            }
            catch (HttpRequestException ex)
            {
                return ex;
            }
        }

        var without = await Refused(null);
        var fromStranger = await Refused(stranger);
        var wrongUsage = await Refused(serverOnly);

        Assert.Multiple(() =>
        {
            Assert.That(seen, Does.Contain("X-Client-Cert-Subject: CN=ops-laptop, O=Acme\n"));
            Assert.That(seen, Does.Contain($"X-Client-Cert-Sha256: {good.GetCertHashString(HashAlgorithmName.SHA256)}\n"));
            Assert.That(without, Is.Not.Null, "no client certificate: refused in the handshake");
            Assert.That(fromStranger, Is.Not.Null, "a certificate from another CA: refused in the handshake");
            Assert.That(wrongUsage, Is.Not.Null, "a certificate not issued for client authentication: refused");
            Assert.That(web.Connections, Is.EqualTo(1), "only the good client's request reached the service");
        });
    }

    [Test]
    public void ClientCertificateAuthorities_ThatCannotBeRead_OrOnAnotherProtocol_AreRefusedAtStart()
    {
        var missing = Path.Combine(_folder.FullName, "missing.pem");
        var ex = Assert.ThrowsAsync<RelayConfigurationException>(() => TestRelay.StartAsync(["db"], o =>
        {
            o.CloudEndpoints[0].ClientCertificateAuthorities = missing;
            var https = new CloudEndpointOptions
            {
                Name = "admin", Protocol = "https", Listen = "127.0.0.1:0", Tenant = "acme", Endpoint = "admin",
                CertificatePath = _folder.Certificate("admin.relay.test"), ClientCertificateAuthorities = missing,
            };
            https.Hostnames.Add("admin.relay.test");
            o.CloudEndpoints.Add(https);
        }));

        Assert.That(ex!.Message, Does.Contain("CloudEndpoints:0:ClientCertificateAuthorities applies to https endpoints")
            .And.Contain($"CloudEndpoints:1:ClientCertificateAuthorities '{missing}' cannot be read as a PEM bundle"));
    }
}
