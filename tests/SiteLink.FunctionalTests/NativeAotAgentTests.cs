using System.Text;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>
/// The SDK compiled ahead of time: samples/AotAgent published with PublishAot (by .ci/run, before the tests; zero trim
/// or AOT warnings, since they are errors) runs as a native executable, reads its options from configuration through the
/// source-generated binder, and serves a connection through the real relay.
/// </summary>
[TestFixture]
[Category("Surface")]
public sealed class NativeAotAgentTests
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(30);

    private static string NativeAgent => Path.Combine(ProcessRunner.RepositoryRoot, "samples/AotAgent/bin", ProcessRunner.Configuration, "net10.0",
        System.Runtime.InteropServices.RuntimeInformation.RuntimeIdentifier, "publish", OperatingSystem.IsWindows() ? "AotAgent.exe" : "AotAgent");

    [Test]
    public async Task ThePublishedNativeAgent_BindsFromConfiguration_AndServesThroughTheRelay()
    {
        if (!File.Exists(NativeAgent))
        {
            RealServers.Missing($"{NativeAgent} is missing: publish it first: dotnet publish samples/AotAgent -c {ProcessRunner.Configuration}");
        }

        await using var relay = await TestRelay.StartAsync(["status"]);
        await using var agent = ProcessRunner.Start(NativeAgent,
        [
            $"--SiteLink:RelayUrl={relay.Server.AgentUrl}",
            $"--SiteLink:PinnedCertificateSha256={relay.Server.CertificateSha256}",
            "--SiteLink:ClientId=native-agent",
            "--SiteLink:HeartbeatInterval=00:00:05",
        ], environment: new Dictionary<string, string> { ["SiteLink__AuthToken"] = TestRelay.AcmeToken });
        await agent.WaitForLineAsync("Endpoint 'status' bound", StartTimeout);

        using var client = await relay.ConnectClientAsync("status");
        var reply = Encoding.UTF8.GetString(await client.ReadToEndAsync().DefaultTimeout());
        var seen = relay.Server.FindEndpoint("acme", "status");
        var exit = await agent.TerminateAsync(StartTimeout);

        Assert.Multiple(() =>
        {
            Assert.That(reply, Does.StartWith("native SiteLink agent, session "));
            Assert.That(seen?.ClientId, Is.EqualTo("native-agent"), "ClientId came from configuration");
            Assert.That(seen?.Description, Is.EqualTo("native agent status"));
            Assert.That(exit, Is.EqualTo(0), "SIGTERM stops the host cleanly; output:\n" + agent.AllOutput);
        });
    }

    [Test]
    public async Task TheHostedAgentSample_ServesAndExitsZeroOnSigterm()
    {
        // It read its session from the disposed host after RunAsync returned, and died with an ObjectDisposedException.
        await using var relay = await TestRelay.StartAsync(["status"]);
        await using var agent = ProcessRunner.Dotnet(ProcessRunner.HostedAgentDll,
        [
            $"--SiteLink:RelayUrl={relay.Server.AgentUrl}",
            $"--SiteLink:PinnedCertificateSha256={relay.Server.CertificateSha256}",
        ], environment: new Dictionary<string, string> { ["SiteLink__AuthToken"] = TestRelay.AcmeToken });
        await agent.WaitForLineAsync("Endpoint 'status' bound", StartTimeout);

        using var client = await relay.ConnectClientAsync("status");
        var reply = await client.ReadToEndAsync().DefaultTimeout();
        var exit = await agent.TerminateAsync(StartTimeout);

        Assert.Multiple(() =>
        {
            Assert.That(reply, Is.Not.Empty, "the status handler answered");
            Assert.That(exit, Is.EqualTo(0), "SIGTERM stops the host cleanly; output:\n" + agent.AllOutput);
        });
    }
}
