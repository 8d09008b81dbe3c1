using System.Net.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SiteLink.ConsoleAgent;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>The standalone agent (samples/ConsoleAgent), configured only by its command line, against the real relay.</summary>
[TestFixture]
public sealed class ConsoleAgentTests
{
    [Test]
    public async Task CommandLine_ServesALocalServiceThroughTheRelay()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var upstream = TestUpstream.Echo();
        var builder = AgentHost.CreateBuilder(
        [
            "--relay", relay.Server.AgentUrl.ToString(),
            "--token", TestRelay.AcmeToken,
            "--pin", relay.Server.CertificateSha256!,
            "--endpoint", $"echo=127.0.0.1:{upstream.Port}",
        ]);
        builder.Logging.ClearProviders();
        relay.Logs.AddTo(builder.Logging);
        using var host = builder.Build();
        var session = host.Services.GetRequiredService<ITunnelSession>();

        await host.StartAsync().DefaultTimeout();
        await Eventually.WaitUntilAsync(() => session.Endpoints.Any(e => e.Name == "echo"), "echo bound");
        var payload = SocketTestExtensions.RandomBytes(200_000);
        using var client = await relay.ConnectClientAsync("echo");
        var receiving = client.ReadToEndAsync();
        await client.SendAllAsync(payload).DefaultTimeout();
        client.Shutdown(SocketShutdown.Send);
        var echoed = await receiving.DefaultTimeout();
        await host.StopAsync().DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(echoed, Is.EqualTo(payload));
            Assert.That(session.Endpoints.Count, Is.Zero);
            Assert.That(relay.Logs.Entries.Any(e => e.Message.Contains(TestRelay.AcmeToken, StringComparison.Ordinal)), Is.False, "the token is never logged");
        });
    }

    [TestCase("--endpoint", "db")]
    [TestCase("--endpoint", "=127.0.0.1:5432")]
    [TestCase("--relay")]
    [TestCase("--token", "--relay")]
    public void MalformedCommandLine_IsRefusedWithAClearError(params string[] args)
    {
        var ex = Assert.Throws<ArgumentException>(() => AgentHost.ParseArguments(args));

        Assert.That(ex!.Message, Does.StartWith("--"));
    }

    [Test]
    public void EndpointsFromTheCommandLine_AddToThoseOfTheFiles()
    {
        var (settings, remaining) = AgentHost.ParseArguments(["--endpoint", "db=10.0.0.5:5432", "--endpoint", "web=[::1]:80", "--Logging:LogLevel:Default", "Debug"]);

        Assert.Multiple(() =>
        {
            Assert.That(settings["SiteLink:Endpoints:100:Name"], Is.EqualTo("db"));
            Assert.That(settings["SiteLink:Endpoints:100:Upstream"], Is.EqualTo("10.0.0.5:5432"));
            Assert.That(settings["SiteLink:Endpoints:101:Upstream"], Is.EqualTo("[::1]:80"));
            Assert.That(remaining, Is.EqualTo(new[] { "--Logging:LogLevel:Default", "Debug" }));
        });
    }
}
