using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>AddSiteLink().AddHealthCheck(): what a readiness probe sees in each state of the session.</summary>
[TestFixture]
[Category("Surface")]
public sealed class HealthCheckTests
{
    [Test]
    public async Task Connected_IsHealthy_Reconnecting_IsDegraded()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var proxy = new FaultProxy(new IPEndPoint(IPAddress.Loopback, relay.Server.AgentUrl.Port));
        using var host = Build(relay, o =>
        {
            o.RelayUrl = new Uri($"https://127.0.0.1:{proxy.Port}");
            o.HeartbeatInterval = TimeSpan.FromMilliseconds(300);
            o.HeartbeatTolerance = TimeSpan.FromMilliseconds(450);
            o.ConnectTimeout = TimeSpan.FromSeconds(1);
        });
        var session = host.Services.GetRequiredService<ITunnelSession>();
        var health = host.Services.GetRequiredService<HealthCheckService>();
        await host.StartAsync().DefaultTimeout();
        await Eventually.WaitUntilAsync(() => session.State == TunnelSessionState.Connected, "connected");

        var connected = await health.CheckHealthAsync().DefaultTimeout();
        proxy.BlackHole();
        await Eventually.WaitUntilAsync(() => session.State == TunnelSessionState.Reconnecting, "reconnecting");
        var reconnecting = await health.CheckHealthAsync().DefaultTimeout();
        await host.StopAsync().DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(connected.Status, Is.EqualTo(HealthStatus.Healthy));
            Assert.That(connected.Entries["sitelink"].Data["relay"], Is.EqualTo("test-relay"));
            Assert.That(reconnecting.Status, Is.EqualTo(HealthStatus.Degraded));
            Assert.That(reconnecting.Entries["sitelink"].Description, Does.Contain("reconnecting"));
        });
    }

    [Test]
    public async Task Faulted_IsUnhealthy_WithTheReason()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);
        using var host = Build(relay, o => o.AuthToken = "not-the-token-0123456789abcdef");
        var session = host.Services.GetRequiredService<ITunnelSession>();
        var health = host.Services.GetRequiredService<HealthCheckService>();
        await host.StartAsync().DefaultTimeout();
        await Eventually.WaitUntilAsync(() => session.State == TunnelSessionState.Faulted, "faulted");

        var report = await health.CheckHealthAsync().DefaultTimeout();
        await host.StopAsync().DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(report.Status, Is.EqualTo(HealthStatus.Unhealthy));
            Assert.That(report.Entries["sitelink"].Description, Does.Contain("AuthenticationFailed"));
            Assert.That(report.Entries["sitelink"].Exception, Is.InstanceOf<TunnelAuthenticationException>());
            Assert.That(report.Entries["sitelink"].Description, Does.Not.Contain("not-the-token"), "never the token");
        });
    }

    private static IHost Build(TestRelay relay, Action<TunnelSessionOptions> configure)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSiteLink(o =>
        {
            o.RelayUrl = relay.Server.AgentUrl;
            o.AuthToken = TestRelay.AcmeToken;
            o.PinnedCertificateSha256 = relay.Server.CertificateSha256;
            configure(o);
        }).AddHealthCheck();
        return builder.Build();
    }
}
