using System.Diagnostics.Metrics;
using System.Reflection;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>Opening, closing and disposing a session: nothing left behind, no application code under a lock, no hang.</summary>
[TestFixture]
[Category("Lifecycle")]
public sealed class LifecycleTests
{
    [Test]
    public async Task ACancelledConnect_LeavesNoSessionBehind()
    {
        await using var services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var meters = services.GetRequiredService<IMeterFactory>();
        using var states = new MetricCollector<long>(meters, "SiteLink.Sdk", "sitelink.session.state");
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();

        for (var i = 0; i < 3; i++)
        {
            var options = new TunnelSessionOptions
            {
                RelayUrl = new Uri("https://127.0.0.1:9"),
                AuthToken = TestRelay.AcmeToken,
                MeterFactory = meters,
            };
            Assert.That(async () => await TunnelSession.ConnectAsync(options, cancelled.Token).DefaultTimeout(), Throws.InstanceOf<OperationCanceledException>());
        }

        states.RecordObservableInstruments();
        var sessions = states.GetMeasurementSnapshot().Sum(m => m.Value);
        Assert.That(sessions, Is.Zero, "no session of a cancelled ConnectAsync is still counted (it used to stay 'connecting' for ever)");
    }

    [Test]
    public async Task Closing_RunsNoApplicationCodeUnderTheSessionsLock()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);
        var spy = new LockSpy();
        var options = relay.AgentOptions();
        options.LoggerFactory = LoggerFactory.Create(b => b.SetMinimumLevel(LogLevel.Debug).AddProvider(spy));
        var session = (TunnelSession)await TunnelSession.ConnectAsync(options).DefaultTimeout();
        spy.Session = session;
        session.StateChanged += (_, _) => spy.Check("StateChanged");
        await session.BindHandlerAsync("echo", (_, _) => Task.CompletedTask).DefaultTimeout();

        await session.CloseAsync().DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(spy.Calls, Is.GreaterThan(0), "the close logged and raised events");
            Assert.That(spy.UnderLock, Is.Empty, "application code (a logger, an event handler) ran while the session's lock was held");
        });
    }

    [TestCase("Dispose")]
    [TestCase("a second CloseAsync with a cancelled token")]
    public async Task AGracefulCloseInProgress_IsCutShort(string how)
    {
        // A fake clock that never moves: the 30 s drain would last for ever unless something cuts it short.
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var relay = await TestRelay.StartAsync(["hold"]);
        var options = relay.AgentOptions();
        options.TimeProvider = time;
        options.DrainTimeout = TimeSpan.FromSeconds(30);
        var session = (TunnelSession)await TunnelSession.ConnectAsync(options).DefaultTimeout();
        var handlerCancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await session.BindHandlerAsync("hold", async (_, ct) =>
        {
            await using var registration = ct.Register(() => handlerCancelled.TrySetResult());
            await Task.Delay(Timeout.Infinite, ct);
        }).DefaultTimeout();
        using var client = await relay.ConnectClientAsync("hold");
        await Eventually.WaitUntilAsync(() => session.ActiveConnections == 1, "a connection in flight");

        var graceful = session.CloseAsync();
        await Eventually.WaitUntilAsync(() => session.State == TunnelSessionState.Closed || session.Endpoints.Count == 0, "the close began");
        Assert.That(graceful.IsCompleted, Is.False, "draining: the connection in flight may finish");
        if (how == "Dispose")
        {
            await Task.Run(session.Dispose).DefaultTimeout("Dispose returns at once, whatever close is in progress");
        }
        else
        {
            using var now = new CancellationTokenSource();
            await now.CancelAsync();
            await session.CloseAsync(now.Token).DefaultTimeout("a second caller's token ends the drain");
        }

        await graceful.DefaultTimeout();
        await handlerCancelled.Task.DefaultTimeout("the connection in flight was aborted");
        Assert.That(session.State, Is.EqualTo(TunnelSessionState.Closed));
    }

    [Test]
    public async Task BindingWhileReconnecting_IsAccepted_AndBoundOnceConnected()
    {
        await using var relay = await TestRelay.StartAsync(["late"]);
        await using var proxy = new FaultProxy(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, relay.Server.AgentUrl.Port));
        var options = relay.AgentOptions();
        options.RelayUrl = new Uri($"https://127.0.0.1:{proxy.Port}");
        options.HeartbeatInterval = TimeSpan.FromMilliseconds(300);
        options.HeartbeatTolerance = TimeSpan.FromMilliseconds(450);
        options.Reconnect.InitialDelay = TimeSpan.FromMilliseconds(100);
        options.Reconnect.MaxDelay = TimeSpan.FromMilliseconds(300);
        options.ConnectTimeout = TimeSpan.FromSeconds(1);
        await using var session = await TunnelSession.ConnectAsync(options).DefaultTimeout();
        var recorder = new StateRecorder(session);
        proxy.BlackHole();
        await recorder.WaitForAsync(TunnelSessionState.Reconnecting);

        var endpoint = await session.BindHandlerAsync("late", async (connection, ct) =>
        {
            var buffer = new byte[4096];
            int read;
            while ((read = await connection.Stream.ReadAsync(buffer, ct)) > 0)
            {
                await connection.Stream.WriteAsync(buffer.AsMemory(0, read), ct);
            }
        }).DefaultTimeout();
        var boundWhileReconnecting = endpoint.IsBound;
        proxy.Heal();
        await Eventually.WaitUntilAsync(() => recorder.Binds.Any(b => b.EndpointName == "late" && b.Error is null), "bound once connected");

        var payload = SocketTestExtensions.RandomBytes(256 * 1024);
        using var client = await relay.ConnectClientAsync("late");
        var receiving = client.ReadToEndAsync();
        await client.SendAllAsync(payload).DefaultTimeout();
        client.Shutdown(System.Net.Sockets.SocketShutdown.Send);
        var echoed = await receiving.DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(boundWhileReconnecting, Is.False, "accepted, not bound yet");
            Assert.That(endpoint.IsBound, Is.True);
            Assert.That(echoed, Is.EqualTo(payload));
        });
    }

    [Test]
    public async Task ChangingTheOptionsAfterConnect_ChangesNothingInTheSession()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var proxy = new FaultProxy(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, relay.Server.AgentUrl.Port));
        var options = relay.AgentOptions();
        options.RelayUrl = new Uri($"https://127.0.0.1:{proxy.Port}");
        options.Reconnect.InitialDelay = TimeSpan.FromMilliseconds(50);
        options.Reconnect.MaxDelay = TimeSpan.FromMilliseconds(200);
        await using var session = await TunnelSession.ConnectAsync(options).DefaultTimeout();
        var recorder = new StateRecorder(session);

        // The caller reuses its object for something else; the running session must not follow.
        options.AuthToken = "another-token-0123456789abcdef";
        options.Reconnect.InitialDelay = TimeSpan.FromHours(1);
        proxy.ResetAll();
        await recorder.WaitForAsync(TunnelSessionState.Connected);

        Assert.That(session.Fault, Is.Null, "reconnected with the token it started with, at once");
    }

    [Test]
    public void TheHostsOptions_AreNotChangedByCreatingTheSession()
    {
        var builder = Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder();
        builder.Services.AddSiteLink(o =>
        {
            o.RelayUrl = new Uri("https://127.0.0.1:9");
            o.AuthToken = TestRelay.AcmeToken;
        });
        using var host = builder.Build();

        _ = host.Services.GetRequiredService<ITunnelSession>();
        var configured = host.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<TunnelSessionOptions>>().Value;

        Assert.Multiple(() =>
        {
            Assert.That(configured.LoggerFactory, Is.Null, "the shared IOptions value stays as configured");
            Assert.That(configured.MeterFactory, Is.Null);
        });
    }

    [Test]
    public async Task Abort_CutsShortAGracefulCloseInProgress()
    {
        // A fake clock that never moves: the graceful close would wait for ever (StreamCloseTimeout never elapses).
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var relay = await TestRelay.StartAsync(["hold"]);
        var options = relay.AgentOptions();
        options.TimeProvider = time;
        await using var session = await TunnelSession.ConnectAsync(options).DefaultTimeout();
        var served = new TaskCompletionSource<TunnelStream>(TaskCreationOptions.RunContinuationsAsynchronously);
        var writing = new TaskCompletionSource<Task>(TaskCreationOptions.RunContinuationsAsynchronously);
        await session.BindHandlerAsync("hold", async (connection, _) =>
        {
            served.TrySetResult(connection.Stream);
            // More than every window and buffer on the way holds, toward a client that does not read: the write
            // blocks on flow control, holding the stream's write side.
            var write = connection.Stream.WriteAsync(new byte[64 * 1024 * 1024], CancellationToken.None).AsTask();
            writing.TrySetResult(write);
            await write.ContinueWith(_ => { }, TaskScheduler.Default);
        }).DefaultTimeout();
        using var client = await relay.ConnectClientAsync("hold");
        var stream = await served.Task.DefaultTimeout();
        var write = await writing.Task.DefaultTimeout();
        await Eventually.WaitUntilAsync(() => stream.BytesWritten > 0, "the write is under way");

        var closing = stream.DisposeAsync().AsTask();
        Assert.That(write.IsCompleted, Is.False, "the write is blocked on flow control (if windows ever grow past 64 MiB, raise the payload)");
        Assert.That(closing.IsCompleted, Is.False, "the graceful close waits behind the blocked write");
        stream.Abort();

        // At once (well within 10 s); without the fix the close went on until the relay gave up on the stream (~25 s).
        await closing.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.That(async () => await write.DefaultTimeout(), Throws.InstanceOf<IOException>().Or.InstanceOf<OperationCanceledException>(), "the blocked write fails");
    }

    [Test]
    public async Task AnEndpointBoundAsTheSessionConnects_IsBoundOnce()
    {
        await using var relay = await ScriptedRelay.StartAsync();
        var builder = Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSiteLink(o =>
        {
            o.RelayUrl = relay.Url;
            o.AuthToken = "scripted-token";
            o.AllowInsecureTransport = true;
        });
        using var host = builder.Build();
        var session = host.Services.GetRequiredService<ITunnelSession>();
        Task<ITunnelEndpoint>? binding = null;
        // An application that binds the moment it sees Connected (from the session's own thread).
        session.StateChanged += (_, e) =>
        {
            if (e.State == TunnelSessionState.Connected)
            {
                binding ??= session.BindHandlerAsync("x", (_, _) => Task.CompletedTask);
            }
        };
        await host.StartAsync().DefaultTimeout();
        await relay.Control.NextAsync(SiteLink.Protocol.V1.AgentMessage.KindOneofCase.Hello);
        await relay.Control.ToAgent.Writer.WriteAsync(new SiteLink.Protocol.V1.RelayMessage { Welcome = new SiteLink.Protocol.V1.Welcome { SessionId = "s1", RelayId = "scripted", ProtocolVersion = 1 } });
        var first = (await relay.Control.NextAsync(SiteLink.Protocol.V1.AgentMessage.KindOneofCase.Bind)).Bind;
        await relay.Control.ToAgent.Writer.WriteAsync(new SiteLink.Protocol.V1.RelayMessage { BindResult = new SiteLink.Protocol.V1.BindResult { BindId = first.BindId, Status = SiteLink.Protocol.V1.BindStatus.Ok } });
        await Eventually.WaitUntilAsync(() => binding is not null, "the application bound");
        await binding!.DefaultTimeout();

        // A sentinel bind: every Bind the agent sent before it is on the control stream ahead of it.
        var sentinel = session.BindHandlerAsync("sentinel", (_, _) => Task.CompletedTask);
        var binds = new List<SiteLink.Protocol.V1.Bind>();
        while (true)
        {
            var bind = (await relay.Control.NextAsync(SiteLink.Protocol.V1.AgentMessage.KindOneofCase.Bind)).Bind;
            if (bind.Name == "sentinel")
            {
                await relay.Control.ToAgent.Writer.WriteAsync(new SiteLink.Protocol.V1.RelayMessage { BindResult = new SiteLink.Protocol.V1.BindResult { BindId = bind.BindId, Status = SiteLink.Protocol.V1.BindStatus.Ok } });
                break;
            }

            binds.Add(bind);
        }

        await sentinel.DefaultTimeout();
        await host.StopAsync().DefaultTimeout();
        Assert.That(binds.Select(b => b.Name), Is.Empty, "'x' was bound once, not again by the connect's own list");
    }

    /// <summary>Records every log call made while the session's state lock is held by the calling thread.</summary>
    private sealed class LockSpy : ILoggerProvider
    {
        private static readonly FieldInfo Gate = typeof(TunnelSession).GetField("_stateGate", BindingFlags.NonPublic | BindingFlags.Instance)
            ?? throw new InvalidOperationException("TunnelSession._stateGate not found");

        private int _calls;

        public TunnelSession? Session { get; set; }

        public System.Collections.Concurrent.ConcurrentQueue<string> UnderLock { get; } = new();

        public int Calls => Volatile.Read(ref _calls);

        public void Check(string what)
        {
            Interlocked.Increment(ref _calls);
            if (Session is { } session && Monitor.IsEntered(Gate.GetValue(session)!))
            {
                UnderLock.Enqueue(what);
            }
        }

        public ILogger CreateLogger(string categoryName) => new SpyLogger(this);

        public void Dispose()
        {
        }

        private sealed class SpyLogger(LockSpy spy) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
                spy.Check(formatter(state, exception));
        }
    }
}
