using System.Buffers;
using System.Collections.Concurrent;
using System.Threading.Channels;
using Google.Protobuf;
using Grpc.Core;
using SiteLink.Internal;
using SiteLink.Protocol.V1;

namespace SiteLink.Sdk.Tests;

/// <summary>
/// One direction of an in-memory multiplexed data call: the writing end serializes every frame with
/// <see cref="DataFrame.ToArray"/> (and records it, parsed by protobuf's generated parser, so the codec is cross-checked
/// on every frame), the reading end parses with <see cref="DataFrame.Parse"/>. Raw frames can be injected to play a
/// hostile peer.
/// </summary>
internal sealed class MuxTestLink : IAsyncStreamWriter<MuxBatch>, IAsyncStreamReader<MuxBatch>
{
    private readonly Channel<byte[]> _channel = Channel.CreateUnbounded<byte[]>();
    private long _dataBytesWritten;
    private int _reads;
    private TaskCompletionSource? _readCalled;

    /// <summary>Every frame written, as protobuf parses it.</summary>
    public ConcurrentQueue<StreamFrame> Written { get; } = new();

    public long DataBytesWritten => Interlocked.Read(ref _dataBytesWritten);

    /// <summary>Frames written and not yet read.</summary>
    public int Pending => _channel.Reader.Count;

    /// <summary>Calls of <see cref="MoveNext"/> so far.</summary>
    public int Reads => Volatile.Read(ref _reads);

    public WriteOptions? WriteOptions { get; set; }

    public MuxBatch Current { get; private set; } = null!;

    /// <summary>A task that completes at the next call of <see cref="MoveNext"/>.</summary>
    public Task NextReadCalled()
    {
        var called = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Volatile.Write(ref _readCalled, called);
        return called.Task;
    }

    public Task WriteAsync(MuxBatch message) => WriteAsync(message, CancellationToken.None);

    public Task WriteAsync(MuxBatch message, CancellationToken cancellationToken)
    {
        var bytes = MuxBatch.ToArray(message);
        foreach (var frame in StreamFrames.Parser.ParseFrom(bytes).Frames)
        {
            Written.Enqueue(frame);
        }

        foreach (var frame in message.Frames)
        {
            Interlocked.Add(ref _dataBytesWritten, frame.Data.Length);
        }

        if (!_channel.Writer.TryWrite(bytes))
        {
            throw new InvalidOperationException("The in-memory call is complete.");
        }

        return Task.CompletedTask;
    }

    /// <summary>A frame a hostile peer sends, written by protobuf's generated serializer.</summary>
    public void Inject(StreamFrame frame)
    {
        if (!_channel.Writer.TryWrite(new StreamFrames { Frames = { frame } }.ToByteArray()))
        {
            throw new InvalidOperationException("The in-memory call is complete.");
        }
    }

    /// <summary>Bytes a hostile peer sends as one frame of a message, whatever they are.</summary>
    public void InjectRaw(byte[] frame)
    {
        var message = new byte[1 + CodedOutputStream.ComputeLengthSize(frame.Length) + frame.Length];
        var output = new CodedOutputStream(message);
        output.WriteTag(1, WireFormat.WireType.LengthDelimited);
        output.WriteBytes(ByteString.CopyFrom(frame));
        output.Flush();
        if (!_channel.Writer.TryWrite(message))
        {
            throw new InvalidOperationException("The in-memory call is complete.");
        }
    }

    /// <summary>Ends the call: the reader sees the end (null) or <paramref name="error"/> thrown by its MoveNext.</summary>
    public void Complete(Exception? error = null) => _channel.Writer.TryComplete(error);

    public async Task<bool> MoveNext(CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _reads);
        Interlocked.Exchange(ref _readCalled, null)?.TrySetResult();
        if (!await _channel.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false) || !_channel.Reader.TryRead(out var bytes))
        {
            return false;
        }

        Current = MuxBatch.Parse(new ReadOnlySequence<byte>(bytes));
        return true;
    }
}

/// <summary>
/// A relay end (opens: true) and an agent end (opens: false) of one multiplexed call, each one's writer linked to the
/// other's reader through a <see cref="MuxTestLink"/>, both read loops running.
/// </summary>
internal sealed class MuxTestPair : IAsyncDisposable
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);

    private readonly CancellationTokenSource _stop = new();

    public MuxTestPair(MuxSettings relay, MuxSettings agent)
    {
        Relay = new Multiplexer(ToAgent, relay, opens: true) { ProtocolError = RelayErrors.Enqueue };
        Agent = new Multiplexer(ToRelay, agent, opens: false)
        {
            ProtocolError = AgentErrors.Enqueue,
            Accepted = (connection, _) => Accepted.Writer.TryWrite(connection),
        };
        RelayRun = Relay.RunAsync(ToRelay, _stop.Token);
        AgentRun = Agent.RunAsync(ToAgent, _stop.Token);
    }

    public MuxTestLink ToAgent { get; } = new();

    public MuxTestLink ToRelay { get; } = new();

    public Multiplexer Relay { get; }

    public Multiplexer Agent { get; }

    public Task RelayRun { get; }

    public Task AgentRun { get; }

    public Channel<MuxConnection> Accepted { get; } = Channel.CreateUnbounded<MuxConnection>();

    public ConcurrentQueue<string> RelayErrors { get; } = new();

    public ConcurrentQueue<string> AgentErrors { get; } = new();

    /// <summary>Opens a connection at the relay's end and returns both ends of it.</summary>
    public async Task<(MuxConnection Relay, MuxConnection Agent)> OpenAsync(string streamId)
    {
        var relay = Relay.Open(new OpenStream { StreamId = streamId, BindId = "b1", EndpointName = "db", ClientAddress = "203.0.113.7:5000" })
            ?? throw new InvalidOperationException("The relay's call is over.");
        await relay.SendOpenAsync(CancellationToken.None).WaitAsync(Timeout);
        var agent = await Accepted.Reader.ReadAsync().AsTask().WaitAsync(Timeout);
        Assert.That(agent.Offer.StreamId, Is.EqualTo(streamId));
        return (relay, agent);
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        ToAgent.Complete();
        ToRelay.Complete();
        await Task.WhenAll(RelayRun, AgentRun).WaitAsync(Timeout);
        _stop.Dispose();
    }
}

internal static class MuxTestExtensions
{
    /// <summary>Polls <paramref name="condition"/> until it holds (fails the test after <see cref="MuxTestPair.Timeout"/>).</summary>
    public static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + MuxTestPair.Timeout;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"Timed out after {MuxTestPair.Timeout}: {what}");
            }

            await Task.Delay(2);
        }
    }

    /// <summary>Reads a connection to its end, releasing every frame; returns the bytes and whether a half_close came.</summary>
    public static async Task<(byte[] Data, int HalfCloses)> ReadToEndAsync(this MuxConnection connection)
    {
        using var collected = new MemoryStream();
        var halfCloses = 0;
        while (await connection.MoveNext(CancellationToken.None).WaitAsync(MuxTestPair.Timeout))
        {
            var frame = connection.Current;
            collected.Write(frame.Data.Span);
            halfCloses += frame.HalfClose ? 1 : 0;
            frame.Release();
        }

        return (collected.ToArray(), halfCloses);
    }

    /// <summary>Reads frames until <paramref name="bytes"/> bytes came; returns them.</summary>
    public static async Task<byte[]> ReadExactlyAsync(this MuxConnection connection, int bytes)
    {
        using var collected = new MemoryStream();
        while (collected.Length < bytes)
        {
            Assert.That(await connection.MoveNext(CancellationToken.None).WaitAsync(MuxTestPair.Timeout), Is.True, "the connection ended early");
            collected.Write(connection.Current.Data.Span);
            connection.Current.Release();
        }

        return collected.ToArray();
    }
}
