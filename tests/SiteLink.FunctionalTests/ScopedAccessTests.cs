using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Protocol.V1;

namespace SiteLink.FunctionalTests;

/// <summary>C3: the agent forwards only to what its own code bound, whatever the relay asks.</summary>
[TestFixture]
public sealed class ScopedAccessTests
{
    [Test]
    public async Task RelayAsksForUnknownBindOrMismatchedName_AgentRefusesAndNeverConnects()
    {
        await using var relay = await ScriptedRelay.StartAsync();
        await using var upstream = TestUpstream.Echo();
        var options = new TunnelSessionOptions { RelayUrl = relay.Url, AuthToken = "scripted-token", AllowInsecureTransport = true };
        var connecting = TunnelSession.ConnectAsync(options);
        await relay.Control.NextAsync(AgentMessage.KindOneofCase.Hello);
        await relay.Control.ToAgent.Writer.WriteAsync(new RelayMessage { Welcome = new Welcome { SessionId = "s1", RelayId = "scripted", ProtocolVersion = 1 } });
        await using var session = await connecting.DefaultTimeout();

        var binding = session.ForwardAsync("db", upstream.Uri);
        var bind = (await relay.Control.NextAsync(AgentMessage.KindOneofCase.Bind)).Bind;
        await relay.Control.ToAgent.Writer.WriteAsync(new RelayMessage { BindResult = new BindResult { BindId = bind.BindId, Status = BindStatus.Ok } });
        await binding.DefaultTimeout();

        await relay.Control.ToAgent.Writer.WriteAsync(new RelayMessage { OpenStream = new OpenStream { StreamId = "x1", BindId = "b-not-bound", EndpointName = "db" } });
        var unknown = (await relay.Control.NextAsync(AgentMessage.KindOneofCase.StreamRefused)).StreamRefused;
        await relay.Control.ToAgent.Writer.WriteAsync(new RelayMessage { OpenStream = new OpenStream { StreamId = "x2", BindId = bind.BindId, EndpointName = "admin" } });
        var mismatched = (await relay.Control.NextAsync(AgentMessage.KindOneofCase.StreamRefused)).StreamRefused;

        Assert.Multiple(() =>
        {
            Assert.That(unknown.StreamId, Is.EqualTo("x1"));
            Assert.That(unknown.Reason, Is.EqualTo(StreamRefusal.UnknownEndpoint));
            Assert.That(mismatched.StreamId, Is.EqualTo("x2"));
            Assert.That(mismatched.Reason, Is.EqualTo(StreamRefusal.UnknownEndpoint));
            Assert.That(upstream.Accepted, Is.Zero, "the agent never dialled anything for a request it did not bind");
        });
    }

    [Test]
    public async Task ParkedStreamOpenedForAnUnknownBind_AgentRefusesAndNeverConnects()
    {
        await using var relay = await ScriptedRelay.StartAsync();
        await using var upstream = TestUpstream.Echo();
        var options = new TunnelSessionOptions { RelayUrl = relay.Url, AuthToken = "scripted-token", AllowInsecureTransport = true, ParkedStreams = 2 };
        var connecting = TunnelSession.ConnectAsync(options);
        await relay.Control.NextAsync(AgentMessage.KindOneofCase.Hello);
        await relay.Control.ToAgent.Writer.WriteAsync(new RelayMessage
        {
            Welcome = new Welcome { SessionId = "s1", RelayId = "scripted", ProtocolVersion = 1, Limits = new Limits { MaxParkedStreams = 2, MaxFrameSize = 65536 } },
        });
        await using var session = await connecting.DefaultTimeout();
        var binding = session.ForwardAsync("db", upstream.Uri);
        var bind = (await relay.Control.NextAsync(AgentMessage.KindOneofCase.Bind)).Bind;
        await relay.Control.ToAgent.Writer.WriteAsync(new RelayMessage { BindResult = new BindResult { BindId = bind.BindId, Status = BindStatus.Ok } });
        await binding.DefaultTimeout();
        var parked = await relay.Control.Parked.Reader.ReadAsync().AsTask().DefaultTimeout();

        await parked.ToAgent.WriteAsync(new StreamFrame { Open = new OpenStream { StreamId = "p1", BindId = "b-not-bound", EndpointName = "db", ClientAddress = "203.0.113.9:4000" } }).DefaultTimeout();
        var refused = (await relay.Control.NextAsync(AgentMessage.KindOneofCase.StreamRefused)).StreamRefused;
        parked.Done.TrySetResult();

        Assert.Multiple(() =>
        {
            Assert.That(refused.StreamId, Is.EqualTo("p1"));
            Assert.That(refused.Reason, Is.EqualTo(StreamRefusal.UnknownEndpoint));
            Assert.That(upstream.Accepted, Is.Zero, "the agent never dialled anything for a request it did not bind");
        });
    }
}
