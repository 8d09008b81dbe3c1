using Grpc.Core;
using SiteLink.Protocol.V1;

namespace SiteLink.Internal;

/// <summary>
/// One tunnelled connection on a <see cref="Multiplexer"/>, seen as the reader and writer of a Stream call: frames
/// in order, the peer's half_close as a frame with <see cref="DataFrame.HalfClose"/>, its close as the end of the
/// stream (<see cref="MoveNext"/> false), its reset as an <see cref="RpcException"/> with the reset's status. Writing
/// waits for credit; reading grants credit back as frames are consumed. One reader and one writer at a time.
/// </summary>
internal sealed class MuxConnection : IAsyncStreamReader<DataFrame>, IClientStreamWriter<DataFrame>, IServerStreamWriter<DataFrame>, IDisposable
{
    private readonly Multiplexer _mux;
    private readonly Queue<DataFrame> _received = new();
    private readonly object _lock = new();
    private OpenStream? _open;
    // Receiving: what the peer may still send before more credit, consumed bytes not yet granted back.
    private long _allowance;
    private int _consumed;
    private int _currentLength;
    private bool _remoteClosed;
    private bool _remoteHalfClosed;
    private long _queuedBytes;
    private Status? _remoteReset;
    private TaskCompletionSource<bool>? _readWaiter;
    // Sending.
    private long _credit;
    private TaskCompletionSource? _creditWaiter;
    private bool _localClosed;
    private bool _sentReset;
    private int _disposed;

    internal MuxConnection(Multiplexer mux, ulong id, OpenStream open)
    {
        _mux = mux;
        Id = id;
        _open = open;
        _allowance = mux.Settings.ReceiveWindow;
        _credit = mux.Settings.SendWindow;
    }

    public ulong Id { get; }

    /// <summary>The offer this connection carries.</summary>
    public OpenStream Offer => _open ?? new OpenStream();

    /// <summary>Data received and not yet handed to the reader (at most the receive window).</summary>
    public long Buffered => Interlocked.Read(ref _queuedBytes);

    public DataFrame Current { get; private set; } = null!;

    public WriteOptions? WriteOptions { get; set; }

    /// <summary>Relay: sends the frame that opens the connection at the agent; before any other frame of it.</summary>
    public Task SendOpenAsync(CancellationToken cancellationToken)
    {
        var open = _open ?? throw new InvalidOperationException("The connection was opened already.");
        return _mux.WriteAsync(new DataFrame { ConnectionId = Id, Open = open }, cancellationToken);
    }

    // ------------------------------------------------------------------------------------------------------------
    // Receiving (called by the multiplexer's read loop)
    // ------------------------------------------------------------------------------------------------------------

    internal void OnFrame(DataFrame frame)
    {
        TaskCompletionSource<bool>? wake = null;
        TaskCompletionSource? credit = null;
        string? violation = null;
        lock (_lock)
        {
            if (frame.Window != 0 && _remoteReset is null)
            {
                _credit = Math.Min(_credit + frame.Window, (long)MuxSettings.MaxWindow * 4);
                credit = _creditWaiter;
                _creditWaiter = null;
            }

            var length = frame.Data.Length;
            if (_remoteReset is not null || _remoteClosed)
            {
                // After the peer's own end nothing more of it counts.
                frame.Release();
            }
            else if (frame.Reset is { } reset)
            {
                frame.Release();
                _remoteReset = new Status(ToCode(reset.Code), SafeText.Clean(reset.Message));
                DropReceived();
                wake = _readWaiter;
                credit ??= _creditWaiter;
                _creditWaiter = null;
            }
            else if (length > _mux.Settings.MaxFrameSize)
            {
                frame.Release();
                violation = $"a frame of {length} bytes is over the limit of {_mux.Settings.MaxFrameSize}";
            }
            else if (length > _allowance)
            {
                frame.Release();
                violation = $"the peer sent {length} bytes with {_allowance} bytes of credit left";
            }
            else if (length > 0 && _remoteHalfClosed)
            {
                frame.Release();
                violation = "the peer sent data after its half_close";
            }
            else
            {
                // Only data and the first half_close are queued: a repeated half_close (or an empty frame) costs
                // nothing here, so a peer cannot grow the queue with frames that take no credit.
                var halfClose = frame.HalfClose && !_remoteHalfClosed;
                _remoteHalfClosed |= frame.HalfClose;
                if (length > 0 || halfClose)
                {
                    _allowance -= length;
                    _queuedBytes += length;
                    _mux.OnBuffered(length);
                    frame.Window = 0;
                    frame.HalfClose = halfClose;
                    var close = frame.Close;
                    frame.Close = false;
                    _received.Enqueue(frame);
                    _remoteClosed = close;
                }
                else
                {
                    frame.Release();
                    _remoteClosed = frame.Close;
                }

                if (_remoteClosed)
                {
                    // The peer is finished with the connection: nothing more will be read there, nor credit come.
                    credit ??= _creditWaiter;
                    _creditWaiter = null;
                }

                wake = _readWaiter;
            }

            if (wake is not null)
            {
                _readWaiter = null;
            }
        }

        credit?.TrySetResult();
        wake?.TrySetResult(true);
        if (violation is not null)
        {
            Violate(violation);
        }
    }

    /// <summary>The peer broke flow control or the frame limit on this connection: reset it both ways.</summary>
    private void Violate(string reason)
    {
        var status = new Status(StatusCode.ResourceExhausted, reason);
        _mux.ProtocolError?.Invoke(reason);
        _mux.Post(new DataFrame { ConnectionId = Id, Reset = new StreamReset { Code = (uint)status.StatusCode, Message = reason } });
        lock (_lock)
        {
            _localClosed = true;
            _sentReset = true;
        }

        OnCallFailed(status);
        _mux.Remove(this);
    }

    internal void OnCallFailed(Status status)
    {
        TaskCompletionSource<bool>? wake;
        TaskCompletionSource? credit;
        lock (_lock)
        {
            _remoteReset ??= status;
            DropReceived();
            wake = _readWaiter;
            _readWaiter = null;
            credit = _creditWaiter;
            _creditWaiter = null;
        }

        wake?.TrySetResult(true);
        credit?.TrySetResult();
    }

    private void DropReceived()
    {
        while (_received.TryDequeue(out var dropped))
        {
            _queuedBytes -= dropped.Data.Length;
            _mux.OnConsumed(dropped.Data.Length);
            dropped.Release();
        }
    }

    private static StatusCode ToCode(uint code) =>
        code is > 0 and <= (uint)StatusCode.Unauthenticated ? (StatusCode)code : StatusCode.Unknown;

    // ------------------------------------------------------------------------------------------------------------
    // Reading (the connection's consumer)
    // ------------------------------------------------------------------------------------------------------------

    public async Task<bool> MoveNext(CancellationToken cancellationToken)
    {
        GrantConsumed();
        while (true)
        {
            Task<bool> wait;
            lock (_lock)
            {
                if (_remoteReset is { } reset)
                {
                    throw new RpcException(reset);
                }

                if (_received.TryDequeue(out var frame))
                {
                    _currentLength = frame.Data.Length;
                    _queuedBytes -= _currentLength;
                    _mux.OnConsumed(_currentLength);
                    Current = frame;
                    return true;
                }

                if (_remoteClosed)
                {
                    return false;
                }

                _readWaiter = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
                wait = _readWaiter.Task;
            }

            try
            {
                await wait.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                throw new RpcException(new Status(StatusCode.Cancelled, "the read was cancelled"));
            }
        }
    }

    /// <summary>The frame handed out last is consumed: its bytes may be sent again. Granted in batches of half a window.</summary>
    private void GrantConsumed()
    {
        uint grant = 0;
        lock (_lock)
        {
            _consumed += _currentLength;
            _currentLength = 0;
            if (_consumed >= _mux.Settings.ReceiveWindow / 2 && _remoteReset is null && !_remoteClosed)
            {
                grant = (uint)_consumed;
                _allowance += _consumed;
                _consumed = 0;
            }
        }

        if (grant != 0)
        {
            _mux.Post(new DataFrame { ConnectionId = Id, Window = grant });
        }
    }

    // ------------------------------------------------------------------------------------------------------------
    // Writing
    // ------------------------------------------------------------------------------------------------------------

    public async Task WriteAsync(DataFrame message, CancellationToken cancellationToken)
    {
        var data = message.Data;
        if (data.IsEmpty)
        {
            CheckWritable();
            await _mux.WriteAsync(new DataFrame { ConnectionId = Id, HalfClose = message.HalfClose }, cancellationToken).ConfigureAwait(false);
            return;
        }

        while (!data.IsEmpty)
        {
            var n = await TakeCreditAsync(Math.Min(data.Length, _mux.Settings.MaxFrameSize), cancellationToken).ConfigureAwait(false);
            var last = n == data.Length;
            var frame = DataFrame.ForData(data[..n]);
            frame.ConnectionId = Id;
            frame.HalfClose = last && message.HalfClose;
            await _mux.WriteAsync(frame, cancellationToken).ConfigureAwait(false);
            data = data[n..];
        }
    }

    public Task WriteAsync(DataFrame message) => WriteAsync(message, CancellationToken.None);

    private void CheckWritable()
    {
        lock (_lock)
        {
            ThrowIfNotWritable();
        }
    }

    /// <summary>Under the lock: a reset, our own end or the peer's close ends writing.</summary>
    private void ThrowIfNotWritable()
    {
        if (_remoteReset is { } reset)
        {
            throw new RpcException(reset);
        }

        if (_localClosed)
        {
            throw new InvalidOperationException("The connection is closed; nothing more can be written.");
        }

        if (_remoteClosed)
        {
            throw new InvalidOperationException("The peer finished the connection; nothing more can be written.");
        }
    }

    /// <summary>Waits for credit and takes up to <paramref name="wanted"/> bytes of it.</summary>
    private async Task<int> TakeCreditAsync(int wanted, CancellationToken cancellationToken)
    {
        while (true)
        {
            Task wait;
            lock (_lock)
            {
                ThrowIfNotWritable();
                if (_credit > 0)
                {
                    var n = (int)Math.Min(wanted, _credit);
                    _credit -= n;
                    return n;
                }

                _creditWaiter ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                wait = _creditWaiter.Task;
            }

            await wait.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Agent: the agent is finished with the connection (the end of a Stream call's request stream).</summary>
    public Task CompleteAsync() => FinishAsync(null);

    /// <summary>
    /// Ends this side of the connection: <paramref name="status"/> null is a graceful close (after what was written),
    /// anything else a reset with that status. The connection leaves the call on <see cref="Dispose"/>.
    /// </summary>
    public async Task FinishAsync(Status? status)
    {
        lock (_lock)
        {
            if (_localClosed)
            {
                return;
            }

            _localClosed = true;
            _sentReset = status is not null;
        }

        var frame = status is { } s
            ? new DataFrame { ConnectionId = Id, Reset = new StreamReset { Code = (uint)s.StatusCode, Message = SafeText.Clean(s.Detail) } }
            : new DataFrame { ConnectionId = Id, Close = true };
        try
        {
            await _mux.WriteAsync(frame, CancellationToken.None).ConfigureAwait(false);
        }
        catch (RpcException) when (status is not null)
        {
            // A reset on a failed call: the call's failure already ended the connection at the peer.
        }
    }

    /// <summary>
    /// Releases the connection: one not closed gracefully both ways is reset (as cancelling a Stream call would), and it
    /// leaves the call; the frames it still held go back to the pool.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        bool reset;
        lock (_lock)
        {
            // Not finished gracefully both ways, and neither end said so with a reset yet: say it now.
            reset = _remoteReset is null && !_sentReset && (!_localClosed || !_remoteClosed);
            _localClosed = true;
            _remoteReset ??= new Status(StatusCode.Cancelled, "the connection was released");
            DropReceived();
        }

        if (reset)
        {
            _mux.Post(new DataFrame { ConnectionId = Id, Reset = new StreamReset { Code = (uint)StatusCode.Cancelled, Message = "the connection was closed" } });
        }

        OnCallFailed(new Status(StatusCode.Cancelled, "the connection was released"));
        _mux.Remove(this);
        _open = null;
    }
}
