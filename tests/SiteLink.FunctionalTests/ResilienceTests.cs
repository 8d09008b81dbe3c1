using System.Net;
using System.Net.Sockets;
using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Relay.Configuration;

namespace SiteLink.FunctionalTests;

/// <summary>C4, C5, C6 (drain), C11 (expiry): the agent notices a dead path and recovers by itself, every time.</summary>
[TestFixture]
public sealed class ResilienceTests
{
    /// <summary>The defaults scaled down 33×: 10 s / 15 s becomes 300 ms / 450 ms.</summary>
    private static void Fast(TunnelSessionOptions options)
    {
        options.HeartbeatInterval = TimeSpan.FromMilliseconds(300);
        options.HeartbeatTolerance = TimeSpan.FromMilliseconds(450);
        options.Reconnect.InitialDelay = TimeSpan.FromMilliseconds(100);
        options.Reconnect.MaxDelay = TimeSpan.FromMilliseconds(500);
        options.ConnectTimeout = TimeSpan.FromSeconds(1);
        options.RequestTimeout = TimeSpan.FromSeconds(5);
        options.DrainTimeout = TimeSpan.FromSeconds(5);
    }

    private static TunnelSessionOptions ThroughProxy(TestRelay relay, FaultProxy proxy)
    {
        var options = relay.AgentOptions();
        options.RelayUrl = new Uri($"https://127.0.0.1:{proxy.Port}");
        Fast(options);
        return options;
    }

    private static IPEndPoint AgentEndPoint(TestRelay relay) => new(IPAddress.Loopback, relay.Server.AgentUrl.Port);

    private static async Task AssertEchoesAsync(TestRelay relay, string cloudEndpoint, int size = 512 * 1024)
    {
        var payload = SocketTestExtensions.RandomBytes(size);
        using var client = await relay.ConnectClientAsync(cloudEndpoint);
        var receiving = client.ReadToEndAsync();
        await client.SendAllAsync(payload).DefaultTimeout();
        client.Shutdown(SocketShutdown.Send);
        Assert.That(await receiving.DefaultTimeout(), Is.EqualTo(payload), "bytes through the tunnel");
    }

    [Test]
    public async Task BlackHole_DetectedWithinTolerance_RelayDropsSession_HealReconnectsRebindsAndCarriesTraffic()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var upstream = TestUpstream.Echo();
        await using var proxy = new FaultProxy(AgentEndPoint(relay));
        await using var session = await TunnelSession.ConnectAsync(ThroughProxy(relay, proxy)).DefaultTimeout();
        var recorder = new StateRecorder(session);
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();
        await AssertEchoesAsync(relay, "echo");
        var firstSession = session.SessionId;
        await Eventually.WaitUntilAsync(() => session.LastHeartbeatRoundTrip is not null, "a heartbeat was answered");

        var blackHoledAt = recorder.Now;
        proxy.BlackHole();
        var detectedAt = await recorder.WaitForAsync(TunnelSessionState.Reconnecting);
        await Eventually.WaitUntilAsync(() => relay.Server.Counters.SessionsTimedOut == 1, "the relay drops the silent session on its own");
        var relayDroppedAt = recorder.Now;
        var healedAt = recorder.Now;
        proxy.Heal();
        await recorder.WaitForAsync(TunnelSessionState.Connected);
        await Eventually.WaitUntilAsync(() => recorder.SuccessfulRebinds("echo") == 1, "echo bound again");
        await AssertEchoesAsync(relay, "echo");
        var flowingAt = recorder.Now;

        var detection = detectedAt - blackHoledAt;
        TestContext.Out.WriteLine($"black-hole -> detected: {detection.TotalMilliseconds:F0} ms (interval 300 ms + tolerance 450 ms); " +
            $"relay dropped the session after {(relayDroppedAt - blackHoledAt).TotalMilliseconds:F0} ms; heal -> traffic verified: {(flowingAt - healedAt).TotalMilliseconds:F0} ms");
        Assert.Multiple(() =>
        {
            // The tolerance runs from the first unanswered heartbeat, which may have left just before the black-hole
            // (its answer lost in it): so detection is never earlier than tolerance - interval after the cut.
            Assert.That(detection, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(450 - 300 - 10)), "not before the tolerance ran out");
            Assert.That(detection, Is.LessThan(TimeSpan.FromMilliseconds(300 + 450 + 1000)), "within interval + tolerance + slack");
            Assert.That(recorder.States.First(s => s.State == TunnelSessionState.Reconnecting).Reason, Does.Contain("heartbeat"));
            Assert.That(session.SessionId, Is.Not.EqualTo(firstSession));
            Assert.That(session.State, Is.EqualTo(TunnelSessionState.Connected));
            Assert.That(session.Endpoints.Select(e => e.Name), Is.EqualTo(new[] { "echo" }));
        });
    }

    [Test]
    public async Task RelayRestartedOnTheSamePort_AgentReconnectsAndRebindsByItself()
    {
        var certificate = Path.Combine(Path.GetTempPath(), $"sitelink-test-{Guid.NewGuid():N}.pfx");
        try
        {
            await using var upstream = TestUpstream.Echo();
            var first = await TestRelay.StartAsync(["echo"], o => o.Tls.DevelopmentCertificatePath = certificate);
            var agentPort = first.Server.AgentUrl.Port;
            var echoPort = first.CloudEndpoint("echo").Port;
            void SamePorts(RelayOptions o)
            {
                o.Tls.DevelopmentCertificatePath = certificate;
                o.AgentListen = $"127.0.0.1:{agentPort}";
                o.CloudEndpoints[0].Listen = $"127.0.0.1:{echoPort}";
            }

            var options = first.AgentOptions();
            Fast(options);
            await using var session = await TunnelSession.ConnectAsync(options).DefaultTimeout();
            var recorder = new StateRecorder(session);
            await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();
            await AssertEchoesAsync(first, "echo");

            await first.DisposeAsync();
            await recorder.WaitForAsync(TunnelSessionState.Reconnecting);
            await using var second = await TestRelay.StartAsync(["echo"], SamePorts);
            await recorder.WaitForAsync(TunnelSessionState.Connected);
            await Eventually.WaitUntilAsync(() => recorder.SuccessfulRebinds("echo") == 1, "echo bound again");
            await AssertEchoesAsync(second, "echo");

            Assert.Multiple(() =>
            {
                Assert.That(recorder.States.First(s => s.State == TunnelSessionState.Reconnecting).Reason, Does.Contain("draining"),
                    "the stopping relay asked the agent to drain");
                Assert.That(recorder.Attempts, Is.Not.Empty, "attempts while the relay was down were retried");
                Assert.That(recorder.Attempts.Select(a => a.AttemptNumber), Is.Ordered);
                Assert.That(session.Fault, Is.Null);
            });
        }
        finally
        {
            File.Delete(certificate);
        }
    }

    [Test]
    public async Task EveryConnectionReset20TimesUnderLoad_SessionAlwaysRecovers_NothingLeaks()
    {
        using var calls = new GrpcCallCounter();
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var upstream = TestUpstream.Echo();
        await using var proxy = new FaultProxy(AgentEndPoint(relay));
        var session = (TunnelSession)await TunnelSession.ConnectAsync(ThroughProxy(relay, proxy)).DefaultTimeout();
        var recorder = new StateRecorder(session);
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();
        await AssertEchoesAsync(relay, "echo");
        var socketsBefore = OpenSockets();

        using var stopLoad = new CancellationTokenSource();
        var verified = 0;
        var load = Task.Run(async () =>
        {
            while (!stopLoad.IsCancellationRequested)
            {
                try
                {
                    var payload = SocketTestExtensions.RandomBytes(32 * 1024);
                    using var client = await relay.ConnectClientAsync("echo");
                    var receiving = client.ReadToEndAsync();
                    await client.SendAllAsync(payload);
                    client.Shutdown(SocketShutdown.Send);
                    if ((await receiving).AsSpan().SequenceEqual(payload))
                    {
                        Interlocked.Increment(ref verified);
                    }
                }
                catch (SocketException)
                {
                    // Connections cut by a reset fail; what matters is that none hangs and the next ones work.
                }
            }
        });

        for (var round = 1; round <= 20; round++)
        {
            // Each reset comes only after verified traffic went through the recovered session.
            var verifiedBefore = Volatile.Read(ref verified);
            await Eventually.WaitUntilAsync(() => Volatile.Read(ref verified) > verifiedBefore, $"traffic flows before reset {round}");
            proxy.ResetAll();
            await recorder.WaitForAsync(TunnelSessionState.Connected, times: round);
            await Eventually.WaitUntilAsync(() => recorder.SuccessfulRebinds("echo") == round, $"rebind {round}");
        }

        await stopLoad.CancelAsync();
        await load.DefaultTimeout();
        await AssertEchoesAsync(relay, "echo");
        await Eventually.WaitUntilAsync(() => session.ActiveConnections == 0 && relay.Server.Counters.ActiveConnections == 0, "no tunnelled connection left");
        // The control call and the session's multiplexed data call: nothing parked, nothing left of the old connections.
        await Eventually.WaitUntilAsync(
            () => relay.Server.ParkedStreams == 0 && calls.OpenClientCalls == 2 && calls.OpenServerCalls == 2,
            "only the control call and the multiplexed data call are open");
        await Eventually.WaitUntilAsync(() => relay.Server.SessionCount == 1, "one session on the relay");
        await Eventually.WaitUntilAsync(() => OpenSockets() <= socketsBefore + 2, "sockets back to where they were");
        TestContext.Out.WriteLine($"verified connections under load: {verified}; sockets before {socketsBefore}, after {OpenSockets()}; " +
            $"open gRPC calls client {calls.OpenClientCalls}, server {calls.OpenServerCalls}");

        await session.DisposeAsync().DefaultTimeout();
        await Eventually.WaitUntilAsync(() => calls.OpenClientCalls == 0 && calls.OpenServerCalls == 0, "every call ends with the session");

        Assert.Multiple(() =>
        {
            Assert.That(recorder.Count(TunnelSessionState.Reconnecting), Is.EqualTo(20));
            Assert.That(recorder.Count(TunnelSessionState.Faulted), Is.Zero);
            Assert.That(verified, Is.GreaterThanOrEqualTo(20), "traffic kept flowing between resets");
        });
    }

    [Test]
    public async Task TokenRevokedWhileConnected_SessionFaultsWithAuthenticationError_NoRetries()
    {
        await using var relay = await TestRelay.StartAsync([]);
        var options = relay.AgentOptions();
        Fast(options);
        options.ConnectTimeout = TimeSpan.FromSeconds(10);
        await using var session = await TunnelSession.ConnectAsync(options).DefaultTimeout();
        var recorder = new StateRecorder(session);

        relay.Server.RevokeToken("acme");
        await recorder.WaitForAsync(TunnelSessionState.Faulted);
        var attemptsAtFault = recorder.Attempts.Count;
        await Task.Delay(TimeSpan.FromMilliseconds(500));

        Assert.Multiple(() =>
        {
            Assert.That(session.State, Is.EqualTo(TunnelSessionState.Faulted));
            Assert.That(session.Fault, Is.TypeOf<TunnelAuthenticationException>());
            Assert.That(session.Fault!.Message, Does.Contain("revoked"));
            // Only transient failures (e.g. a slow handshake on a loaded machine) are ever retried; the refusal is not.
            Assert.That(recorder.Attempts.Select(a => a.Exception), Has.None.InstanceOf<TunnelAuthenticationException>(), "an authentication error is never retried");
            Assert.That(recorder.Attempts, Has.Count.EqualTo(attemptsAtFault), "nothing is tried after the fault");
            Assert.That(recorder.States.Last().Exception, Is.SameAs(session.Fault));
        });
    }

    [Test]
    public async Task Close_LetsAConnectionInFlightFinish_RefusesNewOnesAtOnce()
    {
        await using var relay = await TestRelay.StartAsync(["slow"]);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var session = await relay.ConnectAgentAsync(configure: Fast);
        await session.BindHandlerAsync("slow", async (connection, ct) =>
        {
            started.TrySetResult();
            await release.Task.WaitAsync(ct);
            await connection.Stream.WriteAsync(new byte[100_000], ct);
        }).DefaultTimeout();
        using var inFlight = await relay.ConnectClientAsync("slow");
        await started.Task.DefaultTimeout();

        var closing = session.CloseAsync();
        await Eventually.WaitUntilAsync(() => session.Endpoints.Count == 0, "unbound at once");
        var newOneRefused = await relay.ConnectAndWaitForCloseAsync("slow");
        var closedEarly = closing.IsCompleted;
        release.TrySetResult();
        var reply = await inFlight.ReadToEndAsync().DefaultTimeout();
        await closing.DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(newOneRefused, Is.True, "no new connection after close began");
            Assert.That(closedEarly, Is.False, "close waits for the connection in flight");
            Assert.That(reply, Has.Length.EqualTo(100_000), "the connection in flight finished intact");
            Assert.That(session.State, Is.EqualTo(TunnelSessionState.Closed));
        });
    }

    [Test]
    public async Task Close_ConnectionStillRunningAtTheDrainDeadline_IsClosed()
    {
        await using var relay = await TestRelay.StartAsync(["stuck"]);
        var handlerCancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var session = await relay.ConnectAgentAsync(configure: o =>
        {
            Fast(o);
            o.DrainTimeout = TimeSpan.FromMilliseconds(300);
        });
        await session.BindHandlerAsync("stuck", async (connection, ct) =>
        {
            started.TrySetResult();
            try
            {
                await Task.Delay(Timeout.Infinite, ct);
            }
            finally
            {
                handlerCancelled.TrySetResult();
            }
        }).DefaultTimeout();
        using var client = await relay.ConnectClientAsync("stuck");
        await started.Task.DefaultTimeout();
        var watch = System.Diagnostics.Stopwatch.StartNew();

        await session.CloseAsync().DefaultTimeout();
        var closedAfter = watch.Elapsed;

        Assert.Multiple(async () =>
        {
            Assert.That(closedAfter, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(290)));
            Assert.That(closedAfter, Is.LessThan(TimeSpan.FromSeconds(5)));
            await handlerCancelled.Task.DefaultTimeout();
            Assert.That(await client.WaitForCloseAsync().DefaultTimeout(), Is.True, "the client is not left hanging");
        });
    }

    /// <summary>Open sockets of this process (Linux: /proc/self/fd links to "socket:[…]").</summary>
    private static int OpenSockets()
    {
        var count = 0;
        foreach (var fd in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            try
            {
                if (new FileInfo(fd).LinkTarget?.StartsWith("socket:", StringComparison.Ordinal) == true)
                {
                    count++;
                }
            }
            catch (IOException)
            {
                // The descriptor closed while we looked.
            }
        }

        return count;
    }
}
