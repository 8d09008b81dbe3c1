using System.Security.Cryptography;
using Google.Protobuf;
using Grpc.Core;
using SiteLink.Internal;
using SiteLink.Protocol.V1;

namespace SiteLink.Sdk.Tests;

/// <summary>
/// Flow control and connection semantics of the multiplexed data call (protocol version 2), over an in-memory pair of
/// multiplexers (relay end opens, agent end accepts) whose frames go through the real codec; and the agent's end
/// against a hostile relay that writes raw frames.
/// </summary>
[TestFixture]
[Category("Multiplexing")]
public sealed class MultiplexerTests
{
    private const int Window = 64 * 1024;
    private const int FrameSize = 16 * 1024;
    private static readonly TimeSpan Timeout = MuxTestPair.Timeout;

    private static MuxSettings Settings(int window = Window, int frame = FrameSize, long budget = 16 * Window, int connections = 64) =>
        new(window, window, frame, budget, connections);

    private static DataFrame WithHalfClose(byte[] data)
    {
        var frame = DataFrame.ForData(data);
        frame.HalfClose = true;
        return frame;
    }

    private static MuxTestPair Pair(long budget = 16 * Window) => new(Settings(budget: budget), Settings(budget: budget));

    // ----------------------------------------------------------------------------------------------------------------
    // Flow control
    // ----------------------------------------------------------------------------------------------------------------

    [Test]
    public async Task Sender_StopsAtThePeersWindow_AndResumesWhenTheReaderConsumes()
    {
        await using var pair = Pair();
        var (relay, agent) = await pair.OpenAsync("s1");
        var payload = RandomNumberGenerator.GetBytes(3 * Window + 1000);

        var writing = relay.WriteAsync(DataFrame.ForData(payload));
        await MuxTestExtensions.WaitUntilAsync(() => agent.Buffered == Window, "the agent holds one window");

        Assert.Multiple(() =>
        {
            Assert.That(writing.IsCompleted, Is.False, "the sender waits for credit");
            Assert.That(pair.ToAgent.DataBytesWritten, Is.EqualTo(Window), "exactly one window was sent");
            Assert.That(pair.Agent.BufferedBytes, Is.EqualTo(Window));
            Assert.That(pair.AgentErrors, Is.Empty);
        });

        var received = await agent.ReadExactlyAsync(payload.Length);
        await writing.WaitAsync(Timeout);

        Assert.Multiple(() =>
        {
            Assert.That(received, Is.EqualTo(payload), "every byte, in order");
            Assert.That(pair.ToAgent.Written.Where(f => f.ConnectionId == relay.Id).Max(f => f.Data.Length), Is.LessThanOrEqualTo(FrameSize));
            Assert.That(pair.ToRelay.Written.Sum(f => (long)f.Window), Is.GreaterThanOrEqualTo(2 * Window), "credit came back as the agent read");
            Assert.That(pair.AgentErrors.Concat(pair.RelayErrors), Is.Empty);
        });
    }

    [Test]
    public async Task StalledConnection_HoldsAtMostItsWindow_WhileASecondConnectionMovesMegabytes()
    {
        const int Megabytes = 8 * 1024 * 1024;
        await using var pair = Pair();
        var (stalledRelay, stalledAgent) = await pair.OpenAsync("stalled");
        var (relay, agent) = await pair.OpenAsync("busy");

        // Both directions stall on the first connection: nobody reads it at either end.
        var stalledDown = stalledRelay.WriteAsync(DataFrame.ForData(new byte[4 * Window]));
        var stalledUp = stalledAgent.WriteAsync(DataFrame.ForData(new byte[4 * Window]));
        await MuxTestExtensions.WaitUntilAsync(() => stalledAgent.Buffered == Window && stalledRelay.Buffered == Window, "the stalled connection holds a window at each end");

        var down = RandomNumberGenerator.GetBytes(Megabytes);
        var up = RandomNumberGenerator.GetBytes(Megabytes);
        long peakAgent = 0, peakRelay = 0;
        var downWrite = relay.WriteAsync(WithHalfClose(down));
        // Half-closes only: a close says the sender is finished with the connection, after which the peer may send
        // nothing more (docs/protocol.md), while this test's two directions end independently.
        var upWrite = Task.Run(async () => await agent.WriteAsync(WithHalfClose(up)));
        var downRead = Task.Run(async () =>
        {
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            while (await agent.MoveNext(CancellationToken.None))
            {
                hash.AppendData(agent.Current.Data.Span);
                agent.Current.Release();
                peakAgent = Math.Max(peakAgent, pair.Agent.BufferedBytes);
                if (agent.Current.HalfClose)
                {
                    break;
                }
            }

            return hash.GetHashAndReset();
        });
        var upRead = Task.Run(async () =>
        {
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            while (await relay.MoveNext(CancellationToken.None))
            {
                hash.AppendData(relay.Current.Data.Span);
                relay.Current.Release();
                peakRelay = Math.Max(peakRelay, pair.Relay.BufferedBytes);
                if (relay.Current.HalfClose)
                {
                    break;
                }
            }

            return hash.GetHashAndReset();
        });

        var downHash = await downRead.WaitAsync(Timeout);
        var upHash = await upRead.WaitAsync(Timeout);
        await Task.WhenAll(downWrite, upWrite).WaitAsync(Timeout);

        Assert.Multiple(() =>
        {
            Assert.That(downHash, Is.EqualTo(SHA256.HashData(down)), "relay to agent: SHA-256 of 8 MiB");
            Assert.That(upHash, Is.EqualTo(SHA256.HashData(up)), "agent to relay: SHA-256 of 8 MiB");
            Assert.That(stalledAgent.Buffered, Is.EqualTo(Window), "the stalled connection still holds exactly one window at the agent");
            Assert.That(stalledRelay.Buffered, Is.EqualTo(Window), "and at the relay");
            Assert.That(stalledDown.IsCompleted || stalledUp.IsCompleted, Is.False, "its writers still wait for credit");
            Assert.That(peakAgent, Is.LessThanOrEqualTo(3 * Window), "the agent held at most a window per connection");
            Assert.That(peakRelay, Is.LessThanOrEqualTo(3 * Window), "the relay held at most a window per connection");
            Assert.That(pair.AgentErrors.Concat(pair.RelayErrors), Is.Empty);
        });

        // Releasing the stalled connection fails its waiting writers instead of leaving them for ever.
        stalledRelay.Dispose();
        stalledAgent.Dispose();
        Assert.ThrowsAsync<RpcException>(async () => await stalledDown.WaitAsync(Timeout));
        Assert.ThrowsAsync<RpcException>(async () => await stalledUp.WaitAsync(Timeout));
    }

    // ----------------------------------------------------------------------------------------------------------------
    // half_close, close, reset: the semantics of a Stream call
    // ----------------------------------------------------------------------------------------------------------------

    [Test]
    public async Task HalfCloseThenClose_EndTheStream_AsAStreamCallWould()
    {
        await using var pair = Pair();
        var (relay, agent) = await pair.OpenAsync("s1");

        await relay.WriteAsync(WithHalfClose("hello"u8.ToArray())).WaitAsync(Timeout);
        Assert.That(await agent.MoveNext(CancellationToken.None).WaitAsync(Timeout), Is.True);
        Assert.Multiple(() =>
        {
            Assert.That(agent.Current.Data.ToArray(), Is.EqualTo("hello"u8.ToArray()));
            Assert.That(agent.Current.HalfClose, Is.True, "the half_close arrives with the last data");
        });

        // The other direction still works after the relay's half_close.
        await agent.WriteAsync(DataFrame.ForData("world"u8.ToArray())).WaitAsync(Timeout);
        await agent.WriteAsync(new DataFrame { HalfClose = true }).WaitAsync(Timeout);
        await agent.CompleteAsync().WaitAsync(Timeout);
        var (upData, upHalfCloses) = await relay.ReadToEndAsync();
        Assert.Multiple(() =>
        {
            Assert.That(upData, Is.EqualTo("world"u8.ToArray()));
            Assert.That(upHalfCloses, Is.EqualTo(1));
        });

        await relay.FinishAsync(null).WaitAsync(Timeout);
        Assert.Multiple(async () =>
        {
            Assert.That(await agent.MoveNext(CancellationToken.None).WaitAsync(Timeout), Is.False, "close ends the stream");
            Assert.That(await agent.MoveNext(CancellationToken.None).WaitAsync(Timeout), Is.False, "and it stays ended");
            Assert.That(await relay.MoveNext(CancellationToken.None).WaitAsync(Timeout), Is.False);
        });

        relay.Dispose();
        agent.Dispose();
        await MuxTestExtensions.WaitUntilAsync(() => pair.Relay.Count == 0 && pair.Agent.Count == 0, "both ends released the connection");
        Assert.Multiple(() =>
        {
            Assert.That(pair.ToAgent.Written.Count(f => f.Reset is not null), Is.Zero, "a connection closed both ways is not reset");
            Assert.That(pair.ToRelay.Written.Count(f => f.Reset is not null), Is.Zero, "a connection closed both ways is not reset");
            Assert.That(pair.Relay.IsOver || pair.Agent.IsOver, Is.False, "the call lives on");
        });
    }

    [Test]
    public async Task Reset_FailsTheReaderAndTheWriter_WithTheResetsStatus()
    {
        await using var pair = Pair();
        var (relay, agent) = await pair.OpenAsync("s1");
        await relay.WriteAsync(DataFrame.ForData(new byte[100])).WaitAsync(Timeout);
        await MuxTestExtensions.WaitUntilAsync(() => agent.Buffered == 100, "the data arrived");

        await relay.FinishAsync(new Status(StatusCode.PermissionDenied, "not for you")).WaitAsync(Timeout);
        await MuxTestExtensions.WaitUntilAsync(() => pair.Agent.BufferedBytes == 0, "the reset arrived and dropped the unread data");

        var read = Assert.ThrowsAsync<RpcException>(async () => await agent.MoveNext(CancellationToken.None).WaitAsync(Timeout));
        var write = Assert.ThrowsAsync<RpcException>(async () => await agent.WriteAsync(DataFrame.ForData(new byte[10])).WaitAsync(Timeout));
        Assert.Multiple(() =>
        {
            Assert.That(read!.StatusCode, Is.EqualTo(StatusCode.PermissionDenied));
            Assert.That(read.Status.Detail, Is.EqualTo("not for you"));
            Assert.That(write!.StatusCode, Is.EqualTo(StatusCode.PermissionDenied));
        });
    }

    [TestCase(0u)]
    [TestCase(17u)]
    [TestCase(uint.MaxValue)]
    public async Task ResetWithACodeThatIsNoGrpcError_IsUnknown(uint code)
    {
        await using var pair = Pair();
        var (relay, agent) = await pair.OpenAsync("s1");
        pair.ToAgent.Inject(new StreamFrame { ConnectionId = relay.Id, Reset = new StreamReset { Code = code, Message = "odd\u0000\u001b[31m" } });

        var read = Assert.ThrowsAsync<RpcException>(async () => await agent.MoveNext(CancellationToken.None).WaitAsync(Timeout));
        Assert.Multiple(() =>
        {
            Assert.That(read!.StatusCode, Is.EqualTo(StatusCode.Unknown), "never OK, never out of range");
            Assert.That(read.Status.Detail.Any(char.IsControl), Is.False, "the peer's text is cleaned");
        });
    }

    [Test]
    public async Task CallFailure_FailsEveryConnection_AndReleasesWhatTheyHeld()
    {
        await using var pair = Pair();
        var connections = new List<(MuxConnection Relay, MuxConnection Agent)>();
        for (var i = 0; i < 3; i++)
        {
            connections.Add(await pair.OpenAsync($"s{i}"));
        }

        await connections[0].Relay.WriteAsync(DataFrame.ForData(new byte[Window])).WaitAsync(Timeout);
        var reading = connections[1].Agent.MoveNext(CancellationToken.None);
        var writing = connections[2].Agent.WriteAsync(DataFrame.ForData(new byte[3 * Window]));
        await MuxTestExtensions.WaitUntilAsync(() => pair.Agent.BufferedBytes == Window && pair.Relay.BufferedBytes == Window, "data held at both ends");

        pair.ToAgent.Complete(new RpcException(new Status(StatusCode.Unavailable, "the connection to the relay died")));
        await pair.AgentRun.WaitAsync(Timeout);

        Assert.ThrowsAsync<RpcException>(async () => await reading.WaitAsync(Timeout));
        Assert.ThrowsAsync<RpcException>(async () => await writing.WaitAsync(Timeout));
        Assert.ThrowsAsync<RpcException>(async () => await connections[0].Agent.MoveNext(CancellationToken.None).WaitAsync(Timeout));
        Assert.Multiple(() =>
        {
            Assert.That(pair.Agent.IsOver, Is.True);
            Assert.That(pair.Agent.Count, Is.Zero);
            Assert.That(pair.Agent.BufferedBytes, Is.Zero, "every buffer went back to the pool");
        });
    }

    // ----------------------------------------------------------------------------------------------------------------
    // A hostile peer (raw frames written to the agent's end)
    // ----------------------------------------------------------------------------------------------------------------

    /// <summary>The agent's end alone, read from a link the test writes raw frames into.</summary>
    private sealed class HostileRelay : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop = new();

        public HostileRelay(MuxSettings settings)
        {
            Agent = new Multiplexer(FromAgent, settings, opens: false)
            {
                ProtocolError = Errors.Enqueue,
                Accepted = (connection, _) => Accepted.Writer.TryWrite(connection),
            };
            Run = Agent.RunAsync(ToAgent, _stop.Token);
        }

        public MuxTestLink ToAgent { get; } = new();

        public MuxTestLink FromAgent { get; } = new();

        public Multiplexer Agent { get; }

        public Task Run { get; }

        public System.Threading.Channels.Channel<MuxConnection> Accepted { get; } = System.Threading.Channels.Channel.CreateUnbounded<MuxConnection>();

        public System.Collections.Concurrent.ConcurrentQueue<string> Errors { get; } = new();

        public async Task<MuxConnection> OpenAsync(ulong id, ByteString? data = null)
        {
            ToAgent.Inject(new StreamFrame { ConnectionId = id, Open = new OpenStream { StreamId = $"s{id}", BindId = "b1", EndpointName = "db" }, Data = data ?? ByteString.Empty });
            return await Accepted.Reader.ReadAsync().AsTask().WaitAsync(Timeout);
        }

        public void Send(ulong id, int bytes, bool halfClose = false) =>
            ToAgent.Inject(new StreamFrame { ConnectionId = id, Data = ByteString.CopyFrom(new byte[bytes]), HalfClose = halfClose });

        public StreamFrame[] ResetsFor(ulong id) => FromAgent.Written.Where(f => f.ConnectionId == id && f.Reset is not null).ToArray();

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            ToAgent.Complete();
            await Run.WaitAsync(Timeout);
            _stop.Dispose();
        }
    }

    [Test]
    public async Task CreditOverrun_ResetsOnlyThatConnection()
    {
        await using var relay = new HostileRelay(Settings());
        var victim = await relay.OpenAsync(1);
        var other = await relay.OpenAsync(2);

        // A full window, then one byte more without credit.
        for (var sent = 0; sent < Window; sent += FrameSize)
        {
            relay.Send(1, FrameSize);
        }

        relay.Send(1, 1);
        relay.Send(2, 1000);
        Assert.That(await other.MoveNext(CancellationToken.None).WaitAsync(Timeout), Is.True);

        var failure = Assert.ThrowsAsync<RpcException>(async () => await victim.MoveNext(CancellationToken.None).WaitAsync(Timeout));
        var resets = relay.ResetsFor(1);
        Assert.Multiple(() =>
        {
            Assert.That(failure!.StatusCode, Is.EqualTo(StatusCode.ResourceExhausted));
            Assert.That(resets, Has.Length.EqualTo(1), "the agent resets the connection towards the relay");
            Assert.That(resets.Select(r => r.Reset.Code), Has.All.EqualTo((uint)StatusCode.ResourceExhausted));
            Assert.That(other.Current.Data.Length, Is.EqualTo(1000), "the other connection is untouched");
            Assert.That(relay.ResetsFor(2), Is.Empty);
            Assert.That(relay.Agent.IsOver, Is.False, "the call lives on");
            Assert.That(relay.Agent.BufferedBytes, Is.Zero, "the victim's window was released (the other's frame was handed out)");
        });
    }

    [Test]
    public async Task OversizedFrame_ResetsOnlyThatConnection()
    {
        await using var relay = new HostileRelay(Settings());
        var victim = await relay.OpenAsync(1);
        var other = await relay.OpenAsync(2);

        relay.Send(1, FrameSize + 1);
        relay.Send(2, FrameSize);

        Assert.That(await other.MoveNext(CancellationToken.None).WaitAsync(Timeout), Is.True);
        var failure = Assert.ThrowsAsync<RpcException>(async () => await victim.MoveNext(CancellationToken.None).WaitAsync(Timeout));
        Assert.Multiple(() =>
        {
            Assert.That(failure!.StatusCode, Is.EqualTo(StatusCode.ResourceExhausted));
            Assert.That(relay.ResetsFor(1), Has.Length.EqualTo(1));
            Assert.That(relay.ResetsFor(2), Is.Empty);
            Assert.That(relay.Agent.IsOver, Is.False);
        });
    }

    [Test]
    public async Task OversizedOpeningFrame_ResetsThatConnection_AndNothingElse()
    {
        await using var relay = new HostileRelay(Settings());
        var other = await relay.OpenAsync(1);
        var victim = await relay.OpenAsync(2, ByteString.CopyFrom(new byte[Window + 1]));

        var failure = Assert.ThrowsAsync<RpcException>(async () => await victim.MoveNext(CancellationToken.None).WaitAsync(Timeout));
        relay.Send(1, 10);
        Assert.That(await other.MoveNext(CancellationToken.None).WaitAsync(Timeout), Is.True);
        Assert.Multiple(() =>
        {
            Assert.That(failure!.StatusCode, Is.EqualTo(StatusCode.ResourceExhausted));
            Assert.That(relay.Agent.Count, Is.EqualTo(1), "the reset connection left the call");
            Assert.That(relay.Agent.IsOver, Is.False);
        });
    }

    [Test]
    public async Task FramesForUnknownConnectionIds_AreIgnored()
    {
        await using var relay = new HostileRelay(Settings());
        var live = await relay.OpenAsync(1);
        var before = relay.FromAgent.Written.Count;

        foreach (var id in new ulong[] { 0, 2, 99, ulong.MaxValue })
        {
            relay.ToAgent.Inject(new StreamFrame { ConnectionId = id, Data = ByteString.CopyFrom(new byte[FrameSize]) });
            relay.ToAgent.Inject(new StreamFrame { ConnectionId = id, Window = uint.MaxValue });
            relay.ToAgent.Inject(new StreamFrame { ConnectionId = id, HalfClose = true, Close = true });
            relay.ToAgent.Inject(new StreamFrame { ConnectionId = id, Reset = new StreamReset { Code = 13, Message = "x" } });
        }

        relay.Send(1, 5);
        Assert.That(await live.MoveNext(CancellationToken.None).WaitAsync(Timeout), Is.True);
        Assert.Multiple(() =>
        {
            Assert.That(live.Current.Data.Length, Is.EqualTo(5), "the live connection is untouched");
            Assert.That(relay.Agent.UnknownFrames, Is.EqualTo(16));
            Assert.That(relay.Agent.IsOver, Is.False);
            Assert.That(relay.Agent.Count, Is.EqualTo(1));
            Assert.That(relay.Agent.BufferedBytes, Is.Zero, "nothing of the unknown ids is held (the live frame was handed out)");
            Assert.That(relay.FromAgent.Written.Count, Is.EqualTo(before), "nothing is answered to them");
        });
    }

    [TestCase(5ul, "reused")]
    [TestCase(4ul, "lower")]
    [TestCase(0ul, "zero")]
    public async Task OpenWithAnIdUsedBefore_EndsTheCall(ulong id, string what)
    {
        await using var relay = new HostileRelay(Settings());
        var first = await relay.OpenAsync(5);
        relay.Send(5, 100);
        await MuxTestExtensions.WaitUntilAsync(() => relay.Agent.BufferedBytes == 100, "data held");

        relay.ToAgent.Inject(new StreamFrame { ConnectionId = id, Open = new OpenStream { StreamId = what, BindId = "b1", EndpointName = "db" } });
        await relay.Run.WaitAsync(Timeout);

        var failure = Assert.ThrowsAsync<RpcException>(async () => await first.MoveNext(CancellationToken.None).WaitAsync(Timeout));
        Assert.Multiple(() =>
        {
            Assert.That(relay.Agent.IsOver, Is.True, $"a {what} id ends the call");
            Assert.That(failure!.StatusCode, Is.EqualTo(StatusCode.InvalidArgument));
            Assert.That(relay.Accepted.Reader.Count, Is.Zero, "the second open was not accepted");
            Assert.That(relay.Agent.Count, Is.Zero);
            Assert.That(relay.Agent.BufferedBytes, Is.Zero);
            Assert.That(relay.Errors, Is.Not.Empty, "the violation is reported");
        });
    }

    [Test]
    public async Task OpenFromTheAgent_EndsTheRelaysCall()
    {
        await using var pair = Pair();
        var (relay, _) = await pair.OpenAsync("s1");
        pair.ToRelay.Inject(new StreamFrame { ConnectionId = 1000, Open = new OpenStream { StreamId = "forged" } });
        await pair.RelayRun.WaitAsync(Timeout);

        var failure = Assert.ThrowsAsync<RpcException>(async () => await relay.MoveNext(CancellationToken.None).WaitAsync(Timeout));
        Assert.Multiple(() =>
        {
            Assert.That(pair.Relay.IsOver, Is.True);
            Assert.That(failure!.StatusCode, Is.EqualTo(StatusCode.InvalidArgument));
            Assert.That(pair.RelayErrors, Is.Not.Empty);
            Assert.That(pair.Relay.Open(new OpenStream { StreamId = "later" }), Is.Null, "nothing more opens on an ended call");
        });
    }

    [Test]
    public async Task OpensPastMaxConnections_AreResetWithResourceExhausted_AndTheCallLivesOn()
    {
        await using var relay = new HostileRelay(Settings(connections: 2));
        var first = await relay.OpenAsync(1);
        await relay.OpenAsync(2);
        relay.ToAgent.Inject(new StreamFrame { ConnectionId = 3, Open = new OpenStream { StreamId = "s3", BindId = "b1", EndpointName = "db" } });
        relay.Send(1, 10);

        Assert.That(await first.MoveNext(CancellationToken.None).WaitAsync(Timeout), Is.True);
        await MuxTestExtensions.WaitUntilAsync(() => relay.ResetsFor(3).Length == 1, "the third open is refused");
        Assert.Multiple(() =>
        {
            Assert.That(relay.ResetsFor(3)[0].Reset.Code, Is.EqualTo((uint)StatusCode.ResourceExhausted));
            Assert.That(relay.Accepted.Reader.Count, Is.Zero);
            Assert.That(relay.Agent.Count, Is.EqualTo(2));
            Assert.That(relay.Agent.IsOver, Is.False);
        });
    }

    // ----------------------------------------------------------------------------------------------------------------
    // The buffer budget
    // ----------------------------------------------------------------------------------------------------------------

    [Test]
    public async Task BufferBudget_PausesReadingTheCall_UntilEnoughIsConsumed()
    {
        // Two full windows reach the budget: the call is not read past them until half of it is consumed.
        await using var relay = new HostileRelay(Settings(budget: 2 * Window));
        var first = await relay.OpenAsync(1);
        var second = await relay.OpenAsync(2);
        var third = await relay.OpenAsync(3);
        for (var sent = 0; sent < Window; sent += FrameSize)
        {
            relay.Send(1, FrameSize);
            relay.Send(2, FrameSize);
        }

        await MuxTestExtensions.WaitUntilAsync(() => relay.Agent.BufferedBytes == 2 * Window, "two windows held");
        var nextRead = relay.ToAgent.NextReadCalled();
        relay.Send(3, 10);
        var paused = await Task.WhenAny(nextRead, Task.Delay(TimeSpan.FromMilliseconds(500))) != nextRead;
        Assert.Multiple(() =>
        {
            Assert.That(paused, Is.True, "the call is not read while the budget is spent");
            Assert.That(relay.ToAgent.Pending, Is.EqualTo(1), "the third connection's frame waits in the call");
            Assert.That(third.Buffered, Is.Zero);
        });

        // Consuming one window is not enough (the budget's half is still held); one frame more is.
        await first.ReadExactlyAsync(Window);
        Assert.That(relay.ToAgent.Pending, Is.EqualTo(1), "still paused at half the budget");
        Assert.That(await second.MoveNext(CancellationToken.None).WaitAsync(Timeout), Is.True);
        Assert.That(await third.MoveNext(CancellationToken.None).WaitAsync(Timeout), Is.True, "reading resumed");
        Assert.That(third.Current.Data.Length, Is.EqualTo(10));
    }

    // ----------------------------------------------------------------------------------------------------------------
    // Suspected holes
    // ----------------------------------------------------------------------------------------------------------------

    /// <summary>
    /// A hostile peer sends a connection's half_close again and again (4 bytes on the wire each). The protocol allows one;
    /// each is queued for the connection's reader as a frame of 0 bytes, which neither the connection's window nor the
    /// buffer budget counts: a connection whose reader is busy (a public client that does not read) holds them all.
    /// </summary>
    [Test]
    public async Task RepeatedHalfCloses_AreNotQueuedWithoutBound()
    {
        const int Repeats = 100_000;
        await using var relay = new HostileRelay(Settings());
        var victim = await relay.OpenAsync(1);
        relay.Send(1, 10, halfClose: true);
        for (var i = 0; i < Repeats; i++)
        {
            relay.ToAgent.Inject(new StreamFrame { ConnectionId = 1, HalfClose = true });
        }

        relay.ToAgent.Inject(new StreamFrame { ConnectionId = 1, Close = true });
        await MuxTestExtensions.WaitUntilAsync(() => relay.ToAgent.Pending == 0, "every frame was dispatched");

        var delivered = 0;
        try
        {
            while (await victim.MoveNext(CancellationToken.None).WaitAsync(Timeout))
            {
                delivered++;
                victim.Current.Release();
            }
        }
        catch (RpcException)
        {
            // Resetting the connection for the repeated half_close is a fine answer too.
        }

        Assert.That(delivered, Is.LessThanOrEqualTo(2),
            $"frames the connection held for its reader after {Repeats} repeated half_close frames (each an object the window does not count)");
    }

    /// <summary>
    /// The relay's <see cref="Multiplexer.Open"/> guards against the call failing between its check and its add; the
    /// agent's accept has no such guard: a frame dispatched as (or after) the call fails adds a connection nobody will
    /// fail, whose reader then waits for ever.
    /// </summary>
    [Test]
    public async Task OpenDispatchedAfterTheCallFailed_LeavesNoLiveConnection()
    {
        var output = new MuxTestLink();
        MuxConnection? accepted = null;
        var agent = new Multiplexer(output, Settings(), opens: false) { Accepted = (connection, _) => accepted = connection };
        agent.Fail(new Status(StatusCode.Unavailable, "the call failed"));

        var frame = DataFrame.Parse(new System.Buffers.ReadOnlySequence<byte>(new StreamFrame { ConnectionId = 1, Open = new OpenStream { StreamId = "late" } }.ToByteArray()));
        agent.Dispatch(frame);

        var read = accepted?.MoveNext(CancellationToken.None);
        Assert.Multiple(() =>
        {
            Assert.That(agent.Count, Is.Zero, "no connection is added to a failed call");
            Assert.That(read is null || read.IsFaulted, Is.True, "a connection accepted on a failed call fails at once (its read does not wait for ever)");
        });
    }

    /// <summary>
    /// A writer waiting for credit when the peer ends the connection: the peer closed (it is finished) and then reset
    /// it (it disposed the connection with data unread), and it will grant no more credit. A Stream call's write fails
    /// once the call ended; here the reset is ignored because it came after the close, and the write waits for ever.
    /// </summary>
    [Test]
    public async Task WriteWaitingForCredit_FailsWhenThePeerClosesAndReleasesTheConnection()
    {
        await using var pair = Pair();
        var (relay, agent) = await pair.OpenAsync("s1");
        var writing = agent.WriteAsync(DataFrame.ForData(new byte[2 * Window]));
        await MuxTestExtensions.WaitUntilAsync(() => relay.Buffered == Window, "the agent spent its credit");

        // The relay is finished with the connection without reading what the agent sent.
        await relay.FinishAsync(null).WaitAsync(Timeout);
        relay.Dispose();
        await MuxTestExtensions.WaitUntilAsync(() => pair.ToAgent.Written.Any(f => f.Reset is not null), "the relay reset the connection when it released it");

        var failure = await Task.WhenAny(writing, Task.Delay(TimeSpan.FromSeconds(5)));
        Assert.That(failure, Is.SameAs(writing), "the agent's write waiting for credit ended once the relay released the connection");
        Assert.That(writing.IsFaulted, Is.True, "and it failed (its data was not delivered)");
    }

    [Test]
    public void OpensPastTheLimit_WhileNoRefusalIsWritten_EndTheCall_InsteadOfQueueingRefusalsWithoutBound()
    {
        // An agent end whose writes never complete (a relay that stops reading): each refused open waits in its queue.
        var agent = new Multiplexer(new StalledWriter(), Settings(connections: 2), opens: false) { Accepted = (_, _) => { } };
        var results = new List<bool>();
        for (ulong id = 1; id <= 5; id++)
        {
            results.Add(agent.Dispatch(new DataFrame { ConnectionId = id, Open = new OpenStream { StreamId = $"s{id}", BindId = "b1", EndpointName = "db" } }));
        }

        // 2 accepted, 2 refusals queued (the limit), then the call is ended rather than a third refusal queued.
        Assert.That(results, Is.EqualTo(new[] { true, true, true, true, false }));
        Assert.That(agent.Count, Is.EqualTo(2));
    }

    private sealed class StalledWriter : IAsyncStreamWriter<MuxBatch>
    {
        public WriteOptions? WriteOptions { get; set; }

        public Task WriteAsync(MuxBatch message) => new TaskCompletionSource().Task;

        public Task WriteAsync(MuxBatch message, CancellationToken cancellationToken) => new TaskCompletionSource().Task;
    }
}
