using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Protocol.V1;

namespace SiteLink.FunctionalTests;

/// <summary>
/// An agent with a valid token of one tenant, speaking the wire protocol by hand and breaking it, against the real
/// relay: what it can make the relay hold is bounded, it gets a clear status, and another tenant's agent keeps carrying
/// verified bytes with a bounded round trip throughout.
/// </summary>
[TestFixture]
[Category("Hostile")]
public sealed class HostileAgentTests
{
    [Test]
    public async Task AgentThatNeverReadsItsControlStream_IsEnded_WithTheQueueBounded()
    {
        const int QueueBytes = 64 * 1024;
        await using var relay = await TestRelay.StartAsync([GoodAgent.CloudEndpoint], o => o.Limits.MaxControlQueueBytes = QueueBytes);
        await using var good = await GoodAgent.StartAsync(relay);
        using var raw = new RawAgent(relay);
        var (control, _) = await raw.HandshakeAsync();
        var heapBefore = GC.GetTotalMemory(forceFullCollection: true);

        // Binds with invalid names as fast as the relay takes them, never reading one answer (each answer is ~110 bytes
        // of refusal text): without a bound the relay would queue 300,000 of them, ~50 MB.
        var sent = 0;
        long heapPeak = 0;
        try
        {
            while (sent < 300_000 && relay.Server.Counters.SessionsEnded("queue_full") == 0)
            {
                await control.RequestStream.WriteAsync(new AgentMessage { Bind = new Bind { BindId = $"b{sent}", Name = "not valid!" } }).DefaultTimeout();
                if (++sent % 20_000 == 0)
                {
                    heapPeak = Math.Max(heapPeak, GC.GetTotalMemory(forceFullCollection: true));
                }
            }
        }
        catch (Exception ex) when (ex is RpcException or IOException)
        {
            // The relay reset the call (seen as a gRPC status or as the HTTP/2 stream's reset).
        }

        await Eventually.WaitUntilAsync(() => relay.Server.Counters.SessionsEnded("queue_full") == 1, "the silent reader's session ended");
        heapPeak = Math.Max(heapPeak, GC.GetTotalMemory(forceFullCollection: true));
        await Eventually.WaitUntilAsync(() => relay.Server.SessionCount == 1, "only the good agent's session is left");
        await good.AssertServesAsync();
        control.Dispose();

        Assert.Multiple(() =>
        {
            Assert.That(sent, Is.LessThan(300_000), "the session was ended while the agent was still sending");
            Assert.That(heapPeak - heapBefore, Is.LessThan(16 * 1024 * 1024), "the relay's heap did not grow with what the agent would not read");
            Assert.That(relay.Logs.Entries.Any(e => e.Message.Contains("does not read its control stream", StringComparison.Ordinal)), Is.True, "the reason is logged");
        });
    }

    [Test]
    public async Task OversizedUnbindIds_AreNeverEchoed()
    {
        await using var relay = await TestRelay.StartAsync([GoodAgent.CloudEndpoint]);
        await using var good = await GoodAgent.StartAsync(relay);
        using var raw = new RawAgent(relay);
        var (control, _) = await raw.HandshakeAsync();
        using (control)
        {
            var huge = new string('u', 60_000);
            long echoed = 0;
            for (var i = 0; i < 300; i++)
            {
                await control.RequestStream.WriteAsync(new AgentMessage { Unbind = new Unbind { BindId = huge } }).DefaultTimeout();
                var result = (await RawAgent.NextAsync(control, RelayMessage.KindOneofCase.UnbindResult)).UnbindResult;
                echoed += result.BindId.Length;
                Assert.That(result.Found, Is.False);
            }

            Assert.Multiple(() =>
            {
                Assert.That(echoed, Is.Zero, "18 MB of bind ids sent, none echoed");
                Assert.That(relay.Server.Counters.ControlQueuePeakBytes, Is.LessThan(4096));
            });
        }

        await good.AssertServesAsync();
    }

    [Test]
    public async Task ControlStreamsWaitingForHello_AreCappedPerToken_AndPerAddress()
    {
        await using var relay = await TestRelay.StartAsync([GoodAgent.CloudEndpoint], o => o.Limits.MaxPendingHellosPerIp = 20);
        await using var good = await GoodAgent.StartAsync(relay);
        using var acme = new RawAgent(relay);
        using var restricted = new RawAgent(relay, TestRelay.AcmeRestrictedToken);

        // 16 of acme's wait (MaxSessionsPerToken), the other 24 are refused; then 4 of the other token fill the address's
        // 20 and its other 6 are refused.
        var acmeCalls = Enumerable.Range(0, 40).Select(_ => acme.OpenControl()).ToArray();
        var acmeOutcomes = acmeCalls.Select(c => c.ResponseStream.MoveNext()).ToArray();
        await Eventually.WaitUntilAsync(() => acmeOutcomes.Count(o => o.IsFaulted) == 24 && relay.Server.PendingHandshakes == 16, "16 of acme's waiting, 24 refused");
        var restrictedCalls = Enumerable.Range(0, 10).Select(_ => restricted.OpenControl()).ToArray();
        var calls = acmeCalls.Concat(restrictedCalls).ToArray();
        var outcomes = acmeOutcomes.Concat(restrictedCalls.Select(c => c.ResponseStream.MoveNext())).ToArray();
        await Eventually.WaitUntilAsync(() => outcomes.Count(o => o.IsFaulted) == 30, "30 refused at once");
        var refusals = outcomes.Where(o => o.IsFaulted).Select(o => ((RpcException)o.Exception!.InnerException!).Status).ToArray();
        var waiting = relay.Server.PendingHandshakes;
        await good.AssertServesAsync();
        foreach (var call in calls)
        {
            call.Dispose();
        }

        await Eventually.WaitUntilAsync(() => relay.Server.PendingHandshakes == 0, "cancelled handshakes are released");
        Assert.Multiple(() =>
        {
            Assert.That(waiting, Is.EqualTo(20));
            Assert.That(refusals.Select(s => s.StatusCode), Has.All.EqualTo(StatusCode.Unavailable), "transient: the SDK retries later");
            Assert.That(refusals.Count(s => s.Detail.Contains("MaxSessionsPerToken", StringComparison.Ordinal)), Is.EqualTo(24));
            Assert.That(refusals.Count(s => s.Detail.Contains("MaxPendingHellosPerIp", StringComparison.Ordinal)), Is.EqualTo(6));
        });
    }

    [Test]
    public async Task DataOnAParkedStreamBeforeItIsPaired_EndsThatStream_AndNothingElse()
    {
        await using var relay = await TestRelay.StartAsync([GoodAgent.CloudEndpoint], ParkedStreamTests.VersionOne);
        await using var good = await GoodAgent.StartAsync(relay);
        using var raw = new RawAgent(relay);
        var (control, welcome) = await raw.HandshakeAsync();
        await Eventually.WaitUntilAsync(() => relay.Server.ParkedStreams == 2, "the good agent parked its 2");
        using (control)
        {
            var parked = Enumerable.Range(0, 8).Select(_ => raw.OpenParked(welcome.SessionId)).ToArray();
            await Eventually.WaitUntilAsync(() => relay.Server.ParkedStreams == 10, "8 more parked");

            // One full frame each: the relay ends the call at the first. (Writing on after that would be DATA on a closed
            // stream, which HTTP/2 lets the server answer by closing the whole connection; bench/hostile.py measures
            // what megabytes of it cost the relay.)
            var chunk = ByteString.CopyFrom(new byte[64 * 1024]);
            var statuses = new List<StatusCode>();
            foreach (var call in parked)
            {
                try
                {
                    await call.RequestStream.WriteAsync(new StreamFrame { Data = chunk }).DefaultTimeout();
                }
                catch (Exception ex) when (ex is RpcException or InvalidOperationException or IOException)
                {
                    // The call is over.
                }

                var ended = Assert.ThrowsAsync<RpcException>(async () => await call.ResponseStream.MoveNext().DefaultTimeout());
                statuses.Add(ended!.StatusCode);
                call.Dispose();
            }

            await Eventually.WaitUntilAsync(() => relay.Server.ParkedStreams == 2, "none of the raw agent's left parked");
            var bind = await RawAgent.BindAsync(control, "still-alive");
            Assert.Multiple(() =>
            {
                Assert.That(statuses, Has.All.EqualTo(StatusCode.InvalidArgument));
                Assert.That(relay.Server.Counters.ProtocolErrors, Is.GreaterThanOrEqualTo(8));
                Assert.That(bind.Status, Is.EqualTo(BindStatus.Ok), "the session itself goes on");
            });
        }

        await good.AssertServesAsync();
    }

    [Test]
    public async Task ParkedStreamsResetByTheAgent_DoNotHoldTheLimit()
    {
        await using var relay = await TestRelay.StartAsync([GoodAgent.CloudEndpoint]);
        using var raw = new RawAgent(relay);
        var (control, welcome) = await raw.HandshakeAsync();
        using (control)
        {
            var first = Enumerable.Range(0, 32).Select(_ => raw.OpenParked(welcome.SessionId)).ToArray();
            await Eventually.WaitUntilAsync(() => relay.Server.ParkedStreams == 32, "32 parked");
            foreach (var call in first)
            {
                call.Dispose();
            }

            await Eventually.WaitUntilAsync(() => relay.Server.ParkedStreams == 0, "reset streams are no longer parked");
            var second = Enumerable.Range(0, 32).Select(_ => raw.OpenParked(welcome.SessionId)).ToArray();
            await Eventually.WaitUntilAsync(() => relay.Server.ParkedStreams == 32, "32 parked again, none refused");
            var refusedNow = second.Count(c => c.ResponseStream.MoveNext().Wait(TimeSpan.FromMilliseconds(50)));

            Assert.That(refusedNow, Is.Zero, "no parked call ended with RESOURCE_EXHAUSTED");
            foreach (var call in second)
            {
                call.Dispose();
            }
        }
    }

    [Test]
    public async Task ParkedStreamOnAnotherConnection_IsRefused()
    {
        await using var relay = await TestRelay.StartAsync([GoodAgent.CloudEndpoint]);
        using var raw = new RawAgent(relay);
        using var elsewhere = new RawAgent(relay);
        var (control, welcome) = await raw.HandshakeAsync();
        using (control)
        {
            using var foreign = elsewhere.OpenParked(welcome.SessionId);

            var ex = Assert.ThrowsAsync<RpcException>(async () => await foreign.ResponseStream.MoveNext().DefaultTimeout());

            Assert.Multiple(() =>
            {
                Assert.That(ex!.StatusCode, Is.EqualTo(StatusCode.NotFound));
                Assert.That(ex.Status.Detail, Does.Contain("connection of its control stream"));
                Assert.That(relay.Server.ParkedStreams, Is.Zero);
            });
        }
    }

    [Test]
    public async Task ParkedStreamLifetime_RelayReleasesIt_AndTheAgentParksAnother()
    {
        var relayTime = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var agentTime = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var relay = await TestRelay.StartAsync(["echo"], o => { ParkedStreamTests.VersionOne(o); o.Limits.ParkedStreamLifetime = TimeSpan.FromMinutes(1); }, relayTime);
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync(configure: o =>
        {
            // Heartbeats far apart, so moving both clocks a minute fires nothing but the parked streams' lifetime.
            o.TimeProvider = agentTime;
            o.HeartbeatInterval = TimeSpan.FromMinutes(5);
            o.HeartbeatTolerance = TimeSpan.FromMinutes(6);
        });
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();
        await Eventually.WaitUntilAsync(() => relay.Server.ParkedStreams == 2, "2 parked (a fresh connection's)");
        var parkedCalls = relay.Server.Counters.ConnectionsPairedParked;

        agentTime.Advance(TimeSpan.FromSeconds(61));
        relayTime.Advance(TimeSpan.FromSeconds(61));

        // The relay ends the 2 (their lifetime is over); the agent replaces them.
        await Eventually.WaitUntilAsync(() => relay.Server.Counters.ParkedStreamsExpired == 2 && relay.Server.ParkedStreams == 2, "released and parked again");
        using var client = await relay.ConnectClientAsync("echo");
        var payload = SocketTestExtensions.RandomBytes(100_000);
        var receiving = client.ReadToEndAsync();
        await client.SendAllAsync(payload).DefaultTimeout();
        client.Shutdown(System.Net.Sockets.SocketShutdown.Send);

        Assert.Multiple(async () =>
        {
            Assert.That(await receiving.DefaultTimeout(), Is.EqualTo(payload));
            Assert.That(relay.Server.Counters.ConnectionsPairedParked, Is.EqualTo(parkedCalls + 1), "a replacement parked stream carried it");
            Assert.That(session.State, Is.EqualTo(TunnelSessionState.Connected));
            Assert.That(relay.Server.Counters.SessionsTimedOut, Is.Zero);
        });
    }

    [Test]
    public async Task TokenRevokedWhileAControlStreamWaitsForHello_TheSessionIsRefused()
    {
        await using var relay = await TestRelay.StartAsync([]);
        using var raw = new RawAgent(relay);
        using var control = raw.OpenControl();
        var answer = control.ResponseStream.MoveNext();
        await Eventually.WaitUntilAsync(() => relay.Server.PendingHandshakes == 1, "authenticated, waiting for Hello");

        relay.Server.RevokeToken("acme");
        await control.RequestStream.WriteAsync(new AgentMessage { Hello = new Hello { ProtocolVersion = 1, ClientId = "late" } }).DefaultTimeout();
        var ex = Assert.ThrowsAsync<RpcException>(async () => await answer.DefaultTimeout());

        Assert.Multiple(() =>
        {
            Assert.That(ex!.StatusCode, Is.EqualTo(StatusCode.Unauthenticated));
            Assert.That(relay.Server.SessionCount, Is.Zero, "no session for a token revoked during its handshake");
        });
    }

    [Test]
    public async Task ParkedCallsTheAgentEndsAtOnce_SpendTheConnectionsBudget()
    {
        await using var relay = await TestRelay.StartAsync([GoodAgent.CloudEndpoint], o => o.Limits.MaxFailedCallsPerConnection = 50);
        await using var good = await GoodAgent.StartAsync(relay);
        using var raw = new RawAgent(relay);
        var (control, welcome) = await raw.HandshakeAsync();
        using (control)
        {
            var ended = 0;
            try
            {
                for (var i = 0; i < 1000 && relay.Server.Counters.AgentConnectionEvents("failed_calls") == 0; i++)
                {
                    using var call = raw.OpenParked(welcome.SessionId);
                    await call.RequestStream.CompleteAsync().DefaultTimeout();
                    await call.ResponseStream.MoveNext().DefaultTimeout();
                    ended++;
                }
            }
            catch (Exception ex) when (ex is RpcException or IOException)
            {
                // The connection was closed under the flood.
            }

            Assert.Multiple(() =>
            {
                Assert.That(relay.Server.Counters.AgentConnectionEvents("failed_calls"), Is.EqualTo(1), "parked calls ended by the agent before use are wasted calls");
                Assert.That(ended, Is.LessThan(1000));
            });
        }

        await good.AssertServesAsync();
    }

    [Test]
    public async Task FloodOfUnknownStreams_IsCounted_ButLoggedOnceASecond()
    {
        await using var relay = await TestRelay.StartAsync([GoodAgent.CloudEndpoint]);
        await using var good = await GoodAgent.StartAsync(relay);
        using var raw = new RawAgent(relay);
        var watch = System.Diagnostics.Stopwatch.StartNew();

        var statuses = new List<StatusCode>();
        for (var i = 0; i < 150; i++)
        {
            using var call = raw.OpenStream("s_no-such-session", $"stream-{i}");
            var ex = Assert.ThrowsAsync<RpcException>(async () => await call.ResponseStream.MoveNext().DefaultTimeout());
            statuses.Add(ex!.StatusCode);
        }

        var lines = relay.Logs.Entries.Count(e => e.EventId.Id == 33);
        await good.AssertServesAsync();
        Assert.Multiple(() =>
        {
            Assert.That(statuses, Has.All.EqualTo(StatusCode.NotFound));
            Assert.That(relay.Server.Counters.UnknownStreamRequests, Is.EqualTo(150), "every one counted");
            Assert.That(lines, Is.InRange(1, 1 + (int)Math.Ceiling(watch.Elapsed.TotalSeconds)), "one line a second at most");
        });
    }

    [Test]
    public async Task UnparseableControlMessages_AreRefused_WithOneWarningLine_AndCounted()
    {
        await using var relay = await TestRelay.StartAsync([GoodAgent.CloudEndpoint]);
        await using var good = await GoodAgent.StartAsync(relay);
        using var raw = new RawAgent(relay);
        byte[] garbage = [0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x01];

        using var first = raw.OpenRawControl();
        await first.RequestStream.WriteAsync(garbage).DefaultTimeout();
        var firstError = Assert.ThrowsAsync<RpcException>(async () => await first.ResponseStream.MoveNext().DefaultTimeout());

        using var later = raw.OpenRawControl();
        await later.RequestStream.WriteAsync(new AgentMessage { Hello = new Hello { ProtocolVersion = 1, ClientId = "raw" } }.ToByteArray()).DefaultTimeout();
        Assert.That(await later.ResponseStream.MoveNext().DefaultTimeout(), Is.True, "Welcome");
        await later.RequestStream.WriteAsync(garbage).DefaultTimeout();
        var laterError = Assert.ThrowsAsync<RpcException>(async () =>
        {
            while (await later.ResponseStream.MoveNext().DefaultTimeout())
            {
            }
        });

        await good.AssertServesAsync();
        Assert.Multiple(() =>
        {
            Assert.That(firstError!.StatusCode, Is.EqualTo(StatusCode.InvalidArgument));
            Assert.That(firstError.Status.Detail, Does.Contain("could not be parsed"));
            Assert.That(laterError!.StatusCode, Is.EqualTo(StatusCode.InvalidArgument), "not OK: the session ended because of the agent");
            Assert.That(relay.Server.Counters.ProtocolErrors, Is.EqualTo(2));
            Assert.That(relay.Server.Counters.SessionsEnded("protocol_error"), Is.EqualTo(1));
            Assert.That(relay.Logs.Entries.Where(e => e.Level >= LogLevel.Error), Is.Empty, "no error-level entry, no stack trace");
            Assert.That(relay.Logs.Entries.Count(e => e.Level == LogLevel.Warning && e.Message.Contains("could not be parsed", StringComparison.Ordinal) && e.Exception is null), Is.EqualTo(2),
                "one warning line each, without an exception's stack trace");
        });
    }
}
