using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>
/// Work the session starts and nobody awaits (serving an offer, a parked stream, a refusal, a background close) must
/// end every path it started even when something unexpected throws: the offer answered, the connection's place given
/// back, nothing counted for ever. The trigger is deterministic: a logging provider that throws at a chosen event, as
/// a broken sink does (Microsoft.Extensions.Logging rethrows a provider's exception to the caller).
/// </summary>
[TestFixture]
[Category("Lifecycle")]
public sealed class BackgroundFailureTests
{
    /// <summary>SessionLog.ConnectionOpened: logged after the offer took its places in the limits, before serving.</summary>
    private const int ConnectionOpenedEvent = 20;

    [TestCase(0, TestName = "AnUnexpectedFailureServingAnOffer_OnAFreshStream_AnswersItAndGivesItsPlaceBack")]
    [TestCase(4, TestName = "AnUnexpectedFailureServingAnOffer_OnAParkedStream_AnswersItAndGivesItsPlaceBack")]
    public async Task AnUnexpectedFailureServingAnOffer_AnswersItAndGivesItsPlaceBack(int parkedStreams)
    {
        // The relay would close an unanswered offer only after a minute: a prompt close means the agent answered it.
        await using var relay = await TestRelay.StartAsync(["echo"], o => o.Limits.PendingStreamTimeout = TimeSpan.FromMinutes(1));
        await using var upstream = TestUpstream.Echo();
        var throwing = new ThrowOnceAt(ConnectionOpenedEvent);
        using var loggers = LoggerFactory.Create(b => b.AddProvider(throwing).SetMinimumLevel(LogLevel.Trace));
        var session = await relay.ConnectAgentAsync(configure: o =>
        {
            o.LoggerFactory = loggers;
            o.MaxConcurrentConnections = 1;
            o.ParkedStreams = parkedStreams;
        });
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();

        var closedPromptly = await relay.ConnectAndWaitForCloseAsync("echo").WaitAsync(TimeSpan.FromSeconds(20));
        await Eventually.WaitUntilAsync(() => session.ActiveConnections == 0, "no connection is counted");

        // The only place (MaxConcurrentConnections = 1) came back: the next connection is served.
        var payload = SocketTestExtensions.RandomBytes(256 * 1024);
        using var client = await relay.ConnectClientAsync("echo");
        var receiving = client.ReadToEndAsync();
        await client.SendAllAsync(payload).DefaultTimeout();
        client.Shutdown(SocketShutdown.Send);
        var echoed = await receiving.DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(throwing.Thrown, Is.EqualTo(1), "the fault was injected");
            Assert.That(closedPromptly, Is.True, "the public client was closed because the agent refused the offer");
            Assert.That(echoed, Is.EqualTo(payload), "the connection after it was served");
        });
    }

    [Test]
    public async Task AnActivityListenerThatThrowsWhenAConnectionEnds_DoesNotKeepItsPlace()
    {
        // A tracing exporter is the application's code: when it throws as the connection's activity stops, the
        // connection's place in the limits must still come back (it was given back only after the activity before).
        const string endpoint = "traced-echo";
        var thrown = 0;
        using var listener = new System.Diagnostics.ActivityListener
        {
            ShouldListenTo = source => source.Name == "SiteLink.Sdk",
            Sample = (ref System.Diagnostics.ActivityCreationOptions<System.Diagnostics.ActivityContext> _) => System.Diagnostics.ActivitySamplingResult.AllData,
            ActivityStopped = activity =>
            {
                if ((activity.GetTagItem("sitelink.endpoint") as string) == endpoint && Interlocked.Exchange(ref thrown, 1) == 0)
                {
                    throw new InvalidOperationException("the exporter is broken");
                }
            },
        };
        System.Diagnostics.ActivitySource.AddActivityListener(listener);
        await using var relay = await TestRelay.StartAsync([endpoint]);
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync(configure: o => o.MaxConcurrentConnections = 1);
        await session.ForwardAsync(endpoint, upstream.Uri).DefaultTimeout();

        async Task<byte[]> EchoAsync(byte[] payload)
        {
            using var client = await relay.ConnectClientAsync(endpoint);
            var receiving = client.ReadToEndAsync();
            await client.SendAllAsync(payload).DefaultTimeout();
            client.Shutdown(SocketShutdown.Send);
            return await receiving.DefaultTimeout();
        }

        var first = SocketTestExtensions.RandomBytes(64 * 1024);
        var firstEcho = await EchoAsync(first);
        await Eventually.WaitUntilAsync(() => Volatile.Read(ref thrown) == 1, "the listener threw");
        await Eventually.WaitUntilAsync(() => session.ActiveConnections == 0, "the first connection ended");
        var second = SocketTestExtensions.RandomBytes(256 * 1024);
        var secondEcho = await EchoAsync(second);

        Assert.Multiple(() =>
        {
            Assert.That(firstEcho, Is.EqualTo(first));
            Assert.That(secondEcho, Is.EqualTo(second), "the only place (MaxConcurrentConnections = 1) came back");
        });
    }

    /// <summary>A logging provider whose logger throws the first time it is asked to log <paramref name="eventId"/>.</summary>
    private sealed class ThrowOnceAt(int eventId) : ILoggerProvider
    {
        private int _thrown;

        public int Thrown => Volatile.Read(ref _thrown);

        public ILogger CreateLogger(string categoryName) => new Logger(this);

        public void Dispose()
        {
        }

        private sealed class Logger(ThrowOnceAt provider) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                if (eventId.Id == provider._eventId && Interlocked.CompareExchange(ref provider._thrown, 1, 0) == 0)
                {
                    throw new InvalidOperationException("the log sink is broken");
                }
            }
        }

        private readonly int _eventId = eventId;
    }
}
