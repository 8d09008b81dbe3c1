using System.Net;
using System.Net.Sockets;
using System.Text;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>
/// Forward endpoints with <see cref="EndpointOptions.ProxyProtocol"/>: real nginx and haproxy behind the agent see the
/// public client's own address and port.
/// </summary>
[TestFixture]
[Category("ProxyProtocol")]
public sealed class ProxyProtocolTests
{
    [TestCase("nginx", ProxyProtocolVersion.V1)]
    [TestCase("nginx", ProxyProtocolVersion.V2)]
    [TestCase("haproxy", ProxyProtocolVersion.V1)]
    [TestCase("haproxy", ProxyProtocolVersion.V2)]
    public async Task TheUpstreamSeesThePublicClientsAddressAndPort(string server, ProxyProtocolVersion version)
    {
        await using var upstream = server == "nginx" ? await ProxyProtocolServer.NginxAsync() : await ProxyProtocolServer.HaproxyAsync();
        await using var relay = await TestRelay.StartAsync(["web"]);
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("web", upstream.Uri, new EndpointOptions { ProxyProtocol = version }).DefaultTimeout();

        using var client = await relay.ConnectClientAsync("web");
        var clientPort = ((IPEndPoint)client.LocalEndPoint!).Port;
        var reading = client.ReadToEndAsync();
        await client.SendAllAsync(Encoding.ASCII.GetBytes("GET / HTTP/1.0\r\nHost: web\r\n\r\n")).DefaultTimeout();
        var response = Encoding.ASCII.GetString(await reading.DefaultTimeout());

        Assert.That(response, Does.StartWith("HTTP/1.").And.Contain($"addr=127.0.0.1 port={clientPort}\n"), $"{server} output:\n{upstream.Output}");
    }

    [Test]
    public async Task WithoutTheOption_TheUpstreamGetsNoHeader_AndAProxyProtocolServerRefusesTheConnection()
    {
        // The header is sent only when asked for: nginx expecting one closes a connection that has none.
        await using var upstream = await ProxyProtocolServer.NginxAsync();
        await using var relay = await TestRelay.StartAsync(["web"]);
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("web", upstream.Uri).DefaultTimeout();

        using var client = await relay.ConnectClientAsync("web");
        var reading = client.ReadToEndAsync();
        await client.SendAllAsync(Encoding.ASCII.GetBytes("GET / HTTP/1.0\r\nHost: web\r\n\r\n")).DefaultTimeout();
        var response = Encoding.ASCII.GetString(await reading.DefaultTimeout());

        Assert.That(response, Does.Not.Contain("addr="));
    }
}
