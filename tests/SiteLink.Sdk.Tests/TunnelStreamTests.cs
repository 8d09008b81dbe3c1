using System.Threading.Channels;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Time.Testing;
using SiteLink.Internal;
using SiteLink.Protocol.V1;

namespace SiteLink.Sdk.Tests;

[TestFixture]
public sealed class TunnelStreamTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(10);

    // Frames cross the real data-RPC marshaller both ways, checked against protobuf's own StreamFrame.
    private sealed class FakeCall : IClientStreamWriter<DataFrame>, IAsyncStreamReader<DataFrame>, IDisposable
    {
        public Channel<StreamFrame> Incoming { get; } = Channel.CreateUnbounded<StreamFrame>();

        public List<StreamFrame> Written { get; } = [];

        public bool Completed { get; private set; }

        public int Disposed { get; private set; }

        public Exception? ReadFailure { get; set; }

        public DataFrame Current { get; private set; } = null!;

        public WriteOptions? WriteOptions { get; set; }

        public Task WriteAsync(DataFrame message)
        {
            // Serialised now: the stream wraps the caller's buffer, which may be reused once WriteAsync completes.
            Written.Add(StreamFrame.Parser.ParseFrom(DataFrameWire.Serialize(message)));
            return Task.CompletedTask;
        }

        public Task CompleteAsync()
        {
            Completed = true;
            return Task.CompletedTask;
        }

        public async Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            if (ReadFailure is not null)
            {
                throw ReadFailure;
            }

            if (!await Incoming.Reader.WaitToReadAsync(cancellationToken))
            {
                return false;
            }

            Current = DataFrameWire.Deserialize((await Incoming.Reader.ReadAsync(cancellationToken)).ToByteArray());
            return true;
        }

        public void Dispose() => Disposed++;
    }

    private static (TunnelStream Stream, FakeCall Call) Create(int maxFrameSize = 1024, Action? onAbort = null, FakeTimeProvider? time = null)
    {
        var call = new FakeCall();
        var stream = new TunnelStream(call, call, call, maxFrameSize, TimeSpan.FromSeconds(5), time ?? new FakeTimeProvider(), onAbort);
        return (stream, call);
    }

    [Test]
    public async Task ReadAsync_FrameLargerThanBuffer_IsReturnedAcrossReadsInOrder()
    {
        var (stream, call) = Create();
        call.Incoming.Writer.TryWrite(new StreamFrame { Data = ByteString.CopyFrom(1, 2, 3, 4, 5) });
        var buffer = new byte[2];

        var first = await stream.ReadAsync(buffer).AsTask().WaitAsync(Limit);
        var a = buffer[..first].ToArray();
        var second = await stream.ReadAsync(buffer).AsTask().WaitAsync(Limit);
        var b = buffer[..second].ToArray();
        var third = await stream.ReadAsync(buffer).AsTask().WaitAsync(Limit);

        Assert.Multiple(() =>
        {
            Assert.That(a, Is.EqualTo(new byte[] { 1, 2 }));
            Assert.That(b, Is.EqualTo(new byte[] { 3, 4 }));
            Assert.That(buffer[..third], Is.EqualTo(new byte[] { 5 }));
            Assert.That(stream.BytesRead, Is.EqualTo(5));
        });
    }

    [Test]
    public async Task ReadAsync_HalfCloseFrame_DeliversItsDataThenEndOfStreamForever()
    {
        var (stream, call) = Create();
        call.Incoming.Writer.TryWrite(new StreamFrame { Data = ByteString.CopyFrom(7, 8), HalfClose = true });
        var buffer = new byte[16];

        var read = await stream.ReadAsync(buffer).AsTask().WaitAsync(Limit);
        var end = await stream.ReadAsync(buffer).AsTask().WaitAsync(Limit);
        var again = await stream.ReadAsync(buffer).AsTask().WaitAsync(Limit);

        Assert.Multiple(() =>
        {
            Assert.That(read, Is.EqualTo(2));
            Assert.That(end, Is.Zero);
            Assert.That(again, Is.Zero);
        });
    }

    [Test]
    public void ReadAsync_CallFails_ThrowsIOExceptionWithTheStatus()
    {
        var (stream, call) = Create();
        call.ReadFailure = new RpcException(new Status(StatusCode.Aborted, "client went away"));

        var ex = Assert.ThrowsAsync<IOException>(() => stream.ReadAsync(new byte[4]).AsTask().WaitAsync(Limit));

        Assert.That(ex!.Message, Does.Contain("client went away"));
    }

    [Test]
    public async Task WriteAsync_LargerThanMaxFrame_IsSplitIntoFramesInOrder()
    {
        var (stream, call) = Create(maxFrameSize: 4);
        var data = Enumerable.Range(0, 10).Select(i => (byte)i).ToArray();

        await stream.WriteAsync(data).AsTask().WaitAsync(Limit);

        Assert.Multiple(() =>
        {
            Assert.That(call.Written.Select(f => f.Data.Length), Is.EqualTo(new[] { 4, 4, 2 }));
            Assert.That(call.Written.SelectMany(f => f.Data.ToByteArray()), Is.EqualTo(data));
            Assert.That(stream.BytesWritten, Is.EqualTo(10));
        });
    }

    [Test]
    public async Task CompleteWritesAsync_SendsOneHalfCloseAndForbidsFurtherWrites()
    {
        var (stream, call) = Create();

        await stream.CompleteWritesAsync().AsTask().WaitAsync(Limit);
        await stream.CompleteWritesAsync().AsTask().WaitAsync(Limit);

        Assert.Multiple(() =>
        {
            Assert.That(call.Written.Count(f => f.HalfClose), Is.EqualTo(1));
            Assert.ThrowsAsync<InvalidOperationException>(() => stream.WriteAsync(new byte[1]).AsTask());
            Assert.That(call.Completed, Is.False, "half-close keeps the call open for reading");
        });
    }

    [Test]
    public async Task DisposeAsync_CompletesTheCallThenWaitsForTheRelayToFinish()
    {
        var (stream, call) = Create();
        call.Incoming.Writer.TryWrite(new StreamFrame { Data = ByteString.CopyFrom(1) });

        var disposing = stream.DisposeAsync().AsTask();
        await Task.Delay(50);
        var finishedEarly = disposing.IsCompleted;
        call.Incoming.Writer.Complete();
        await disposing.WaitAsync(Limit);

        Assert.Multiple(() =>
        {
            Assert.That(call.Completed, Is.True);
            Assert.That(finishedEarly, Is.False, "a graceful close waits for the relay's end of the call");
            Assert.That(call.Disposed, Is.EqualTo(1));
        });
    }

    [Test]
    public async Task DisposeAsync_WhileAReadIsPending_WaitsForTheRelaysEndInsteadOfCancellingTheCall()
    {
        // A pipe reading ahead (Kestrel's transport) has a read waiting when the connection is closed.
        var (stream, call) = Create();
        var reading = stream.ReadAsync(new byte[16]).AsTask();

        var disposing = stream.DisposeAsync().AsTask();
        await Task.Delay(50);
        var (completedEarly, disposedEarly, finishedEarly) = (call.Completed, call.Disposed, disposing.IsCompleted);
        call.Incoming.Writer.Complete();

        Assert.Multiple(async () =>
        {
            Assert.That(completedEarly, Is.True, "the agent's side of the call ends at once");
            Assert.That(disposedEarly, Is.Zero, "the call is not cancelled under the pending read (a reset could drop what the relay still delivers)");
            Assert.That(finishedEarly, Is.False);
            Assert.That(await reading.WaitAsync(Limit), Is.Zero, "the pending read sees the relay's end of the call");
            await disposing.WaitAsync(Limit);
            Assert.That(call.Disposed, Is.EqualTo(1));
        });
    }

    [Test]
    [Category("Hostile")]
    public async Task DisposeAsync_WhileAReadThatNeverEndsIsPending_GivesUpAtStreamCloseTimeout_AndResets()
    {
        // The relay never ends the call (a client that keeps the connection open and silent): the close waits for the
        // pending read no longer than StreamCloseTimeout, then releases the call (a reset), whatever the read does.
        var time = new FakeTimeProvider();
        var released = 0;
        var call = new FakeCall();
        var stream = new TunnelStream(call, call, call, 1024, TimeSpan.FromSeconds(5), time, onReleased: () => released++);
        var reading = stream.ReadAsync(new byte[16]).AsTask();

        var disposing = stream.DisposeAsync().AsTask();
        time.Advance(TimeSpan.FromSeconds(4.9));
        var early = disposing.IsCompleted;
        time.Advance(TimeSpan.FromSeconds(0.2));
        await disposing.WaitAsync(Limit);

        Assert.Multiple(() =>
        {
            Assert.That(early, Is.False, "the close waits for the relay's end first");
            Assert.That(call.Disposed, Is.EqualTo(1), "then the call is released (the connection reset)");
            Assert.That(released, Is.EqualTo(1));
            Assert.That(reading.IsCompleted, Is.False, "(the fake call does not cancel its read; a real one fails it)");
        });
    }

    [Test]
    public void Abort_DisposesTheCallAndReportsOnce()
    {
        var aborts = 0;
        var (stream, call) = Create(onAbort: () => aborts++);

        stream.Abort();
        stream.Abort();

        Assert.Multiple(() =>
        {
            Assert.That(call.Disposed, Is.EqualTo(1));
            Assert.That(aborts, Is.EqualTo(1));
            Assert.ThrowsAsync<ObjectDisposedException>(() => stream.ReadAsync(new byte[1]).AsTask());
        });
    }
}
