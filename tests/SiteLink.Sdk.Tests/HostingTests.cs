using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace SiteLink.Sdk.Tests;

[TestFixture]
public sealed class HostingTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(10);

    private sealed class NoopHandler : ITunnelConnectionHandler
    {
        public Task HandleAsync(TunnelConnection connection, CancellationToken cancellationToken) => Task.CompletedTask;
    }

    private static IConfiguration Configuration(Dictionary<string, string?> values) =>
        new ConfigurationBuilder().AddInMemoryCollection(values).Build();

    private static Dictionary<string, string?> ValidSettings(int relayPort = 443) => new()
    {
        ["SiteLink:RelayUrl"] = $"https://127.0.0.1:{relayPort}",
        ["SiteLink:AuthToken"] = "config-secret-token-value",
    };

    private static int ClosedPort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }

    [Test]
    public void AddSiteLink_TwiceOrMore_RegistersOneSingletonSessionAndOneHostedService()
    {
        var services = new ServiceCollection();
        services.AddSingleton(Configuration(ValidSettings()));
        services.AddLogging();
        services.AddSiteLink();
        services.AddSiteLink(o => o.ClientId = "from-code");

        using var provider = services.BuildServiceProvider();
        var session = provider.GetRequiredService<ITunnelSession>();

        Assert.Multiple(() =>
        {
            Assert.That(services.Count(d => d.ServiceType == typeof(ITunnelSession)), Is.EqualTo(1));
            Assert.That(services.Count(d => d.ServiceType == typeof(IHostedService)), Is.EqualTo(1));
            Assert.That(provider.GetRequiredService<ITunnelSession>(), Is.SameAs(session));
            Assert.That(provider.GetRequiredService<TunnelSession>(), Is.SameAs(session));
            Assert.That(session.State, Is.EqualTo(TunnelSessionState.Connecting), "nothing connects before the host starts");
        });
    }

    [Test]
    [Category("Proxy")]
    [Category("Trust")]
    public void Configuration_BindsTheProxyAndTheTrustedAuthorities()
    {
        var settings = ValidSettings();
        settings["SiteLink:Proxy:Address"] = "http://proxy.corp.example:3128";
        settings["SiteLink:Proxy:UserName"] = "alice";
        settings["SiteLink:Proxy:Password"] = "proxy-secret";
        settings["SiteLink:Proxy:UseEnvironment"] = "false";
        var caFile = Path.GetTempFileName();
        using (var key = System.Security.Cryptography.ECDsa.Create())
        using (var ca = new System.Security.Cryptography.X509Certificates.CertificateRequest("CN=Vendor Root CA", key, System.Security.Cryptography.HashAlgorithmName.SHA256)
            .CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30)))
        {
            File.WriteAllText(caFile, ca.ExportCertificatePem());
        }

        settings["SiteLink:TrustedCertificateAuthorities"] = caFile;
        var services = new ServiceCollection();
        services.AddSingleton(Configuration(settings));
        services.AddSiteLink();

        using var provider = services.BuildServiceProvider();
        TunnelSessionOptions options;
        try
        {
            options = provider.GetRequiredService<IOptions<TunnelSessionOptions>>().Value;
        }
        finally
        {
            File.Delete(caFile);
        }

        Assert.Multiple(() =>
        {
            Assert.That(options.Proxy.Address, Is.EqualTo(new Uri("http://proxy.corp.example:3128")));
            Assert.That(options.Proxy.UserName, Is.EqualTo("alice"));
            Assert.That(options.Proxy.Password, Is.EqualTo("proxy-secret"));
            Assert.That(options.Proxy.UseEnvironment, Is.False);
            Assert.That(options.TrustedCertificateAuthorities, Is.EqualTo(caFile));
        });
    }

    [Test]
    public void Configuration_BindsEverySettingIncludingEndpoints_AndCodeAddsToIt()
    {
        var settings = ValidSettings();
        settings["SiteLink:ClientId"] = "agent-7";
        settings["SiteLink:PinnedCertificateSha256"] = new string('a', 64);
        settings["SiteLink:HeartbeatInterval"] = "00:00:05";
        settings["SiteLink:HeartbeatTolerance"] = "00:00:08";
        settings["SiteLink:DrainTimeout"] = "00:00:12";
        settings["SiteLink:Reconnect:MaxDelay"] = "00:01:00";
        settings["SiteLink:Reconnect:UseJitter"] = "false";
        settings["SiteLink:Metadata:site"] = "plant-3";
        settings["SiteLink:Endpoints:0:Name"] = "postgres";
        settings["SiteLink:Endpoints:0:Upstream"] = "10.0.0.12:5432";
        settings["SiteLink:Endpoints:1:Name"] = "api";
        settings["SiteLink:Endpoints:0:Description"] = "Plant database";
        settings["SiteLink:Endpoints:0:Metadata:engine"] = "postgresql";
        settings["SiteLink:Endpoints:1:Upstream"] = "tcp://[::1]:8080";
        var services = new ServiceCollection();
        services.AddSingleton(Configuration(settings));
        services.AddSiteLink().AddForward("from-code", new Uri("tcp://localhost:9000"), endpoint => endpoint.Metadata["tier"] = "gold");

        using var provider = services.BuildServiceProvider();
        var options = provider.GetRequiredService<IOptions<TunnelSessionOptions>>().Value;

        Assert.Multiple(() =>
        {
            Assert.That(options.RelayUrl, Is.EqualTo(new Uri("https://127.0.0.1:443")));
            Assert.That(options.AuthToken, Is.EqualTo("config-secret-token-value"));
            Assert.That(options.ClientId, Is.EqualTo("agent-7"));
            Assert.That(options.HeartbeatInterval, Is.EqualTo(TimeSpan.FromSeconds(5)));
            Assert.That(options.HeartbeatTolerance, Is.EqualTo(TimeSpan.FromSeconds(8)));
            Assert.That(options.DrainTimeout, Is.EqualTo(TimeSpan.FromSeconds(12)));
            Assert.That(options.Reconnect.MaxDelay, Is.EqualTo(TimeSpan.FromMinutes(1)));
            Assert.That(options.Reconnect.UseJitter, Is.False);
            Assert.That(options.Metadata["site"], Is.EqualTo("plant-3"));
            Assert.That(options.Endpoints.Select(e => $"{e.Name}={e.Upstream}"), Is.EqualTo(new[] { "postgres=10.0.0.12:5432", "api=tcp://[::1]:8080", "from-code=tcp://localhost:9000" }));
            Assert.That(options.Endpoints[0].Description, Is.EqualTo("Plant database"));
            Assert.That(options.Endpoints[0].Metadata, Is.EqualTo(new Dictionary<string, string> { ["engine"] = "postgresql" }));
            Assert.That(options.Endpoints[2].Metadata, Is.EqualTo(new Dictionary<string, string> { ["tier"] = "gold" }));
            Assert.That(options.Validate(), Is.Empty);
        });
    }

    [Test]
    public void InvalidConfiguration_StopsTheHostWithOneErrorListingEveryProblem_WithoutTheSecret()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Configuration.Sources.Clear();
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["SiteLink:RelayUrl"] = "ftp://relay.example",
            ["SiteLink:AuthToken"] = "",
            ["SiteLink:HeartbeatInterval"] = "00:00:10",
            ["SiteLink:HeartbeatTolerance"] = "00:00:10",
            ["SiteLink:Endpoints:0:Name"] = "db",
            ["SiteLink:Endpoints:0:Upstream"] = "db.internal",
            ["SiteLink:Endpoints:1:Name"] = "db",
            ["SiteLink:Endpoints:1:Upstream"] = "db.internal:99999",
            ["SiteLink:Endpoints:2:Name"] = "web",
            ["SiteLink:Endpoints:2:Upstream"] = "http://web.internal:8080",
            ["SiteLink:Endpoints:2:Metadata:bad key"] = "x",
            ["SiteLink:Metadata:note"] = "super-secret-should-not-leak",
        });
        builder.Services.AddSiteLink()
            .AddForward("api", new Uri("tcp://api.internal:8080"))
            .AddConnectionHandler<NoopHandler>("api", endpoint => endpoint.Description = new string('d', 300));
        using var host = builder.Build();

        var ex = Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync().WaitAsync(Limit));

        var expected = new[]
        {
            "RelayUrl 'ftp://relay.example/' must use https://",
            "AuthToken is required",
            "HeartbeatTolerance (00:00:10) must be finite and longer than HeartbeatInterval",
            "Endpoints[0].Upstream 'db.internal' is not tcp://host:port or host:port",
            "Endpoints[1].Name 'db' is declared more than once",
            "Endpoints[1].Upstream 'db.internal:99999'",
            "Endpoint name 'api' (NoopHandler) is declared more than once",
            "Endpoints[2].Upstream 'http://web.internal:8080'",
            "Endpoints[2]: metadata key 'bad key' is not 1 to 64 letters",
            "Endpoint 'api' (NoopHandler): the description is 300 characters (at most 256)",
        };
        Assert.Multiple(() =>
        {
            foreach (var fragment in expected)
            {
                Assert.That(ex!.Failures, Has.Some.Contains(fragment), fragment);
            }

            Assert.That(ex!.Failures.Count(), Is.EqualTo(expected.Length));
            Assert.That(ex.Message, Does.Not.Contain("super-secret"));
        });
    }

    [Test]
    public async Task HostStarts_WhileTheRelayIsUnreachable_SessionKeepsTryingInTheBackground()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Configuration.Sources.Clear();
        var settings = ValidSettings(ClosedPort());
        settings["SiteLink:Reconnect:InitialDelay"] = "00:00:00.050";
        settings["SiteLink:Reconnect:MaxDelay"] = "00:00:00.100";
        settings["SiteLink:ConnectTimeout"] = "00:00:01";
        builder.Configuration.AddInMemoryCollection(settings);
        builder.Services.AddSiteLink();
        using var host = builder.Build();
        var session = host.Services.GetRequiredService<ITunnelSession>();
        var attempts = 0;
        session.ReconnectAttemptFailed += (_, _) => Interlocked.Increment(ref attempts);

        await host.StartAsync().WaitAsync(Limit);
        var deadline = DateTime.UtcNow + Limit;
        while (Volatile.Read(ref attempts) < 3 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
        }

        var stateWhileDown = session.State;
        await host.StopAsync().WaitAsync(Limit);

        Assert.Multiple(() =>
        {
            Assert.That(attempts, Is.GreaterThanOrEqualTo(3), "the session keeps retrying");
            Assert.That(stateWhileDown, Is.EqualTo(TunnelSessionState.Connecting));
            Assert.That(session.State, Is.EqualTo(TunnelSessionState.Closed), "host stop closes the session");
        });
    }
}
