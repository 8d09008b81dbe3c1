using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Logging;
using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Protocol.V1;

namespace SiteLink.FunctionalTests;

/// <summary>
/// The SDK against a relay that misbehaves (a scripted one): it cannot make the agent open unlimited connections,
/// grow its memory, flood its metrics or forge its logs.
/// </summary>
[TestFixture]
[Category("Hostile")]
public sealed class HostileRelayTests
{
    /// <summary>Connects an agent to the scripted relay and binds "db" to <paramref name="upstreamPort"/>; returns the session and the bind id.</summary>
    private static async Task<(ITunnelSession Session, string BindId)> ConnectAsync(ScriptedRelay relay, int upstreamPort, TestLogSink logs, Action<TunnelSessionOptions>? configure = null)
    {
        var options = new TunnelSessionOptions { RelayUrl = relay.Url, AuthToken = "scripted-token", AllowInsecureTransport = true, LoggerFactory = logs.CreateFactory() };
        configure?.Invoke(options);
        var connecting = TunnelSession.ConnectAsync(options);
        await relay.Control.NextAsync(AgentMessage.KindOneofCase.Hello);
        await relay.Control.ToAgent.Writer.WriteAsync(new RelayMessage { Welcome = new Welcome { SessionId = "s1", RelayId = "scripted", ProtocolVersion = 1 } });
        var session = await connecting.DefaultTimeout();
        var binding = session.ForwardAsync("db", Loopback.Tcp(upstreamPort));
        var bind = (await relay.Control.NextAsync(AgentMessage.KindOneofCase.Bind)).Bind;
        await relay.Control.ToAgent.Writer.WriteAsync(new RelayMessage { BindResult = new BindResult { BindId = bind.BindId, Status = BindStatus.Ok } });
        await binding.DefaultTimeout();
        return (session, bind.BindId);
    }

    [Test]
    public async Task RelayFloodingOffers_CannotMakeTheAgentOpenMoreConnectionsThanItsCap()
    {
        await using var relay = await ScriptedRelay.StartAsync();
        await using var upstream = TestUpstream.Echo();
        var logs = new TestLogSink();
        var (session, bindId) = await ConnectAsync(relay, upstream.Port, logs, o => o.MaxConcurrentConnectionsPerEndpoint = 20);
        await using (session)
        {
            for (var i = 0; i < 300; i++)
            {
                await relay.Control.ToAgent.Writer.WriteAsync(new RelayMessage { OpenStream = new OpenStream { StreamId = $"x{i}", BindId = bindId, EndpointName = "db" } });
            }

            var refusals = new List<StreamRefused>();
            while (refusals.Count < 280)
            {
                refusals.Add((await relay.Control.NextAsync(AgentMessage.KindOneofCase.StreamRefused)).StreamRefused);
            }

            await Eventually.WaitUntilAsync(() => upstream.Accepted == 20, "20 served");

            Assert.Multiple(() =>
            {
                Assert.That(refusals.Select(r => r.Reason), Has.All.EqualTo(StreamRefusal.Overloaded));
                Assert.That(refusals[0].Message, Does.Contain("MaxConcurrentConnectionsPerEndpoint"));
                Assert.That(upstream.Accepted, Is.EqualTo(20), "the relay asked for 300; the agent opened its cap");
            });
            foreach (var held in Drain(relay.Control.Parked.Reader))
            {
                held.Done.TrySetResult();
            }
        }
    }

    [Test]
    public async Task RelayText_IsCappedAndCleaned_BeforeLogsAndExceptions()
    {
        await using var relay = await ScriptedRelay.StartAsync();
        await using var upstream = TestUpstream.Echo();
        var logs = new TestLogSink();
        var (session, _) = await ConnectAsync(relay, upstream.Port, logs);
        await using (session)
        {
            var forged = "bad\r\n2026-01-01 [Critical] forged line\u001b[2J" + new string('x', 100_000);
            await relay.Control.ToAgent.Writer.WriteAsync(new RelayMessage { Error = new Error { Code = ErrorCode.Protocol, Message = forged } });
            var refusing = session.ForwardAsync("other", upstream.Uri);
            var bind = (await relay.Control.NextAsync(AgentMessage.KindOneofCase.Bind)).Bind;
            await relay.Control.ToAgent.Writer.WriteAsync(new RelayMessage { BindResult = new BindResult { BindId = bind.BindId, Status = BindStatus.Denied, Message = forged } });
            var refused = Assert.ThrowsAsync<TunnelBindException>(() => refusing.DefaultTimeout());
            await Eventually.WaitUntilAsync(() => logs.Entries.Any(e => e.EventId.Id == 30), "the relay's error logged");

            var fromRelay = logs.Entries.Where(e => e.Message.Contains("bad", StringComparison.Ordinal)).ToArray();
            Assert.Multiple(() =>
            {
                Assert.That(fromRelay, Is.Not.Empty);
                Assert.That(fromRelay.Select(e => e.Message), Has.All.Length.LessThan(600), "capped");
                Assert.That(fromRelay.Count(e => e.Message.Any(char.IsControl)), Is.Zero, "no forged lines (CR, LF), no terminal escapes");
                Assert.That(refused!.Message, Has.Length.LessThan(600));
                Assert.That(refused.Message.Any(char.IsControl), Is.False);
            });
        }
    }

    [Test]
    public async Task RelayNamingEndpointsItMadeUp_CannotGrowTheMetricsSeries()
    {
        await using var relay = await ScriptedRelay.StartAsync();
        await using var upstream = TestUpstream.Echo();
        var logs = new TestLogSink();
        using var services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var meters = services.GetRequiredService<IMeterFactory>();
        using var connections = new MetricCollector<long>(meters, "SiteLink.Sdk", "sitelink.connections");
        var (session, _) = await ConnectAsync(relay, upstream.Port, logs, o => o.MeterFactory = meters);
        await using (session)
        {
            for (var i = 0; i < 200; i++)
            {
                await relay.Control.ToAgent.Writer.WriteAsync(new RelayMessage
                {
                    OpenStream = new OpenStream { StreamId = $"y{i}", BindId = $"b-made-up-{i}", EndpointName = $"made-up-{Guid.NewGuid():N}" },
                });
            }

            for (var i = 0; i < 200; i++)
            {
                await relay.Control.NextAsync(AgentMessage.KindOneofCase.StreamRefused);
            }

            await Eventually.WaitUntilAsync(() => connections.GetMeasurementSnapshot().Count == 200, "200 refusals measured");
            var endpoints = connections.GetMeasurementSnapshot().Select(m => m.Tags["sitelink.endpoint"]).Distinct().ToArray();

            Assert.That(endpoints, Is.EqualTo(new object?[] { "(unknown)" }), "one series, whatever names the relay sends");
        }
    }

    [Test]
    public async Task OfferWithOversizedIds_IsIgnored_NotEchoed()
    {
        await using var relay = await ScriptedRelay.StartAsync();
        await using var upstream = TestUpstream.Echo();
        var logs = new TestLogSink();
        var (session, bindId) = await ConnectAsync(relay, upstream.Port, logs);
        await using (session)
        {
            await relay.Control.ToAgent.Writer.WriteAsync(new RelayMessage { OpenStream = new OpenStream { StreamId = new string('z', 100_000), BindId = bindId, EndpointName = "db" } });
            await relay.Control.ToAgent.Writer.WriteAsync(new RelayMessage { OpenStream = new OpenStream { StreamId = "ok-1", BindId = "b-unknown", EndpointName = "db" } });

            var next = (await relay.Control.NextAsync(AgentMessage.KindOneofCase.StreamRefused)).StreamRefused;
            await Eventually.WaitUntilAsync(() => logs.Entries.Any(e => e.EventId.Id == 28), "logged as malformed (offers are served concurrently)");

            Assert.Multiple(() =>
            {
                Assert.That(next.StreamId, Is.EqualTo("ok-1"), "the oversized offer got no answer; the next one did");
                Assert.That(upstream.Accepted, Is.Zero);
            });
        }
    }

    [Test]
    public async Task RelayThatStopsReadingTheControlStream_IsLeft_AndTheAgentReconnects()
    {
        await using var relay = await ScriptedRelay.StartAsync();
        await using var upstream = TestUpstream.Echo();
        var logs = new TestLogSink();
        var (session, _) = await ConnectAsync(relay, upstream.Port, logs);
        await using (session)
        {
            var states = new StateRecorder(session);
            relay.Control.Reading = false;

            // Every heartbeat asks for an answer the relay will not read: the agent's queue fills and it gives up.
            for (ulong i = 0; i < 400_000 && session.State == TunnelSessionState.Connected; i++)
            {
                await relay.Control.ToAgent.Writer.WriteAsync(new RelayMessage { Heartbeat = new Heartbeat { Sequence = i } });
                if (i % 1000 == 0)
                {
                    await Task.Yield();
                }
            }

            await Eventually.WaitUntilAsync(() => states.States.Any(s => s.State == TunnelSessionState.Reconnecting), "the agent left the connection");

            Assert.Multiple(() =>
            {
                Assert.That(states.States.First(s => s.State == TunnelSessionState.Reconnecting).Reason, Does.Contain("did not read the control stream"));
                Assert.That(logs.Entries.Any(e => e.Level == LogLevel.Warning && e.Message.Contains("did not read the control stream", StringComparison.Ordinal)), Is.True,
                    "the reason is logged");
            });
        }
    }

    private static IEnumerable<ParkedCall> Drain(System.Threading.Channels.ChannelReader<ParkedCall> reader)
    {
        while (reader.TryRead(out var call))
        {
            yield return call;
        }
    }
}
