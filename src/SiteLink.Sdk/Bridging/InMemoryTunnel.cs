using System.Threading.Channels;
using Grpc.Core;
using SiteLink.Internal;

namespace SiteLink.Bridging;

/// <summary>
/// The two ends of an in-memory tunnelled connection (<see cref="TunnelConnection.CreateInMemory"/>), each a
/// <see cref="TunnelStream"/>: frames one end writes reach the other through bounded channels, so a side that stops reading
/// stops the other's writes as the relay's flow control would. Every frame's bytes are copied when written: the writer
/// may reuse its buffer as soon as the write completed, as it may on the real transport.
/// </summary>
internal sealed class InMemoryTunnel : IDisposable
{
    /// <summary>Frames in flight per direction before a writer waits.</summary>
    private const int Capacity = 16;

    // Not single-reader: a reset drains a direction while its reader may be waiting on it.
    private readonly Channel<DataFrame> _toClient = Channel.CreateBounded<DataFrame>(Capacity);
    private readonly Channel<DataFrame> _toAgent = Channel.CreateBounded<DataFrame>(Capacity);

    public InMemoryTunnel(int maxFrameSize, TimeSpan closeTimeout)
    {
        Agent = new TunnelStream(new Writer(_toClient.Writer), new Reader(_toAgent.Reader), this, maxFrameSize, closeTimeout, TimeProvider.System);
        Client = new TunnelStream(new Writer(_toAgent.Writer), new Reader(_toClient.Reader), this, maxFrameSize, closeTimeout, TimeProvider.System);
    }

    /// <summary>The agent's end, as a handler gets it.</summary>
    public TunnelStream Agent { get; }

    /// <summary>The public client's end: the same kind of stream, so it can half-close too.</summary>
    public TunnelStream Client { get; }

    /// <summary>
    /// An end released the "call" (aborted, or closed): whatever did not finish gracefully is reset, as cancelling a gRPC
    /// call resets its HTTP/2 stream. A direction already completed stays as it ended.
    /// </summary>
    public void Dispose() => Reset();

    private void Reset()
    {
        var reset = new IOException("The tunnelled connection was reset.");
        // A direction that had not ended loses what was in flight, as a reset stream does: its reader fails at once.
        if (_toClient.Writer.TryComplete(reset))
        {
            Discard(_toClient.Reader);
        }

        if (_toAgent.Writer.TryComplete(reset))
        {
            Discard(_toAgent.Reader);
        }
    }

    private static void Discard(ChannelReader<DataFrame> reader)
    {
        while (reader.TryRead(out _))
        {
        }
    }

    private static DataFrame Copy(DataFrame frame) =>
        new DataFrame { HalfClose = frame.HalfClose }.WithOwnedCopy(frame.Data.Span);

    private sealed class Writer(ChannelWriter<DataFrame> channel) : IClientStreamWriter<DataFrame>
    {
        public WriteOptions? WriteOptions { get; set; }

        public Task WriteAsync(DataFrame message) => WriteAsync(message, CancellationToken.None);

        public async Task WriteAsync(DataFrame message, CancellationToken cancellationToken)
        {
            try
            {
                await channel.WriteAsync(Copy(message), cancellationToken).ConfigureAwait(false);
                if (message.HalfClose)
                {
                    // Nothing follows a half-close: the other end's graceful close need not wait for this one's.
                    channel.TryComplete();
                }
            }
            catch (ChannelClosedException ex)
            {
                throw new InvalidOperationException("The in-memory connection is closed.", ex);
            }
            catch (IOException ex)
            {
                throw new InvalidOperationException(ex.Message, ex);
            }
        }

        public Task CompleteAsync()
        {
            channel.TryComplete();
            return Task.CompletedTask;
        }
    }

    private sealed class Reader(ChannelReader<DataFrame> channel) : IAsyncStreamReader<DataFrame>
    {
        public DataFrame Current { get; private set; } = null!;

        public async Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            try
            {
                if (await channel.WaitToReadAsync(cancellationToken).ConfigureAwait(false) && channel.TryRead(out var frame))
                {
                    Current = frame;
                    return true;
                }

                return false;
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                throw new RpcException(new Status(StatusCode.Cancelled, "Cancelled by the reader."));
            }
            catch (Exception ex) when (ex is IOException or ChannelClosedException)
            {
                throw new RpcException(new Status(StatusCode.Cancelled, ex.Message));
            }
        }
    }
}
