using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SiteLink.ConsoleAgent;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>
/// <see cref="TunnelSessionOptions.TrustedCertificateAuthorities"/>: a relay whose certificate a private CA issued (root →
/// intermediate → leaf, all issued by the test) is trusted through that root only (CustomRootTrust); any other chain,
/// a wrong host name, an expired certificate are refused with a typed error naming the problem.
/// </summary>
[TestFixture]
[Category("Trust")]
public sealed class CustomTrustTests
{
    private TestPki _pki = null!;

    [OneTimeSetUp]
    public void CreatePki() => _pki = new TestPki("Vendor");

    [OneTimeTearDown]
    public void DeletePki() => _pki.Dispose();

    private static Task<TestRelay> StartRelayAsync((string Certificate, string Key) files, params string[] endpoints) =>
        TestRelay.StartAsync(endpoints, o =>
        {
            o.Tls.CertificatePath = files.Certificate;
            o.Tls.KeyPath = files.Key;
        });

    /// <summary>The relay's usual agent options, trusting by CA instead of by pin.</summary>
    private static TunnelSessionOptions Trusting(TestRelay relay, string? authorities)
    {
        var options = relay.AgentOptions();
        options.PinnedCertificateSha256 = null;
        options.TrustedCertificateAuthorities = authorities;
        return options;
    }

    [Test]
    public async Task RootPemFile_TrustsTheRelaysChain_AndBytesFlow()
    {
        await using var relay = await StartRelayAsync(_pki.IssueServer("relay"), "echo");
        await using var upstream = TestUpstream.Echo();
        var session = await TunnelSession.ConnectAsync(Trusting(relay, _pki.RootPem)).DefaultTimeout();
        await using (session)
        {
            await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();
            using var client = await relay.ConnectClientAsync("echo");
            var (sent, received, length) = await client.EchoRandomAsync(8 * 1024 * 1024).DefaultTimeout();

            Assert.Multiple(() =>
            {
                Assert.That(length, Is.EqualTo(8 * 1024 * 1024));
                Assert.That(received, Is.EqualTo(sent));
            });
        }
    }

    [Test]
    public async Task RootAsPemText_OrAsAnX509Collection_IsTrustedTheSameWay()
    {
        await using var relay = await StartRelayAsync(_pki.IssueServer("relay"));

        await using var fromText = await TunnelSession.ConnectAsync(Trusting(relay, await File.ReadAllTextAsync(_pki.RootPem))).DefaultTimeout();
        var options = Trusting(relay, null).AddTrustedCertificateAuthorities([_pki.Root]);
        await using var fromCollection = await TunnelSession.ConnectAsync(options).DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(fromText.State, Is.EqualTo(TunnelSessionState.Connected));
            Assert.That(fromCollection.State, Is.EqualTo(TunnelSessionState.Connected));
        });
    }

    [Test]
    public async Task AnotherCa_IsRefused_WithATypedPermanentErrorThatNamesTheIssuer()
    {
        using var other = new TestPki("Inspection");
        await using var relay = await StartRelayAsync(_pki.IssueServer("relay"));

        var ex = Assert.ThrowsAsync<TunnelConnectionException>(() => TunnelSession.ConnectAsync(Trusting(relay, other.RootPem)).DefaultTimeout());

        Assert.Multiple(() =>
        {
            Assert.That(ex!.TunnelError, Is.EqualTo(TunnelError.CertificateRejected));
            Assert.That(ex.IsTransient, Is.False, "an untrusted relay is not retried");
            Assert.That(ex.Message, Does.Contain("does not lead to one of TrustedCertificateAuthorities").And.Contain("Vendor"));
        });
    }

    [Test]
    public async Task TheSystemStoreIsNotConsulted_ASelfSignedRelayIsRefused()
    {
        // The default test relay's self-signed development certificate: trusted by nobody's root here.
        await using var relay = await TestRelay.StartAsync([]);

        var ex = Assert.ThrowsAsync<TunnelConnectionException>(() => TunnelSession.ConnectAsync(Trusting(relay, _pki.RootPem)).DefaultTimeout());

        Assert.That(ex!.TunnelError, Is.EqualTo(TunnelError.CertificateRejected));
    }

    [Test]
    public async Task RightCa_WrongHostName_IsRefused_NamingTheHost()
    {
        await using var relay = await StartRelayAsync(_pki.IssueServer("elsewhere", dnsName: "relay.other.example"));

        var ex = Assert.ThrowsAsync<TunnelConnectionException>(() => TunnelSession.ConnectAsync(Trusting(relay, _pki.RootPem)).DefaultTimeout());

        Assert.Multiple(() =>
        {
            Assert.That(ex!.TunnelError, Is.EqualTo(TunnelError.CertificateRejected));
            Assert.That(ex.Message, Does.Contain("not valid for the host name '127.0.0.1'").And.Contain("relay.other.example"));
        });
    }

    [Test]
    public async Task RightCa_ExpiredCertificate_IsRefused_SayingWhen()
    {
        var expired = DateTimeOffset.UtcNow.AddDays(-3);
        await using var relay = await StartRelayAsync(_pki.IssueServer("expired", notAfter: expired));

        var ex = Assert.ThrowsAsync<TunnelConnectionException>(() => TunnelSession.ConnectAsync(Trusting(relay, _pki.RootPem)).DefaultTimeout());

        Assert.Multiple(() =>
        {
            Assert.That(ex!.TunnelError, Is.EqualTo(TunnelError.CertificateRejected));
            Assert.That(ex.Message, Does.Contain($"expired on {expired.UtcDateTime:yyyy-MM-dd}"));
        });
    }

    [Test]
    public async Task RelaySendingItsLeafOnly_ChainsThroughAnIntermediateInTheBundle_ButNotThroughTheRootAlone()
    {
        await using var relay = await StartRelayAsync(_pki.IssueServer("leaf-only", leafOnly: true));
        var bundle = await File.ReadAllTextAsync(_pki.RootPem) + await File.ReadAllTextAsync(_pki.IntermediatePem);

        await using var withIntermediate = await TunnelSession.ConnectAsync(Trusting(relay, bundle)).DefaultTimeout();
        var ex = Assert.ThrowsAsync<TunnelConnectionException>(() => TunnelSession.ConnectAsync(Trusting(relay, _pki.RootPem)).DefaultTimeout());

        Assert.Multiple(() =>
        {
            Assert.That(withIntermediate.State, Is.EqualTo(TunnelSessionState.Connected));
            Assert.That(ex!.TunnelError, Is.EqualTo(TunnelError.CertificateRejected));
        });
    }

    [Test]
    public void UnusableBundles_AreRefusedBeforeConnecting_EachWithItsReason()
    {
        var missing = Path.Combine(Path.GetTempPath(), "sitelink-no-such-ca.pem");
        var notPem = Path.GetTempFileName();
        File.WriteAllText(notPem, "this is not a certificate");
        try
        {
            string Problem(Action<TunnelSessionOptions> set)
            {
                var options = new TunnelSessionOptions { RelayUrl = new Uri("https://127.0.0.1:1"), AuthToken = "t" };
                set(options);
                return string.Join("\n", options.Validate());
            }

            Assert.Multiple(() =>
            {
                Assert.That(Problem(o => o.TrustedCertificateAuthorities = missing), Does.Contain($"names file '{missing}', which does not exist"));
                Assert.That(Problem(o => o.TrustedCertificateAuthorities = notPem), Does.Contain("holds no PEM certificate"));
                Assert.That(Problem(o => o.TrustedCertificateAuthorities = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"), Does.Contain("cannot be read"));
                Assert.That(Problem(o =>
                {
                    o.TrustedCertificateAuthorities = _pki.RootPem;
                    o.PinnedCertificateSha256 = new string('a', 64);
                }), Does.Contain("PinnedCertificateSha256 and TrustedCertificateAuthorities are both set"));
                Assert.That(Problem(o => o.TrustedCertificateAuthorities = _pki.RootPem), Is.Empty);
            });
        }
        finally
        {
            File.Delete(notPem);
        }
    }

    [Test]
    public async Task StandaloneAgent_CaFile_ConnectsToThePrivateCaRelay()
    {
        await using var relay = await StartRelayAsync(_pki.IssueServer("relay"), "echo");
        await using var upstream = TestUpstream.Echo();
        var builder = AgentHost.CreateBuilder(
        [
            "--relay", relay.Server.AgentUrl.ToString(),
            "--token", TestRelay.AcmeToken,
            "--ca-file", _pki.RootPem,
            "--endpoint", $"echo=127.0.0.1:{upstream.Port}",
        ]);
        builder.Logging.ClearProviders();
        relay.Logs.AddTo(builder.Logging);
        using var host = builder.Build();
        var session = host.Services.GetRequiredService<ITunnelSession>();

        await host.StartAsync().DefaultTimeout();
        await Eventually.WaitUntilAsync(() => session.Endpoints.Any(e => e.Name == "echo"), "echo bound");
        using var client = await relay.ConnectClientAsync("echo");
        var (sent, received, _) = await client.EchoRandomAsync(1024 * 1024).DefaultTimeout();
        await host.StopAsync().DefaultTimeout();

        Assert.That(received, Is.EqualTo(sent));
    }
}
