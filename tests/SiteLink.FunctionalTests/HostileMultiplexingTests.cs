using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.Sockets;
using System.Threading.Channels;
using Google.Protobuf;
using Grpc.Core;
using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Protocol.V1;

namespace SiteLink.FunctionalTests;

/// <summary>
/// An agent speaking protocol version 2 by hand against the real relay and abusing the multiplexed data call
/// (Tunnel/Mux): calls it may not make, credit it does not have, frames only the relay may send, never reading, resetting
/// the call under live connections. Each time the relay's memory stays bounded, the public clients are not left hanging,
/// and another tenant's agent (and the session's other connections) keep carrying verified bytes.
/// </summary>
[TestFixture]
[Category("Multiplexing")]
[Category("Hostile")]
public sealed class HostileMultiplexingTests
{
    private const string Endpoint = "mux-raw";

    private static Task<TestRelay> StartRelayAsync(Action<Relay.Configuration.RelayOptions>? configure = null) =>
        TestRelay.StartAsync([Endpoint, GoodAgent.CloudEndpoint], configure);

    /// <summary>Control stream with a Hello offering version 2; returns it with the Welcome, after binding <see cref="Endpoint"/>.</summary>
    private static async Task<(AsyncDuplexStreamingCall<AgentMessage, RelayMessage> Control, Welcome Welcome)> HandshakeV2Async(RawAgent raw, bool bind = true)
    {
        var call = raw.OpenControl();
        await call.RequestStream.WriteAsync(new AgentMessage
        {
            Hello = new Hello { ProtocolVersion = 1, MaxProtocolVersion = 2, ClientId = "raw-mux", SdkVersion = "1.0.0" },
        }).DefaultTimeout();
        var welcome = (await RawAgent.NextAsync(call, RelayMessage.KindOneofCase.Welcome)).Welcome;
        Assert.That(welcome.ProtocolVersion, Is.EqualTo(2u), "the relay agreed to version 2");
        Assert.That(welcome.Limits.MuxWindow, Is.GreaterThan(0u));
        if (bind)
        {
            Assert.That((await RawAgent.BindAsync(call, Endpoint)).Status, Is.EqualTo(BindStatus.Ok));
        }

        return (call, welcome);
    }

    private static Metadata MuxHeaders(RawAgent raw, string sessionId, int window, string? token = null)
    {
        var headers = raw.Headers(token);
        headers.Add("sitelink-session-id", sessionId);
        headers.Add("sitelink-window", window.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return headers;
    }

    /// <summary>A Mux call from the raw agent, its frames read in the background and sorted by connection.</summary>
    private sealed class RawMux : IDisposable
    {
        private readonly ConcurrentDictionary<ulong, Channel<StreamFrame>> _byId = new();
        private readonly Channel<StreamFrame> _opens = Channel.CreateUnbounded<StreamFrame>();
        private readonly SemaphoreSlim _writeLock = new(1, 1);

        public RawMux(RawAgent raw, string sessionId, int window = 4 * 1024 * 1024, bool read = true)
        {
            Call = raw.Client.Mux(MuxHeaders(raw, sessionId, window));
            Reading = read ? ReadAsync() : Task.FromResult<Status?>(null);
        }

        public AsyncDuplexStreamingCall<StreamFrames, StreamFrames> Call { get; }

        /// <summary>Completes with the call's status when the relay ends it (null: it ended with OK).</summary>
        public Task<Status?> Reading { get; }

        public ConcurrentQueue<StreamFrame> All { get; } = new();

        private async Task<Status?> ReadAsync()
        {
            try
            {
                while (await Call.ResponseStream.MoveNext(CancellationToken.None))
                {
                    foreach (var frame in Call.ResponseStream.Current.Frames)
                    {
                        All.Enqueue(frame);
                        if (frame.Open is not null)
                        {
                            _opens.Writer.TryWrite(frame);
                        }

                        Frames(frame.ConnectionId).Writer.TryWrite(frame);
                    }
                }

                return null;
            }
            catch (RpcException ex)
            {
                return ex.Status;
            }
            finally
            {
                _opens.Writer.TryComplete();
                foreach (var channel in _byId.Values)
                {
                    channel.Writer.TryComplete();
                }
            }
        }

        private Channel<StreamFrame> Frames(ulong id) => _byId.GetOrAdd(id, _ => Channel.CreateUnbounded<StreamFrame>());

        /// <summary>The next connection the relay opens on the call; its id.</summary>
        public async Task<ulong> NextOpenAsync() => (await _opens.Reader.ReadAsync().AsTask().DefaultTimeout()).ConnectionId;

        /// <summary>The next frame of <paramref name="id"/> that matches <paramref name="match"/>.</summary>
        public async Task<StreamFrame> NextAsync(ulong id, Func<StreamFrame, bool> match)
        {
            while (true)
            {
                var frame = await Frames(id).Reader.ReadAsync().AsTask().DefaultTimeout();
                if (match(frame))
                {
                    return frame;
                }
            }
        }

        /// <summary>Reads data of <paramref name="id"/> until <paramref name="bytes"/> arrived.</summary>
        public async Task<byte[]> ReadDataAsync(ulong id, int bytes)
        {
            using var collected = new MemoryStream();
            while (collected.Length < bytes)
            {
                var frame = await NextAsync(id, f => !f.Data.IsEmpty || f.Reset is not null || f.Close);
                Assert.That(frame.Reset, Is.Null, "the connection was reset");
                Assert.That(frame.Close, Is.False, "the connection was closed");
                frame.Data.WriteTo(collected);
            }

            return collected.ToArray();
        }

        public async Task SendAsync(StreamFrame frame)
        {
            await _writeLock.WaitAsync();
            try
            {
                await Call.RequestStream.WriteAsync(new StreamFrames { Frames = { frame } }).DefaultTimeout();
            }
            finally
            {
                _writeLock.Release();
            }
        }

        public Task SendDataAsync(ulong id, byte[] data) => SendAsync(new StreamFrame { ConnectionId = id, Data = ByteString.CopyFrom(data) });

        public void Dispose()
        {
            Call.Dispose();
            _writeLock.Dispose();
        }
    }

    /// <summary>
    /// Opens the session's Mux call and returns once the relay attached it: two calls race, the relay refuses the later
    /// with ALREADY_EXISTS, and the other is the attached one (no guessing how long the relay takes to see a call).
    /// </summary>
    private static async Task<RawMux> AttachMuxAsync(RawAgent raw, string sessionId, int window = 4 * 1024 * 1024)
    {
        var a = new RawMux(raw, sessionId, window);
        var b = new RawMux(raw, sessionId, window);
        foreach (var call in new[] { a, b })
        {
            try
            {
                // Makes sure the call's headers are on their way (a frame for no connection is ignored).
                await call.Call.RequestStream.WriteAsync(new StreamFrames { Frames = { new StreamFrame { ConnectionId = ulong.MaxValue, Window = 1 } } }).DefaultTimeout();
            }
            catch (RpcException)
            {
                // Refused already.
            }
        }

        var refused = await Task.WhenAny(a.Reading, b.Reading).DefaultTimeout();
        var (attached, loser) = refused == a.Reading ? (b, a) : (a, b);
        var status = await refused;
        loser.Dispose();
        Assert.That(status?.StatusCode, Is.EqualTo(StatusCode.AlreadyExists), "the later of two Mux calls is refused");
        return attached;
    }

    /// <summary>A public client's round trip through the raw agent's Mux call: the agent echoes what it receives.</summary>
    private static async Task AssertEchoesAsync(TestRelay relay, RawMux mux, string what)
    {
        using var client = await relay.ConnectClientAsync(Endpoint);
        var id = await mux.NextOpenAsync();
        var payload = SocketTestExtensions.RandomBytes(3000);
        await client.SendAllAsync(payload).DefaultTimeout();
        var received = await mux.ReadDataAsync(id, payload.Length);
        await mux.SendDataAsync(id, received);
        var echoed = new byte[payload.Length];
        await ReceiveExactlyAsync(client, echoed);
        Assert.That(echoed, Is.EqualTo(payload), what);
    }

    private static async Task ReceiveExactlyAsync(Socket socket, byte[] buffer)
    {
        for (var read = 0; read < buffer.Length;)
        {
            var n = await socket.ReceiveAsync(buffer.AsMemory(read), SocketFlags.None).AsTask().DefaultTimeout();
            Assert.That(n, Is.GreaterThan(0), "the connection ended early");
            read += n;
        }
    }

    /// <summary>Waits until a public client's connection ends; true when it was reset (not a clean FIN).</summary>
    private static async Task<bool> WaitForResetAsync(Socket client)
    {
        var buffer = new byte[64 * 1024];
        try
        {
            while (await client.ReceiveAsync(buffer.AsMemory(), SocketFlags.None).AsTask().DefaultTimeout() > 0)
            {
            }

            return false;
        }
        catch (SocketException)
        {
            return true;
        }
    }

    // ----------------------------------------------------------------------------------------------------------------

    [Test]
    public async Task MuxCall_OnAVersionOneSession_IsFailedPrecondition()
    {
        await using var relay = await StartRelayAsync();
        using var raw = new RawAgent(relay);
        var (control, welcome) = await raw.HandshakeAsync();
        using (control)
        {
            Assert.That(welcome.ProtocolVersion, Is.EqualTo(1u), "a Hello without max_protocol_version is version 1");
            Assert.That(welcome.Limits.MuxWindow, Is.Zero, "no multiplexing window on a version 1 session");
            using var call = raw.Client.Mux(MuxHeaders(raw, welcome.SessionId, 1 << 20));
            var refused = Assert.ThrowsAsync<RpcException>(async () => await call.ResponseStream.MoveNext().DefaultTimeout());
            Assert.That(refused!.StatusCode, Is.EqualTo(StatusCode.FailedPrecondition));

            // The session is fine otherwise.
            Assert.That((await RawAgent.BindAsync(control, Endpoint)).Status, Is.EqualTo(BindStatus.Ok));
        }
    }

    [Test]
    public async Task SecondMuxCall_IsAlreadyExists_AndTheFirstCarriesOn()
    {
        await using var relay = await StartRelayAsync();
        using var raw = new RawAgent(relay);
        var (control, welcome) = await HandshakeV2Async(raw);
        using (control)
        {
            using var first = await AttachMuxAsync(raw, welcome.SessionId);
            await AssertEchoesAsync(relay, first, "the first call carries a connection");

            using var second = raw.Client.Mux(MuxHeaders(raw, welcome.SessionId, 1 << 20));
            var refused = Assert.ThrowsAsync<RpcException>(async () => await second.ResponseStream.MoveNext().DefaultTimeout());
            Assert.That(refused!.StatusCode, Is.EqualTo(StatusCode.AlreadyExists));

            await AssertEchoesAsync(relay, first, "the first call still carries connections after the second was refused");
            Assert.That(first.Reading.IsCompleted, Is.False, "the first call lives on");
        }
    }

    [Test]
    public async Task MuxCall_WithAnotherToken_SessionId_OrConnection_IsRefused()
    {
        await using var relay = await StartRelayAsync();
        using var raw = new RawAgent(relay);
        using var otherConnection = new RawAgent(relay);
        using var globex = new RawAgent(relay, TestRelay.GlobexToken);
        var (control, welcome) = await HandshakeV2Async(raw);
        using (control)
        {
            var attempts = new (string What, AsyncDuplexStreamingCall<StreamFrames, StreamFrames> Call, StatusCode[] Expected)[]
            {
                ("another tenant's token", globex.Client.Mux(MuxHeaders(globex, welcome.SessionId, 1 << 20)), [StatusCode.NotFound]),
                ("another token of the same tenant", raw.Client.Mux(MuxHeaders(raw, welcome.SessionId, 1 << 20, TestRelay.AcmeRestrictedToken)), [StatusCode.NotFound]),
                ("an invalid token", raw.Client.Mux(MuxHeaders(raw, welcome.SessionId, 1 << 20, "not-a-token-0123456789abcdef")), [StatusCode.Unauthenticated]),
                ("an unknown session id", raw.Client.Mux(MuxHeaders(raw, "s_unknown", 1 << 20)), [StatusCode.NotFound]),
                ("no session id", raw.Client.Mux(raw.Headers()), [StatusCode.NotFound]),
                ("another HTTP/2 connection", otherConnection.Client.Mux(MuxHeaders(otherConnection, welcome.SessionId, 1 << 20)), [StatusCode.NotFound]),
            };

            foreach (var (what, call, expected) in attempts)
            {
                using (call)
                {
                    var refused = Assert.ThrowsAsync<RpcException>(async () => await call.ResponseStream.MoveNext().DefaultTimeout(), what);
                    Assert.That(refused!.StatusCode, Is.AnyOf(expected.Cast<object>().ToArray()), what);
                }
            }

            // None of them took the session's place: its own call is attached and carries connections.
            using var mux = await AttachMuxAsync(raw, welcome.SessionId);
            await AssertEchoesAsync(relay, mux, "the session's own Mux call works after the refused ones");
        }
    }

    [Test]
    public async Task DataPastTheRelaysWindow_ResetsThatConnection_WithResourceExhausted_AndNothingElse()
    {
        const int MuxWindow = 16 * 1024;
        await using var relay = await StartRelayAsync(o => o.Limits.MuxWindow = MuxWindow);
        await using var good = await GoodAgent.StartAsync(relay);
        using var raw = new RawAgent(relay);
        var (control, welcome) = await HandshakeV2Async(raw);
        using (control)
        {
            Assert.That(welcome.Limits.MuxWindow, Is.EqualTo((uint)MuxWindow));
            using var mux = await AttachMuxAsync(raw, welcome.SessionId);
            using var victim = await relay.ConnectClientAsync(Endpoint);
            var victimId = await mux.NextOpenAsync();
            using var other = await relay.ConnectClientAsync(Endpoint);
            var otherId = await mux.NextOpenAsync();

            // One frame one byte over the window the relay announced (the frame itself is under MaxFrameSize).
            await mux.SendDataAsync(victimId, new byte[MuxWindow + 1]);

            var reset = await mux.NextAsync(victimId, f => f.Reset is not null);
            var wasReset = await WaitForResetAsync(victim);
            await AssertEchoesAsync(relay, mux, "a new connection on the same call");
            var payload = SocketTestExtensions.RandomBytes(1000);
            await other.SendAllAsync(payload).DefaultTimeout();
            await mux.SendDataAsync(otherId, await mux.ReadDataAsync(otherId, payload.Length));
            var echoed = new byte[payload.Length];
            await ReceiveExactlyAsync(other, echoed);
            await good.AssertServesAsync();

            Assert.Multiple(() =>
            {
                Assert.That(reset.Reset.Code, Is.EqualTo((uint)StatusCode.ResourceExhausted), $"the reset's status ({reset.Reset.Message})");
                Assert.That(wasReset, Is.True, "the public client of the overrun connection sees a reset");
                Assert.That(echoed, Is.EqualTo(payload), "the call's other open connection keeps working");
                Assert.That(mux.Reading.IsCompleted, Is.False, "the Mux call lives on");
                Assert.That(relay.Server.SessionCount, Is.EqualTo(2), "both sessions live on");
            });
        }
    }

    [Test]
    public async Task OpenFrameFromTheAgent_EndsItsMuxCall_TheSessionAndControlStreamSurvive()
    {
        await using var relay = await StartRelayAsync();
        await using var good = await GoodAgent.StartAsync(relay);
        using var raw = new RawAgent(relay);
        var (control, welcome) = await HandshakeV2Async(raw);
        using (control)
        {
            using var mux = await AttachMuxAsync(raw, welcome.SessionId);
            await AssertEchoesAsync(relay, mux, "the call works before");
            using var live = await relay.ConnectClientAsync(Endpoint);
            await mux.NextOpenAsync();
            var errorsBefore = relay.Server.Counters.ProtocolErrors;

            await mux.SendAsync(new StreamFrame { ConnectionId = 1000, Open = new OpenStream { StreamId = "forged", BindId = "b1", EndpointName = Endpoint } });
            var status = await mux.Reading.DefaultTimeout();
            var liveWasEnded = await live.WaitForCloseAsync().DefaultTimeout();

            // The control stream answers, and the session's next connection comes by OpenStream (no Mux call now).
            await control.RequestStream.WriteAsync(new AgentMessage { Heartbeat = new Heartbeat { Sequence = 7 } }).DefaultTimeout();
            var ack = await RawAgent.NextAsync(control, RelayMessage.KindOneofCase.HeartbeatAck);
            using var later = await relay.ConnectClientAsync(Endpoint);
            var offer = (await RawAgent.NextAsync(control, RelayMessage.KindOneofCase.OpenStream)).OpenStream;
            using var stream = raw.OpenStream(welcome.SessionId, offer.StreamId);
            await stream.RequestStream.WriteAsync(new StreamFrame { Data = ByteString.CopyFromUtf8("by stream") }).DefaultTimeout();
            var viaStream = new byte[9];
            await ReceiveExactlyAsync(later, viaStream);
            await good.AssertServesAsync();

            Assert.Multiple(() =>
            {
                Assert.That(ack.HeartbeatAck.Sequence, Is.EqualTo(7ul), "the control stream survives");
                Assert.That(relay.Server.SessionCount, Is.EqualTo(2), "the session survives");
                Assert.That(liveWasEnded, Is.True, "the connection that was on the call is ended");
                Assert.That(viaStream, Is.EqualTo("by stream"u8.ToArray()), "later connections fall back to Stream calls");
                Assert.That(relay.Server.Counters.ProtocolErrors, Is.GreaterThan(errorsBefore), "the violation is counted");
                Assert.That(status, Is.Not.Null, "the Mux call ends with an error status for the violation, not with OK");
                Assert.That(status?.StatusCode, Is.EqualTo(StatusCode.InvalidArgument), "the Mux call ends with INVALID_ARGUMENT, as a Stream call that breaks the protocol does");
            });
        }
    }

    [Test]
    public async Task FramesForUnknownConnectionIds_AreIgnored()
    {
        await using var relay = await StartRelayAsync();
        using var raw = new RawAgent(relay);
        var (control, welcome) = await HandshakeV2Async(raw);
        using (control)
        {
            using var mux = await AttachMuxAsync(raw, welcome.SessionId);
            using var live = await relay.ConnectClientAsync(Endpoint);
            var liveId = await mux.NextOpenAsync();
            foreach (var id in new ulong[] { 0, liveId + 1, liveId + 1000, ulong.MaxValue })
            {
                await mux.SendAsync(new StreamFrame { ConnectionId = id, Data = ByteString.CopyFrom(new byte[1000]) });
                await mux.SendAsync(new StreamFrame { ConnectionId = id, Window = uint.MaxValue });
                await mux.SendAsync(new StreamFrame { ConnectionId = id, HalfClose = true, Close = true });
                await mux.SendAsync(new StreamFrame { ConnectionId = id, Reset = new StreamReset { Code = 13, Message = "x" } });
            }

            await mux.SendDataAsync(liveId, "still here"u8.ToArray());
            var received = new byte[10];
            await ReceiveExactlyAsync(live, received);
            await AssertEchoesAsync(relay, mux, "new connections open on the call (the next id was not taken by the frames for it)");
            Assert.Multiple(() =>
            {
                Assert.That(received, Is.EqualTo("still here"u8.ToArray()));
                Assert.That(mux.Reading.IsCompleted, Is.False, "the call lives on");
            });
        }
    }

    [Test]
    public async Task AgentThatNeverReadsNorGrants_BackpressuresThePublicClient_AndBoundsTheRelaysMemory()
    {
        const long Push = 100L * 1024 * 1024;
        await using var relay = await StartRelayAsync();
        await using var good = await GoodAgent.StartAsync(relay);
        using var raw = new RawAgent(relay);
        var (control, welcome) = await HandshakeV2Async(raw);
        using (control)
        {
            // The smallest window the relay accepts; the agent never grants more and never answers a byte (its gRPC
            // client takes the call's frames off the wire, which is all it does).
            using var mux = await AttachMuxAsync(raw, welcome.SessionId, window: 16 * 1024);
            await AssertEchoesAsync(relay, mux, "the call is attached");
            var heapBefore = GC.GetTotalMemory(forceFullCollection: true);
            using var client = await relay.ConnectClientAsync(Endpoint);
            var id = await mux.NextOpenAsync();

            var chunk = new byte[64 * 1024];
            long sent = 0;
            while (sent < Push)
            {
                using var stalled = new CancellationTokenSource(TimeSpan.FromSeconds(3));
                try
                {
                    sent += await client.SendAsync(chunk, SocketFlags.None, stalled.Token);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }

            var heapAfter = GC.GetTotalMemory(forceFullCollection: true);
            await good.AssertServesAsync();
            var delivered = mux.All.Where(f => f.ConnectionId == id).Sum(f => (long)f.Data.Length);
            TestContext.Out.WriteLine($"the public client sent {sent:N0} bytes before it stalled, the agent got {delivered:N0}; relay heap {heapBefore:N0} -> {heapAfter:N0}");
            Assert.Multiple(() =>
            {
                Assert.That(delivered, Is.LessThanOrEqualTo(16 * 1024), "the relay sent no more than the window the agent announced");
                Assert.That(sent, Is.LessThan(32L * 1024 * 1024), "the client is backpressured: window + socket buffers, not 100 MiB");
                Assert.That(heapAfter - heapBefore, Is.LessThan(16L * 1024 * 1024), "the relay does not buffer what the agent does not take");
            });
        }
    }

    [Test]
    public async Task AgentResettingItsMuxCall_UnderLiveConnections_EndsEveryClientPromptly_AndLaterConnectionsStillWork()
    {
        await using var relay = await StartRelayAsync();
        await using var good = await GoodAgent.StartAsync(relay);
        using var raw = new RawAgent(relay);
        var (control, welcome) = await HandshakeV2Async(raw);
        using (control)
        {
            var mux = await AttachMuxAsync(raw, welcome.SessionId);
            var clients = new List<Socket>();
            try
            {
                for (var i = 0; i < 8; i++)
                {
                    var client = await relay.ConnectClientAsync(Endpoint);
                    clients.Add(client);
                    var id = await mux.NextOpenAsync();
                    await client.SendAllAsync(new byte[] { (byte)i }).DefaultTimeout();
                    await mux.SendDataAsync(id, await mux.ReadDataAsync(id, 1));
                    var one = new byte[1];
                    await ReceiveExactlyAsync(client, one);
                }

                // Half of them have data in flight both ways when the call dies.
                for (var i = 0; i < 4; i++)
                {
                    await clients[i].SendAllAsync(new byte[100_000]).DefaultTimeout();
                }

                var watch = Stopwatch.StartNew();
                mux.Dispose();
                var ended = await Task.WhenAll(clients.Select(c => c.WaitForCloseAsync())).DefaultTimeout();
                var elapsed = watch.Elapsed;

                using var later = await relay.ConnectClientAsync(Endpoint);
                var offer = (await RawAgent.NextAsync(control, RelayMessage.KindOneofCase.OpenStream)).OpenStream;
                using var stream = raw.OpenStream(welcome.SessionId, offer.StreamId);
                await stream.RequestStream.WriteAsync(new StreamFrame { Data = ByteString.CopyFromUtf8("fallback") }).DefaultTimeout();
                var viaStream = new byte[8];
                await ReceiveExactlyAsync(later, viaStream);

                using var again = await AttachMuxAsync(raw, welcome.SessionId);
                await AssertEchoesAsync(relay, again, "a new Mux call for the session works");
                await good.AssertServesAsync();

                Assert.Multiple(() =>
                {
                    Assert.That(ended, Has.All.True, "every public client on the call is closed or reset");
                    Assert.That(elapsed, Is.LessThan(TimeSpan.FromSeconds(5)), "promptly");
                    Assert.That(viaStream, Is.EqualTo("fallback"u8.ToArray()), "the next connection comes by OpenStream on the control stream");
                    Assert.That(relay.Server.SessionCount, Is.EqualTo(2), "the session survives its data call");
                });
            }
            finally
            {
                mux.Dispose();
                foreach (var client in clients)
                {
                    client.Dispose();
                }
            }
        }
    }

    /// <summary>
    /// Protocol: "data, then at most one frame with half_close". The relay queues every half_close frame of a connection
    /// for its bridge as a frame of 0 bytes, which neither the connection's window nor the call's buffer budget counts;
    /// while the bridge waits on a public client that does not read, a hostile agent can make the relay hold any number
    /// of them (4 bytes of frame each on the wire, an object each in the relay's heap).
    /// </summary>
    [Test]
    public async Task RepeatedHalfCloses_WhileThePublicClientDoesNotRead_DoNotGrowTheRelaysMemory()
    {
        const int MuxWindow = 256 * 1024;
        const int Repeats = 400_000;
        await using var relay = await StartRelayAsync(o => o.Limits.MuxWindow = MuxWindow);
        await using var good = await GoodAgent.StartAsync(relay);
        using var raw = new RawAgent(relay);
        var (control, welcome) = await HandshakeV2Async(raw);
        using (control)
        {
            using var mux = await AttachMuxAsync(raw, welcome.SessionId);
            using var client = await relay.ConnectClientAsync(Endpoint);
            client.ReceiveBufferSize = 64 * 1024;
            var id = await mux.NextOpenAsync();
            using var marker = await relay.ConnectClientAsync(Endpoint);
            var markerId = await mux.NextOpenAsync();

            // Fill the path to the client (which never reads) until the relay stops granting credit: its bridge then
            // waits on the client's socket and reads nothing more of the connection.
            long credit = MuxWindow, sent = 0;
            var frame = new byte[16 * 1024];
            while (true)
            {
                while (credit >= frame.Length)
                {
                    await mux.SendDataAsync(id, frame);
                    credit -= frame.Length;
                    sent += frame.Length;
                }

                var grant = mux.NextAsync(id, f => f.Window > 0);
                if (await Task.WhenAny(grant, Task.Delay(TimeSpan.FromSeconds(2))) != grant)
                {
                    break;
                }

                credit += (await grant).Window;
                Assert.That(sent, Is.LessThan(256L * 1024 * 1024), "the relay stopped granting at some point");
            }

            var heapBefore = GC.GetTotalMemory(forceFullCollection: true);
            // Many to a message, as a batching peer would send them.
            var halfCloses = new StreamFrames();
            for (var i = 0; i < 1000; i++)
            {
                halfCloses.Frames.Add(new StreamFrame { ConnectionId = id, HalfClose = true });
            }

            for (var i = 0; i < Repeats; i += 1000)
            {
                await mux.Call.RequestStream.WriteAsync(halfCloses);
            }

            // Then a reset of the marker connection: once its client sees it, the relay has read every frame before it.
            await mux.SendAsync(new StreamFrame { ConnectionId = markerId, Reset = new StreamReset { Code = (uint)StatusCode.Aborted, Message = "marker" } });
            Assert.That(await marker.WaitForCloseAsync().DefaultTimeout(), Is.True, "the marker connection ended");
            await good.AssertServesAsync();
            var heapAfter = GC.GetTotalMemory(forceFullCollection: true);
            TestContext.Out.WriteLine($"{sent:N0} bytes filled the path; the relay's heap {heapBefore:N0} -> {heapAfter:N0} after {Repeats:N0} half_close frames");
            Assert.That(heapAfter - heapBefore, Is.LessThan(8L * 1024 * 1024),
                $"{Repeats:N0} repeated half_close frames ({Repeats * 4L:N0} bytes of frames) must not grow the relay's heap");
        }
    }
}
