using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Protocol.V1;

namespace SiteLink.FunctionalTests;

/// <summary>
/// One way to declare an endpoint (Forward / Listen / BindHandler with <see cref="EndpointOptions"/>), the same
/// options from configuration, and the relay's view of what was declared.
/// </summary>
[TestFixture]
[Category("Surface")]
public sealed class EndpointOptionsTests
{
    [Test]
    public async Task Forward_WithDescriptionAndMetadata_TheRelayKeepsWhatWasDeclared_AndBytesFlow()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync();
        var options = new EndpointOptions { Description = "Billing database, site 3", Metadata = { ["site"] = "plant-3", ["engine"] = "postgresql" } };

        var endpoint = await session.ForwardAsync("echo", upstream.Uri, options).DefaultTimeout();
        // The session copied the options: changing them now changes nothing.
        options.Description = "changed";
        options.Metadata["site"] = "changed";

        var seen = relay.Server.FindEndpoint("acme", "echo");
        const int size = 4 * 1024 * 1024;
        var payload = SocketTestExtensions.RandomBytes(size);
        using var client = await relay.ConnectClientAsync("echo");
        var receiving = client.HashToEndAsync();
        await client.SendAllAsync(payload).DefaultTimeout();
        client.Shutdown(SocketShutdown.Send);
        var (hash, length) = await receiving.DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(endpoint.Kind, Is.EqualTo(TunnelEndpointKind.Forward));
            Assert.That(endpoint.Upstream, Is.EqualTo(upstream.Uri));
            Assert.That(endpoint.Description, Is.EqualTo("Billing database, site 3"));
            Assert.That(endpoint.Metadata, Is.EquivalentTo(new Dictionary<string, string> { ["site"] = "plant-3", ["engine"] = "postgresql" }));
            Assert.That(seen, Is.Not.Null, "the relay does not know the endpoint");
            Assert.That(seen!.SessionId, Is.EqualTo(session.SessionId));
            Assert.That(seen.ClientId, Is.EqualTo("test-agent"));
            Assert.That(seen.Description, Is.EqualTo("Billing database, site 3"));
            Assert.That(seen.Metadata, Is.EquivalentTo(new Dictionary<string, string> { ["site"] = "plant-3", ["engine"] = "postgresql" }));
            Assert.That(length, Is.EqualTo(size));
            Assert.That(hash, Is.EqualTo(SHA256.HashData(payload)));
        });
    }

    [Test]
    public async Task ListenAndHandler_CarryTheirOptionsToo_AndEndpointsWithoutOptionsReportNone()
    {
        await using var relay = await TestRelay.StartAsync(["inbox", "status", "plain"]);
        var session = await relay.ConnectAgentAsync();

        var listener = await session.ListenAsync("inbox", new EndpointOptions { Description = "Job inbox" }).DefaultTimeout();
        var handler = await session.BindHandlerAsync("status", (_, _) => Task.CompletedTask, new EndpointOptions { Metadata = { ["version"] = "2.4.1" } }).DefaultTimeout();
        var plain = await session.ListenAsync("plain").DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(listener.Kind, Is.EqualTo(TunnelEndpointKind.Listener));
            Assert.That(listener.Upstream, Is.Null);
            Assert.That(relay.Server.FindEndpoint("acme", "inbox")?.Description, Is.EqualTo("Job inbox"));
            Assert.That(handler.Kind, Is.EqualTo(TunnelEndpointKind.Handler));
            Assert.That(relay.Server.FindEndpoint("acme", "status")?.Metadata["version"], Is.EqualTo("2.4.1"));
            Assert.That(plain.Description, Is.Null);
            Assert.That(plain.Metadata, Is.Empty);
            Assert.That(relay.Server.FindEndpoint("acme", "plain")?.Description, Is.Null);
            Assert.That(relay.Server.FindEndpoint("acme", "plain")?.Metadata, Is.Empty);
        });
    }

    [Test]
    public async Task ConfiguredEndpoint_IsBoundWithItsOptions_AndAgainWithThemAfterAReconnect()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var upstream = TestUpstream.Echo();
        await using var proxy = new FaultProxy(new IPEndPoint(IPAddress.Loopback, relay.Server.AgentUrl.Port));
        var options = relay.AgentOptions();
        options.RelayUrl = new Uri($"https://127.0.0.1:{proxy.Port}");
        options.Reconnect.InitialDelay = TimeSpan.FromMilliseconds(50);
        var declared = new ForwardEndpointOptions { Name = "echo", Upstream = $"tcp://127.0.0.1:{upstream.Port}", Description = "Echo" };
        declared.Metadata["tier"] = "gold";
        options.Endpoints.Add(declared);
        await using var session = await TunnelSession.ConnectAsync(options).DefaultTimeout();
        var endpoint = session.Endpoints.Single();
        var before = relay.Server.FindEndpoint("acme", "echo");

        // A reconnect binds it again, on a new relay session: with the same description and metadata.
        proxy.ResetAll();
        await Eventually.WaitUntilAsync(() => relay.Server.FindEndpoint("acme", "echo") is { } now && now.SessionId != before!.SessionId, "bound again on a new session");
        var after = relay.Server.FindEndpoint("acme", "echo")!;

        Assert.Multiple(() =>
        {
            Assert.That(endpoint.Upstream, Is.EqualTo(new Uri($"tcp://127.0.0.1:{upstream.Port}")));
            Assert.That(before?.Description, Is.EqualTo("Echo"));
            Assert.That(before?.Metadata["tier"], Is.EqualTo("gold"));
            Assert.That(after.Description, Is.EqualTo("Echo"));
            Assert.That(after.Metadata["tier"], Is.EqualTo("gold"));
        });
    }

    [TestCase("http://127.0.0.1:8080", "'http' upstreams are not supported")]
    [TestCase("tcp://127.0.0.1", "needs a host and a port")]
    [TestCase("tcp://127.0.0.1:5432/db", "has more than a host and a port")]
    [TestCase("tcp://user:secret@127.0.0.1:5432", "carries no user information")]
    public async Task Forward_RefusesAnUpstreamItCannotConnectTo_BeforeAskingTheRelay(string upstream, string reason)
    {
        await using var relay = await TestRelay.StartAsync(["db"]);
        var session = await relay.ConnectAgentAsync();

        var ex = Assert.ThrowsAsync<ArgumentException>(() => session.ForwardAsync("db", new Uri(upstream)).DefaultTimeout());

        Assert.Multiple(() =>
        {
            Assert.That(ex!.Message, Does.Contain(reason).And.Contain("tcp://host:port"));
            Assert.That(ex.Message, Does.Not.Contain("secret"), "credentials in a URI are not echoed");
            Assert.That(relay.Server.FindEndpoint("acme", "db"), Is.Null, "nothing was bound");
            Assert.That(session.Endpoints, Is.Empty);
        });
    }

    [Test]
    public async Task OptionsPastTheirLimits_AreRefusedByTheSdk_WithTheLimitNamed()
    {
        await using var relay = await TestRelay.StartAsync(["db"]);
        var session = await relay.ConnectAgentAsync();
        var tooMany = new EndpointOptions();
        for (var i = 0; i <= EndpointOptions.MaxMetadataEntries; i++)
        {
            tooMany.Metadata[$"k{i}"] = "v";
        }

        var many = Assert.ThrowsAsync<ArgumentException>(() => session.ListenAsync("db", tooMany).DefaultTimeout());
        var longText = Assert.ThrowsAsync<ArgumentException>(() => session.ListenAsync("db", new EndpointOptions { Description = new string('x', EndpointOptions.MaxDescriptionLength + 1) }).DefaultTimeout());
        var control = Assert.ThrowsAsync<ArgumentException>(() => session.ListenAsync("db", new EndpointOptions { Metadata = { ["note"] = "line\r\nforged" } }).DefaultTimeout());
        var loneSurrogate = Assert.ThrowsAsync<ArgumentException>(() => session.ListenAsync("db", new EndpointOptions { Description = "half \ud83d pair" }).DefaultTimeout());
        var within = await session.ListenAsync("db", new EndpointOptions { Description = new string('x', EndpointOptions.MaxDescriptionLength - 2) + "\ud83d\ude80" }).DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(many!.Message, Does.Contain("more than 16 metadata entries"));
            Assert.That(longText!.Message, Does.Contain("257 characters (at most 256)"));
            Assert.That(control!.Message, Does.Contain("control or formatting characters"));
            Assert.That(loneSurrogate!.Message, Does.Contain("control or formatting characters"));
            Assert.That(within.IsBound, Is.True, "the limit itself is allowed, a surrogate pair too");
        });
    }

    [Test]
    public async Task RelayRefusesABindPastTheLimits_FromAnAgentThatSkipsTheSdksChecks_AndKeepsServingIt()
    {
        await using var relay = await TestRelay.StartAsync(["db"]);
        using var agent = new RawAgent(relay);
        var (call, _) = await agent.HandshakeAsync();
        using var _ = call;

        async Task<BindResult> BindAsync(string bindId, Action<Bind> shape)
        {
            var bind = new Bind { BindId = bindId, Name = "db", Kind = EndpointKind.Tcp };
            shape(bind);
            await call.RequestStream.WriteAsync(new AgentMessage { Bind = bind }).DefaultTimeout();
            return (await RawAgent.NextAsync(call, RelayMessage.KindOneofCase.BindResult)).BindResult;
        }

        var tooMany = await BindAsync("b1", b =>
        {
            for (var i = 0; i < 100; i++)
            {
                b.Metadata[$"k{i}"] = new string('v', 200);
            }
        });
        var longDescription = await BindAsync("b2", b => b.Description = new string('d', 10_000));
        var forged = await BindAsync("b3", b => b.Description = "db\n2026-11-27 INFO forged line");
        var badKey = await BindAsync("b4", b => b.Metadata["\u001b[31mred"] = "x");
        var good = await BindAsync("b5", b => b.Description = "fine");

        Assert.Multiple(() =>
        {
            Assert.That(tooMany.Status, Is.EqualTo(BindStatus.Invalid));
            Assert.That(tooMany.Message, Does.Contain("more than 16 metadata entries"));
            Assert.That(longDescription.Status, Is.EqualTo(BindStatus.Invalid));
            Assert.That(longDescription.Message, Does.Contain("10000 characters (at most 256)"));
            Assert.That(forged.Status, Is.EqualTo(BindStatus.Invalid));
            Assert.That(badKey.Status, Is.EqualTo(BindStatus.Invalid));
            Assert.That(badKey.Message.Contains('\u001b', StringComparison.Ordinal), Is.False, "the refusal does not echo control characters");
            Assert.That(badKey.Message, Does.Contain("metadata key '?[31mred' is not 1 to 64 letters"));
            Assert.That(good.Status, Is.EqualTo(BindStatus.Ok), "the same control stream still binds");
            Assert.That(relay.Server.FindEndpoint("acme", "db")?.Description, Is.EqualTo("fine"));
            Assert.That(relay.Logs.Entries.Select(e => e.Message), Has.None.Contains("forged line"), "a refused description is not logged");
        });
    }
}
