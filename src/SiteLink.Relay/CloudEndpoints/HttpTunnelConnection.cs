using System.Buffers;
using System.IO.Pipelines;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Sessions;

namespace SiteLink.Relay.CloudEndpoints;

/// <summary>
/// A tunnelled connection an HTTP cloud endpoint's forwarder opened, with no socket in between: <see cref="Stream"/>
/// is what the forwarder's <see cref="System.Net.Http.SocketsHttpHandler"/> reads and writes (its connection to the
/// agent's upstream), and the bridge to the agent's stream uses the other end through <see cref="IPublicTransport"/>.
/// Two bounded pipes carry the bytes (1 MiB in flight per direction before a writer waits).
/// </summary>
internal sealed class HttpTunnelConnection : IPublicTransport
{
    // Inline: a write hands its bytes on in the writer's own thread (the forwarder's, or the bridge's), with no
    // thread-pool hop between the forwarder and the bridge. Both sides only await (the forwarder's synchronous
    // Read/Write block a thread of their own caller, never the writer's), and a reset or close that completes a pipe
    // from a timer runs the other side's continuation there — which only completes, disposes or fails, never waits.
    private static readonly PipeOptions Bounded = new(pauseWriterThreshold: 1024 * 1024, resumeWriterThreshold: 512 * 1024,
        readerScheduler: PipeScheduler.Inline, writerScheduler: PipeScheduler.Inline, useSynchronizationContext: false);

    private readonly Pipe _toAgent = new(Bounded);
    private readonly Pipe _toClient = new(Bounded);
    private readonly TaskCompletionSource _opened = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile TunnelOpenException? _refusal;

    public HttpTunnelConnection() => Stream = new ForwarderStream(this);

    /// <summary>The forwarder's end.</summary>
    public Stream Stream { get; }

    /// <summary>Completes when the agent opened its stream; faults with <see cref="TunnelOpenException"/> when refused.</summary>
    public Task Opened => _opened.Task;

    public void OnBridged() => _opened.TrySetResult();

    public void Refuse(RefusalReason reason, string message)
    {
        NoteRefusal(reason, message);
        Reset();
    }

    public void NoteRefusal(RefusalReason reason, string message) => _refusal = new TunnelOpenException(reason, message);

    public async ValueTask<(byte[] Buffer, int Read)> ReceivePooledAsync(int size, bool dataLikely, CancellationToken cancellationToken)
    {
        var result = await _toAgent.Reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        var available = result.Buffer;
        var n = (int)Math.Min(size, available.Length);
        var buffer = ArrayPool<byte>.Shared.Rent(Math.Max(n, 1));
        available.Slice(0, n).CopyTo(buffer);
        _toAgent.Reader.AdvanceTo(available.GetPosition(n));
        // Nothing left and the writer finished: the forwarder closed its side.
        return (buffer, n);
    }

    public async ValueTask SendAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        var flushed = await _toClient.Writer.WriteAsync(data, cancellationToken).ConfigureAwait(false);
        if (flushed.IsCompleted)
        {
            throw new IOException("The forwarder closed the connection.");
        }
    }

    public void ShutdownSend() => _toClient.Writer.Complete();

    public void Reset()
    {
        // A refusal says why to whoever reads or writes next (the forwarder maps it to 502/503/504).
        IOException reset = _refusal ?? new IOException("The tunnelled connection was reset.");
        _opened.TrySetException(reset);
        _toClient.Writer.Complete(reset);
        _toAgent.Reader.Complete(reset);
    }

    public void Close()
    {
        _toClient.Writer.Complete();
        _toAgent.Reader.Complete();
    }

    /// <summary>The forwarder's end: reads what the agent sent, writes toward the agent; disposing it is its FIN.</summary>
    private sealed class ForwarderStream(HttpTunnelConnection connection) : Stream
    {
        private int _disposed;

        public override bool CanRead => true;

        public override bool CanWrite => true;

        public override bool CanSeek => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            if (buffer.IsEmpty)
            {
                return 0;
            }

            var reader = connection._toClient.Reader;
            while (true)
            {
                var result = await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
                var available = result.Buffer;
                if (!available.IsEmpty)
                {
                    var n = (int)Math.Min(buffer.Length, available.Length);
                    available.Slice(0, n).CopyTo(buffer.Span);
                    reader.AdvanceTo(available.GetPosition(n));
                    return n;
                }

                reader.AdvanceTo(available.End);
                if (result.IsCompleted)
                {
                    return 0;
                }
            }
        }

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            var flushed = await connection._toAgent.Writer.WriteAsync(buffer, cancellationToken).ConfigureAwait(false);
            if (flushed.IsCompleted)
            {
                throw new IOException("The tunnelled connection is closed.");
            }
        }

        public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Write(byte[] buffer, int offset, int count) => WriteAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Flush()
        {
        }

        public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing && Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                // The forwarder is done with the connection: the agent reads the end of the stream.
                connection._toAgent.Writer.Complete();
                connection._toClient.Reader.Complete();
            }

            base.Dispose(disposing);
        }
    }
}

/// <summary>The relay could not open a tunnelled connection for a request, and why.</summary>
internal sealed class TunnelOpenException(RefusalReason reason, string message) : IOException(message)
{
    public RefusalReason Reason { get; } = reason;
}
