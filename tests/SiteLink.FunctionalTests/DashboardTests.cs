using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>
/// The admin listener's dashboard in a real headless browser (Debian's chromium): with the admin key in the URL's
/// fragment it shows the connected agent, its endpoint and the recent events; without one, a form and no data. The
/// relay's certificate is trusted by its public key only (<c>--ignore-certificate-errors-spki-list</c>), not by turning
/// checks off.
/// </summary>
[TestFixture]
[Category("Dashboard")]
public sealed class DashboardTests
{
    private static string? Chromium => new[] { "/usr/bin/chromium", "/usr/bin/chromium-browser", "/snap/bin/chromium" }.FirstOrDefault(File.Exists);

    /// <summary>Renders <paramref name="url"/> in headless chromium once its scripts and requests have settled; returns the DOM.</summary>
    private static async Task<string> RenderAsync(Uri url, string spki)
    {
        if (Chromium is not { } chromium)
        {
            RealServers.Missing("chromium is not installed (sudo apt-get install chromium; .ci/run installs it).");
            return "";
        }

        var profile = Directory.CreateTempSubdirectory("sitelink-chromium-");
        try
        {
            await using var browser = ProcessRunner.Start(chromium,
            [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage",
                $"--user-data-dir={profile.FullName}", $"--ignore-certificate-errors-spki-list={spki}",
                "--virtual-time-budget=8000", "--dump-dom", url.AbsoluteUri,
            ]);
            var exit = await browser.WaitForExitAsync(TimeSpan.FromSeconds(60));
            Assert.That(exit, Is.Zero, browser.AllOutput);
            return string.Join("\n", browser.Output);
        }
        finally
        {
            profile.Delete(recursive: true);
        }
    }

    /// <summary>The base64 SHA-256 of the relay certificate's public key, as chromium's SPKI allow-list wants it.</summary>
    private static async Task<string> SpkiOfAsync(Uri url, string pin)
    {
        using var client = new TcpClient();
        await client.ConnectAsync(url.Host, url.Port).DefaultTimeout();
        await using var tls = new SslStream(client.GetStream(), false, AdminClient.PinnedTo(pin));
        await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = "localhost" }).DefaultTimeout();
        using var certificate = new System.Security.Cryptography.X509Certificates.X509Certificate2(tls.RemoteCertificate!);
        return Convert.ToBase64String(SHA256.HashData(certificate.PublicKey.ExportSubjectPublicKeyInfo()));
    }

    [Test]
    public async Task The_dashboard_shows_a_connected_agent_to_a_browser_with_the_admin_key_and_nothing_without_it()
    {
        await using var relay = await TestRelay.StartAsync(["billing-db"], AdminClient.Enable);
        var session = await relay.ConnectAgentAsync(configure: o => o.ClientId = "dashboard-agent-7");
        await session.BindHandlerAsync("billing-db", (_, _) => Task.CompletedTask).DefaultTimeout();
        var spki = await SpkiOfAsync(relay.Server.AdminUrl!, relay.Server.CertificateSha256!);

        var dom = await RenderAsync(new Uri(relay.Server.AdminUrl!, $"dashboard#key={AdminClient.ReadKey}"), spki);
        Assert.Multiple(() =>
        {
            Assert.That(dom, Does.Contain("dashboard-agent-7"), "the sessions table lists the agent");
            Assert.That(dom, Does.Contain("billing-db"), "its endpoint, bound and as a cloud endpoint");
            Assert.That(dom, Does.Contain("session.connected"), "the recent events");
            Assert.That(dom, Does.Contain("test-relay"), "the relay's id from /v1/status");
            Assert.That(dom, Does.Not.Contain(AdminClient.ReadKey), "the key is not left in the page");
        });

        var anonymous = await RenderAsync(new Uri(relay.Server.AdminUrl!, "dashboard"), spki);
        Assert.That(anonymous, Does.Not.Contain("dashboard-agent-7"));
        Assert.That(anonymous, Does.Contain("Admin key"));
    }
}
