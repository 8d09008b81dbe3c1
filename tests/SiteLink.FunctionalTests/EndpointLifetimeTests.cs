using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Protocol.V1;

namespace SiteLink.FunctionalTests;

/// <summary>An endpoint's end: unbinding waits until the relay confirms the route is gone.</summary>
[TestFixture]
[Category("Surface")]
public sealed class EndpointLifetimeTests
{
    [Test]
    public async Task Unbinding_WaitsForTheRelaysConfirmation()
    {
        await using var relay = await ScriptedRelay.StartAsync();
        var options = new TunnelSessionOptions { RelayUrl = relay.Url, AuthToken = "scripted-token", AllowInsecureTransport = true };
        var connecting = TunnelSession.ConnectAsync(options);
        await relay.Control.NextAsync(AgentMessage.KindOneofCase.Hello);
        await relay.Control.ToAgent.Writer.WriteAsync(new RelayMessage { Welcome = new Welcome { SessionId = "s1", RelayId = "scripted", ProtocolVersion = 1 } });
        await using var session = await connecting.DefaultTimeout();
        var binding = session.BindHandlerAsync("db", (_, _) => Task.CompletedTask);
        var bind = (await relay.Control.NextAsync(AgentMessage.KindOneofCase.Bind)).Bind;
        await relay.Control.ToAgent.Writer.WriteAsync(new RelayMessage { BindResult = new BindResult { BindId = bind.BindId, Status = BindStatus.Ok } });
        var endpoint = await binding.DefaultTimeout();

        var unbinding = endpoint.DisposeAsync().AsTask();
        var unbind = (await relay.Control.NextAsync(AgentMessage.KindOneofCase.Unbind)).Unbind;
        var beforeConfirmation = unbinding.IsCompleted;
        await relay.Control.ToAgent.Writer.WriteAsync(new RelayMessage { UnbindResult = new UnbindResult { BindId = unbind.BindId, Found = true } });
        await unbinding.DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(unbind.BindId, Is.EqualTo(bind.BindId));
            Assert.That(beforeConfirmation, Is.False, "the unbind is not over until the relay says the route is gone");
            Assert.That(session.Endpoints, Is.Empty);
            Assert.That(endpoint.Completion.IsCompletedSuccessfully, Is.True, "unbound by the application: completed");
        });
    }

    [Test]
    public async Task Completion_EndsWithTheSession_FaultedWithItsFault()
    {
        await using var relay = await TestRelay.StartAsync(["a", "b"]);
        var closing = await relay.ConnectAgentAsync();
        var closed = await closing.BindHandlerAsync("a", (_, _) => Task.CompletedTask).DefaultTimeout();
        var revoked = await relay.ConnectAgentAsync(TestRelay.GlobexToken);
        var faulted = await revoked.BindHandlerAsync("b", (_, _) => Task.CompletedTask).DefaultTimeout();
        Assert.That(closed.Completion.IsCompleted || faulted.Completion.IsCompleted, Is.False, "bound endpoints are not over");

        await closing.CloseAsync().DefaultTimeout();
        relay.Server.RevokeToken("globex");
        await closed.Completion.DefaultTimeout();
        var ex = Assert.ThrowsAsync<TunnelAuthenticationException>(async () => await faulted.Completion.DefaultTimeout());

        Assert.Multiple(() =>
        {
            Assert.That(closed.Completion.IsCompletedSuccessfully, Is.True, "the session was closed: completed");
            Assert.That(ex!.TunnelError, Is.EqualTo(TunnelError.AuthenticationFailed), "the session's fault ends the endpoint with it");
        });
    }

    [Test]
    public async Task APipeHandler_ReadsToTheClientsEnd_AndCompletingOutputHalfCloses()
    {
        await using var relay = await TestRelay.StartAsync(["pipe"]);
        await using var session = await relay.ConnectAgentAsync();
        await session.BindHandlerAsync("pipe", async (connection, ct) =>
        {
            var transport = connection.Transport;
            while (true)
            {
                var result = await transport.Input.ReadAsync(ct);
                foreach (var segment in result.Buffer)
                {
                    await transport.Output.WriteAsync(segment, ct);
                }

                transport.Input.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted)
                {
                    break;
                }
            }

            await transport.Input.CompleteAsync();
            await transport.Output.CompleteAsync();
        }).DefaultTimeout();

        var payload = SocketTestExtensions.RandomBytes(2 * 1024 * 1024);
        using var client = await relay.ConnectClientAsync("pipe");
        var receiving = client.ReadToEndAsync();
        await client.SendAllAsync(payload).DefaultTimeout();
        client.Shutdown(System.Net.Sockets.SocketShutdown.Send);
        var echoed = await receiving.DefaultTimeout();

        Assert.That(System.Security.Cryptography.SHA256.HashData(echoed), Is.EqualTo(System.Security.Cryptography.SHA256.HashData(payload)),
            "2 MiB through IDuplexPipe both ways, and the end of the stream after the output completed");
    }
}
