using System.IO.Pipelines;

namespace SiteLink.Bridging;

/// <summary>
/// <see cref="TunnelConnection.Transport"/>: the connection as an <see cref="IDuplexPipe"/> over its
/// <see cref="TunnelStream"/>, for pipe-based handlers (as Kestrel's <c>ConnectionContext.Transport</c>). Completing
/// <see cref="Output"/> closes this side's sending direction (the client reads the end of the stream) while
/// <see cref="Input"/> goes on; <see cref="Input"/> completes when the client closed its side.
/// </summary>
internal sealed class TunnelDuplexPipe : IDuplexPipe
{
    public TunnelDuplexPipe(TunnelStream stream)
    {
        Input = PipeReader.Create(stream, new StreamPipeReaderOptions(leaveOpen: true));
        Output = PipeWriter.Create(new HalfCloseOnDispose(stream), new StreamPipeWriterOptions(leaveOpen: false));
    }

    public PipeReader Input { get; }

    public PipeWriter Output { get; }

    /// <summary>Writes through to the stream; disposing it (the writer completing) half-closes the connection.</summary>
    private sealed class HalfCloseOnDispose(TunnelStream inner) : Stream
    {
        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) => inner.WriteAsync(buffer, cancellationToken);

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            inner.WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Write(byte[] buffer, int offset, int count) => inner.Write(buffer, offset, count);

        public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override async ValueTask DisposeAsync()
        {
            try
            {
                await inner.CompleteWritesAsync().ConfigureAwait(false);
            }
            catch (IOException)
            {
                // The connection was aborted: nothing left to close.
            }

            await base.DisposeAsync().ConfigureAwait(false);
        }
    }
}
