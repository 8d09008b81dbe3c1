using System.Collections.Concurrent;
using Grpc.Core;
using SiteLink.Protocol.V1;

namespace SiteLink.Internal;

/// <summary>Settings of one end of a multiplexed data call (protocol version 2, Tunnel/Mux).</summary>
/// <param name="ReceiveWindow">Credit this end grants per connection: the most data of one connection it holds unread.</param>
/// <param name="SendWindow">Credit the peer granted per connection: the most this end sends before the peer grants more.</param>
/// <param name="MaxFrameSize">Largest data payload of one frame, either way; a larger one resets its connection.</param>
/// <param name="BufferBudget">Data held unread for all connections together beyond which the call is not read until some is consumed.</param>
/// <param name="MaxConnections">Connections open at once on the call (the agent refuses opens past it).</param>
internal sealed record MuxSettings(int ReceiveWindow, int SendWindow, int MaxFrameSize, long BufferBudget, int MaxConnections)
{
    /// <summary>Smallest window either end accepts from the other (a smaller one would cost a frame per few bytes).</summary>
    public const int MinWindow = 16 * 1024;

    /// <summary>Largest window either end uses (what it accepts is clamped to it).</summary>
    public const int MaxWindow = 16 * 1024 * 1024;

    /// <summary>Clamps a window the peer announced to [<see cref="MinWindow"/>, <see cref="MaxWindow"/>].</summary>
    public static int ClampWindow(long window) => (int)Math.Clamp(window, MinWindow, MaxWindow);
}

/// <summary>
/// One end of a multiplexed data call: many tunnelled connections on one gRPC bidirectional call, each frame tagged
/// with its connection id, each connection with its own credit-based flow control (as HTTP/2's WINDOW_UPDATE, yamux or
/// muxado): a sender sends at most the credit its peer granted; a receiver holds at most the window it granted and
/// grants more as the connection's reader consumes. So a connection whose reader stops holds at most one window and
/// never stalls the others; the call itself is always read. The relay opens connections (<see cref="Open"/>), the
/// agent accepts them (<see cref="Accepted"/>). Each connection is a <see cref="MuxConnection"/>: the reader and writer
/// a Stream call would have, so the code above is the same for both kinds of data call.
/// </summary>
#pragma warning disable CA1001 // Lives as long as its call; its CancellationTokenSource has no timer: nothing to release.
internal sealed class Multiplexer
#pragma warning restore CA1001
{
    private readonly IAsyncStreamWriter<MuxBatch> _output;
    private readonly Queue<PendingWrite> _queue = new();
    private bool _writing;
    private readonly ConcurrentDictionary<ulong, MuxConnection> _connections = new();
    private readonly CancellationTokenSource _lifetime = new();
    private readonly bool _opens;
    private ulong _lastId;
    private long _buffered;
    private TaskCompletionSource? _drained;
    private Status? _failure;

    /// <param name="output">The call's sending side; only this multiplexer writes to it.</param>
    /// <param name="settings">Windows and limits.</param>
    /// <param name="opens">True at the relay (it opens connections), false at the agent (it accepts them).</param>
    public Multiplexer(IAsyncStreamWriter<MuxBatch> output, MuxSettings settings, bool opens)
    {
        _output = output;
        Settings = settings;
        _opens = opens;
        // A message stays within what the relay accepts (MaxFrameSize + 1 KiB): one full data frame, or many small ones.
        _maxBatchBytes = settings.MaxFrameSize + 512;
    }

    private readonly int _maxBatchBytes;

    public MuxSettings Settings { get; }

    /// <summary>Agent: a connection the relay opened, with its offer. Called on the read loop: must not block.</summary>
    public Action<MuxConnection, OpenStream>? Accepted { get; init; }

    /// <summary>Something the peer sent broke the protocol (said once per event, safe to log).</summary>
    public Action<string>? ProtocolError { get; init; }

    /// <summary>Connections open on the call now.</summary>
    public int Count => _connections.Count;

    /// <summary>Data received and not yet consumed, all connections together.</summary>
    public long BufferedBytes => Interlocked.Read(ref _buffered);

    /// <summary>Frames that named a connection this end does not have (closed a moment ago, or never opened).</summary>
    public long UnknownFrames => Interlocked.Read(ref _unknownFrames);

    private long _unknownFrames;
    private int _refusalsQueued;

    /// <summary>Ended when the call is over: every connection on it has failed.</summary>
    public CancellationToken Lifetime => _lifetime.Token;

    public bool IsOver => _lifetime.IsCancellationRequested;

    /// <summary>
    /// Relay: a new connection for <paramref name="open"/>. Null when the call is over. The caller sends the opening
    /// frame with <see cref="MuxConnection.SendOpenAsync"/> before anything else of the connection.
    /// </summary>
    public MuxConnection? Open(OpenStream open)
    {
        if (!_opens)
        {
            throw new InvalidOperationException("Only the relay's end opens multiplexed connections.");
        }

        var connection = new MuxConnection(this, Interlocked.Increment(ref _lastId), open);
        _connections[connection.Id] = connection;
        if (IsOver)
        {
            // Failed between the check and the add: nothing will fail it later.
            _connections.TryRemove(connection.Id, out _);
            return null;
        }

        return connection;
    }

    /// <summary>
    /// Reads the call until it ends; then fails every connection left on it. Never throws: returns the status the
    /// connections failed with (<see cref="StatusCode.InvalidArgument"/> when the peer broke the protocol).
    /// </summary>
    public async Task<Status> RunAsync(IAsyncStreamReader<MuxBatch> input, CancellationToken cancellationToken)
    {
        var status = new Status(StatusCode.Unavailable, "the multiplexed data call ended");
        try
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _lifetime.Token);
            while (await input.MoveNext(linked.Token).ConfigureAwait(false))
            {
                if (!DispatchAll(input.Current.Frames))
                {
                    status = new Status(StatusCode.InvalidArgument, "the peer broke the multiplexing protocol");
                    break;
                }

                if (Interlocked.Read(ref _buffered) >= Settings.BufferBudget)
                {
                    await WaitDrainedAsync(linked.Token).ConfigureAwait(false);
                }
            }
        }
        catch (RpcException ex)
        {
            status = new Status(ex.StatusCode == StatusCode.OK ? StatusCode.Unavailable : ex.StatusCode, "the multiplexed data call failed: " + SafeText.Clean(ex.Status.Detail));
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or InvalidOperationException or ObjectDisposedException)
        {
            status = new Status(StatusCode.Unavailable, "the multiplexed data call was closed");
        }
        finally
        {
            Fail(status);
        }

        return status;
    }

    /// <summary>Ends the call's connections with <paramref name="status"/> (their readers and writers fail with it).</summary>
    public void Fail(Status status)
    {
        lock (_connections)
        {
            _failure ??= status;
        }

        _lifetime.Cancel();
        foreach (var connection in _connections.Values)
        {
            connection.OnCallFailed(_failure.Value);
        }

        _connections.Clear();
        Volatile.Read(ref _drained)?.TrySetResult();
        FailQueued();
    }

    private void FailQueued()
    {
        List<PendingWrite> failed;
        lock (_queue)
        {
            if (_writing)
            {
                // The writer fails what is queued when its write ends.
                return;
            }

            failed = [.. _queue];
            _queue.Clear();
        }

        foreach (var write in failed)
        {
            write.Done.TrySetException(new RpcException(_failure ?? new Status(StatusCode.Unavailable, "the multiplexed data call ended")));
        }
    }

    /// <summary>Handles the frames of one message in order; false (the rest released) when one ends the call.</summary>
    internal bool DispatchAll(List<DataFrame> frames)
    {
        for (var i = 0; i < frames.Count; i++)
        {
            if (!Dispatch(frames[i]))
            {
                for (var j = i + 1; j < frames.Count; j++)
                {
                    frames[j].Release();
                }

                return false;
            }
        }

        return true;
    }

    /// <summary>Handles one received frame; false when it breaks the protocol badly enough to end the call.</summary>
    internal bool Dispatch(DataFrame frame)
    {
        if (frame.Open is { } open)
        {
            if (_opens)
            {
                frame.Release();
                ProtocolError?.Invoke("the agent sent a frame that opens a connection; only the relay opens them");
                return false;
            }

            return Accept(frame, open);
        }

        if (frame.ConnectionId == 0 || !_connections.TryGetValue(frame.ConnectionId, out var connection))
        {
            // Closed here a moment ago (the peer had frames in flight), or never opened: nothing to deliver them to.
            Interlocked.Increment(ref _unknownFrames);
            frame.Release();
            return true;
        }

        connection.OnFrame(frame);
        return true;
    }

    private bool Accept(DataFrame frame, OpenStream open)
    {
        var id = frame.ConnectionId;
        if (id <= _lastId)
        {
            // Ids only grow on a call: a reused or zero id would confuse two connections.
            frame.Release();
            ProtocolError?.Invoke("the relay opened a connection with an id it used before");
            return false;
        }

        _lastId = id;
        if (_connections.Count >= Settings.MaxConnections || Accepted is null)
        {
            frame.Release();
            // Each refusal waits in the write queue until written: a relay that keeps opening past the limit without
            // reading would grow that queue with every open, so at most MaxConnections refusals wait at once.
            if (Interlocked.Increment(ref _refusalsQueued) > Settings.MaxConnections)
            {
                Interlocked.Decrement(ref _refusalsQueued);
                ProtocolError?.Invoke("the relay keeps opening connections past the limit without reading the refusals");
                return false;
            }

            _ = WriteAsync(new DataFrame { ConnectionId = id, Reset = new StreamReset { Code = (uint)StatusCode.ResourceExhausted, Message = "the agent has the maximum number of connections open on this call" } }, CancellationToken.None)
                .ContinueWith(
                    static (t, state) =>
                    {
                        _ = t.Exception;
                        Interlocked.Decrement(ref ((Multiplexer)state!)._refusalsQueued);
                    },
                    this,
                    CancellationToken.None,
                    TaskContinuationOptions.ExecuteSynchronously,
                    TaskScheduler.Default);
            return true;
        }

        frame.Open = null;
        var connection = new MuxConnection(this, id, open);
        _connections[id] = connection;
        if (IsOver)
        {
            // The call failed meanwhile: nothing would fail this connection later.
            _connections.TryRemove(id, out _);
            frame.Release();
            return true;
        }

        // The opening frame may carry data (and more) too.
        connection.OnFrame(frame);
        Accepted(connection, open);
        return true;
    }

    internal void Remove(MuxConnection connection) => _connections.TryRemove(new KeyValuePair<ulong, MuxConnection>(connection.Id, connection));

    internal void OnBuffered(int bytes) => Interlocked.Add(ref _buffered, bytes);

    internal void OnConsumed(int bytes)
    {
        if (Interlocked.Add(ref _buffered, -bytes) < Settings.BufferBudget / 2)
        {
            Volatile.Read(ref _drained)?.TrySetResult();
        }
    }

    private async Task WaitDrainedAsync(CancellationToken cancellationToken)
    {
        var drained = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Volatile.Write(ref _drained, drained);
        if (Interlocked.Read(ref _buffered) >= Settings.BufferBudget / 2 && !IsOver)
        {
            await drained.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }

        Volatile.Write(ref _drained, null);
    }

    /// <summary>
    /// Writes one frame, after the frames queued before it. Whoever finds no write in progress writes — its own frame
    /// and every frame queued meanwhile, several per message — and hands on to a background writer once its own frame
    /// is out, so a connection's caller is never kept writing for the others. A queued frame is always written (or the
    /// call fails): <paramref name="cancellationToken"/> counts only before it is queued, since the caller's memory must
    /// stay untouched until then.
    /// </summary>
    internal async Task WriteAsync(DataFrame frame, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (_failure is { } failure)
        {
            throw new RpcException(failure);
        }

        var write = new PendingWrite(frame);
        bool lead;
        lock (_queue)
        {
            _queue.Enqueue(write);
            lead = !_writing;
            _writing = true;
        }

        if (lead)
        {
            await DrainAsync(write).ConfigureAwait(false);
        }

        await write.Done.Task.ConfigureAwait(false);
    }

    /// <summary>Writes queued frames until none is left (or, for a caller's write, until its own frame is out).</summary>
    private async Task DrainAsync(PendingWrite? own)
    {
        var batch = new List<PendingWrite>();
        while (true)
        {
            batch.Clear();
            lock (_queue)
            {
                if (_queue.Count == 0)
                {
                    _writing = false;
                    return;
                }

                if (own is not null && own.Done.Task.IsCompleted)
                {
                    // The caller's frame is out: a background writer takes over (the queue stays marked as being written).
                    _ = Task.Run(() => DrainAsync(null));
                    return;
                }

                var bytes = 0;
                while (_queue.TryPeek(out var next))
                {
                    var size = MuxBatch.SizeInBatch(next.Frame);
                    if (batch.Count > 0 && bytes + size > _maxBatchBytes)
                    {
                        break;
                    }

                    batch.Add(_queue.Dequeue());
                    bytes += size;
                }
            }

            var frames = new List<DataFrame>(batch.Count);
            foreach (var write in batch)
            {
                frames.Add(write.Frame);
            }

            Exception? error = null;
            try
            {
                if (_failure is { } failure)
                {
                    throw new RpcException(failure);
                }

                // Not a caller's token: a write cancelled half-way would break the call for every connection on it.
                await _output.WriteAsync(new MuxBatch(frames), _lifetime.Token).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // Whatever the write threw, the call is failed and every waiting frame told: nothing may hang on a dead writer.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                var status = ex is RpcException { StatusCode: not StatusCode.OK } rpc && _failure is not null
                    ? rpc.Status
                    : new Status(StatusCode.Unavailable, "the multiplexed data call failed: " + (ex is RpcException r ? SafeText.Clean(r.Status.Detail) : ex.GetType().Name));
                Fail(status);
                error = new RpcException(_failure ?? status);
            }

            foreach (var write in batch)
            {
                if (error is null)
                {
                    write.Done.TrySetResult();
                }
                else
                {
                    write.Done.TrySetException(error);
                }
            }

            if (error is not null)
            {
                lock (_queue)
                {
                    _writing = false;
                }

                FailQueued();
                return;
            }
        }
    }

    private sealed class PendingWrite(DataFrame frame)
    {
        public DataFrame Frame { get; } = frame;

        public TaskCompletionSource Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>Writes a frame nobody waits for (credit, resets); a failure fails the call, which is what matters.</summary>
    internal void Post(DataFrame frame)
    {
        if (IsOver)
        {
            return;
        }

        _ = WriteAsync(frame, CancellationToken.None).ContinueWith(
            static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>Ends the call from this side: its connections fail, and the caller completes or cancels the call.</summary>
    public void Stop(string reason) => Fail(new Status(StatusCode.Unavailable, reason));
}
