using Grpc.Core;
using SiteLink.Internal;

namespace SiteLink;

/// <summary>
/// The duplex byte stream of one tunnelled connection. Reads return what the public client sent and 0 once it closed
/// its sending side; writes reach the client in order. <see cref="CompleteWritesAsync"/> half-closes (the client
/// reads the end of the stream while this side can still read); disposing closes the connection gracefully.
/// One read and one write may run at the same time; concurrent writes are serialised.
/// </summary>
public sealed class TunnelStream : Stream
{
    private readonly IClientStreamWriter<DataFrame> _writer;
    private readonly IAsyncStreamReader<DataFrame> _reader;
    private readonly IDisposable _call;
    private readonly int _maxFrameSize;
    private readonly TimeSpan _closeTimeout;
    private readonly TimeProvider _timeProvider;
    private readonly Action? _onAbort;
    private readonly Action? _onReleased;
    private int _released;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private ReadOnlyMemory<byte> _pending;
    private DataFrame? _frame;
    private bool _readEof;
    private bool _remoteFinished;
    private bool _writesCompleted;
    // Held by a read while it runs; a graceful close takes it for good once the read in progress (if any) ended.
    private readonly SemaphoreSlim _readLock = new(1, 1);
    private int _disposed;
    private int _aborted;
    private long _bytesRead;
    private long _bytesWritten;

    internal TunnelStream(
        IClientStreamWriter<DataFrame> writer,
        IAsyncStreamReader<DataFrame> reader,
        IDisposable call,
        int maxFrameSize,
        TimeSpan closeTimeout,
        TimeProvider timeProvider,
        Action? onAbort = null,
        Action? onReleased = null)
    {
        _onAbort = onAbort;
        _onReleased = onReleased;
        _writer = writer;
        _reader = reader;
        _call = call;
        _maxFrameSize = maxFrameSize;
        _closeTimeout = closeTimeout;
        _timeProvider = timeProvider;
    }

    /// <summary>Metrics and activity of this connection; ended when the stream is released.</summary>
    internal Diagnostics.ConnectionTelemetry? Telemetry { get; set; }

    /// <summary>Bytes received from the public client so far.</summary>
    public long BytesRead => Interlocked.Read(ref _bytesRead);

    /// <summary>Bytes sent to the public client so far.</summary>
    public long BytesWritten => Interlocked.Read(ref _bytesWritten);

    /// <inheritdoc />
    public override bool CanRead => true;

    /// <inheritdoc />
    public override bool CanWrite => true;

    /// <inheritdoc />
    public override bool CanSeek => false;

    /// <inheritdoc />
    public override long Length => throw new NotSupportedException();

    /// <inheritdoc />
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    /// <inheritdoc />
#pragma warning disable RS0027 // The signature is Stream's.
    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
#pragma warning restore RS0027
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (buffer.IsEmpty)
        {
            return 0;
        }

        if (!_readLock.Wait(0, CancellationToken.None))
        {
            throw new InvalidOperationException("Another read is already in progress on this TunnelStream.");
        }

        try
        {
            if (_pending.IsEmpty && !await FetchFrameAsync(cancellationToken).ConfigureAwait(false))
            {
                return 0;
            }

            var n = Math.Min(buffer.Length, _pending.Length);
            _pending.Span[..n].CopyTo(buffer.Span);
            _pending = _pending[n..];
            if (_pending.IsEmpty)
            {
                ReleaseFrame();
            }
            Interlocked.Add(ref _bytesRead, n);
            Telemetry?.OnReceived(n);
            return n;
        }
        finally
        {
            _readLock.Release();
        }
    }

    /// <summary>
    /// Returns the next bytes from the public client without copying them (empty at the end of the stream). The memory
    /// is a pooled buffer, valid until the next read: it goes back to the pool then, so nothing is held while the
    /// connection is idle.
    /// </summary>
    internal async ValueTask<ReadOnlyMemory<byte>> ReadChunkAsync(CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (!_readLock.Wait(0, CancellationToken.None))
        {
            throw new InvalidOperationException("Another read is already in progress on this TunnelStream.");
        }

        try
        {
            if (_pending.IsEmpty && !await FetchFrameAsync(cancellationToken).ConfigureAwait(false))
            {
                return ReadOnlyMemory<byte>.Empty;
            }

            var chunk = _pending;
            _pending = default;
            Interlocked.Add(ref _bytesRead, chunk.Length);
            Telemetry?.OnReceived(chunk.Length);
            return chunk;
        }
        finally
        {
            _readLock.Release();
        }
    }

    /// <summary>Waits for the next frame with data; false at the end of the stream.</summary>
    private async ValueTask<bool> FetchFrameAsync(CancellationToken cancellationToken)
    {
        // The previous frame's bytes were consumed (copied out, or sent by the caller of ReadChunkAsync).
        ReleaseFrame();
        while (_pending.IsEmpty)
        {
            if (_readEof)
            {
                return false;
            }

            bool more;
            try
            {
                more = await _reader.MoveNext(cancellationToken).ConfigureAwait(false);
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.Cancelled && cancellationToken.IsCancellationRequested)
            {
                throw new OperationCanceledException(cancellationToken);
            }
            catch (RpcException ex)
            {
                _readEof = true;
                throw new IOException($"The tunnelled connection was aborted by the relay: {ex.Status.Detail} ({ex.StatusCode}).", ex);
            }

            if (!more)
            {
                _readEof = true;
                _remoteFinished = true;
                return false;
            }

            var frame = _reader.Current;
            _frame = frame;
            _pending = frame.Data;
            if (frame.HalfClose)
            {
                _readEof = true;
            }
        }

        return true;
    }

    private void ReleaseFrame()
    {
        _pending = default;
        _frame?.Release();
        _frame = null;
    }

    /// <inheritdoc />
#pragma warning disable RS0027 // The signature is Stream's.
    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
#pragma warning restore RS0027
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_writesCompleted)
            {
                throw new InvalidOperationException("Writes were completed on this TunnelStream; nothing more can be sent.");
            }

            while (!buffer.IsEmpty)
            {
                var chunk = buffer[..Math.Min(buffer.Length, _maxFrameSize)];
                // The frame is serialised before WriteAsync completes, so wrapping the caller's memory is safe.
                await WriteFrameAsync(DataFrame.ForData(chunk), cancellationToken).ConfigureAwait(false);
                Interlocked.Add(ref _bytesWritten, chunk.Length);
                Telemetry?.OnSent(chunk.Length);
                buffer = buffer[chunk.Length..];
            }
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <summary>
    /// Closes the sending direction: the public client reads the end of the stream after everything written so far.
    /// Reading goes on. Calling it again does nothing.
    /// </summary>
    /// <exception cref="IOException">The connection was aborted.</exception>
    public async ValueTask CompleteWritesAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (!_writesCompleted)
            {
                await WriteFrameAsync(new DataFrame { HalfClose = true }, cancellationToken).ConfigureAwait(false);
                _writesCompleted = true;
            }
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private async ValueTask WriteFrameAsync(DataFrame frame, CancellationToken cancellationToken)
    {
        try
        {
            await _writer.WriteAsync(frame, cancellationToken).ConfigureAwait(false);
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.Cancelled && cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException(cancellationToken);
        }
        catch (Exception ex) when (ex is RpcException or InvalidOperationException)
        {
            throw new IOException("The tunnelled connection is closed: " + ex.Message, ex);
        }
    }

    /// <summary>
    /// Aborts the connection at once: the public client's connection is reset. Also cuts short a graceful close in
    /// progress (<see cref="DisposeAsync"/> waiting for the relay's side to finish).
    /// </summary>
    public void Abort()
    {
        if (Interlocked.Exchange(ref _aborted, 1) != 0)
        {
            return;
        }

        Volatile.Write(ref _disposed, 1);
        var released = Volatile.Read(ref _released) != 0;
        // Cancelling the call also fails whatever a graceful close is waiting for, which then ends at once.
        _call.Dispose();
        if (!released)
        {
            // The call may be cancelled before its headers reached the relay; tell it over the control stream too,
            // so the public client is closed now rather than when the offer expires.
            _onAbort?.Invoke();
            ReleaseLease(aborted: true);
        }
    }

    /// <summary>
    /// Closes the connection gracefully: everything written is delivered and the client sees the end of the stream.
    /// Waits (up to the session's StreamCloseTimeout) for the relay to finish its side, then releases the call.
    /// </summary>
    public override async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            await CloseGracefullyAsync().ConfigureAwait(false);
        }

        await base.DisposeAsync().ConfigureAwait(false);
    }

    private async Task CloseGracefullyAsync()
    {
        var clean = false;
        using var timeout = new CancellationTokenSource(_closeTimeout, _timeProvider);
        try
        {
            await _writeLock.WaitAsync(timeout.Token).ConfigureAwait(false);
            try
            {
                await _writer.CompleteAsync().WaitAsync(timeout.Token).ConfigureAwait(false);
            }
            finally
            {
                _writeLock.Release();
            }

            // Consume what the relay still sends until it ends the call, so the end is clean rather than a reset. A read
            // in progress (a pipe reading ahead) is waited for, not cancelled under it: it ends when the relay ends the
            // call, which it does once it delivered what was written — cancelling first could drop some of that.
            var readWasRunning = false;
            if (!_remoteFinished && !_readLock.Wait(0))
            {
                readWasRunning = true;
                await _readLock.WaitAsync(timeout.Token).ConfigureAwait(false);
            }

            if (!_remoteFinished)
            {
                if (!readWasRunning)
                {
                    // (After a read that just ended, its caller may still hold the frame's memory: left to the collector.)
                    ReleaseFrame();
                }

                while (await _reader.MoveNext(timeout.Token).ConfigureAwait(false))
                {
                    _reader.Current.Release();
                }
            }

            clean = true;
        }
        catch (Exception ex) when (ex is RpcException or IOException or OperationCanceledException or InvalidOperationException)
        {
            // The connection ended abnormally or too slowly; releasing the call below resets it.
        }
        finally
        {
            _call.Dispose();
            ReleaseLease(aborted: !clean);
        }
    }

    private void ReleaseLease(bool aborted)
    {
        if (Interlocked.Exchange(ref _released, 1) == 0)
        {
            _onReleased?.Invoke();
            Telemetry?.End(aborted ? "aborted" : "completed");
        }
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing && Volatile.Read(ref _disposed) == 0)
        {
            // Synchronous disposal cannot wait for the relay: close in the background. Its failures were the connection's
            // own (handled inside); anything else is observed here, never left to surface as an unobserved exception.
            _ = DisposeAsync().AsTask().ContinueWith(
                static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }

        base.Dispose(disposing);
    }

    /// <inheritdoc />
    public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    /// <inheritdoc />
    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    /// <inheritdoc />
    public override void Write(byte[] buffer, int offset, int count) => WriteAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    /// <inheritdoc />
    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    /// <inheritdoc />
    public override void Flush() { }

    /// <inheritdoc />
    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <inheritdoc />
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    /// <inheritdoc />
    public override void SetLength(long value) => throw new NotSupportedException();
}
