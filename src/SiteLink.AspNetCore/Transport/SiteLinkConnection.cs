using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;

namespace SiteLink.AspNetCore.Transport;

/// <summary>
/// One tunnelled connection as a Kestrel <see cref="ConnectionContext"/>, shaped like Kestrel's own transports: a receive
/// loop copies what the public client sends into <see cref="Transport"/>'s input (bounded by MaxReadBufferSize) and a
/// send loop writes Kestrel's output into the tunnel (bounded by MaxWriteBufferSize), so Kestrel learns that a client
/// left (<see cref="ConnectionClosed"/>) even while a request is being handled, and completing the output half-closes.
/// </summary>
internal sealed class SiteLinkConnection : ConnectionContext,
    IConnectionIdFeature, IConnectionTransportFeature, IConnectionItemsFeature, IConnectionLifetimeFeature, IConnectionEndPointFeature,
    ISiteLinkConnectionFeature
{
    /// <summary>Each read asks for at least this much buffer (what an idle connection holds while it waits).</summary>
    private const int MinimumReadSize = 4096;

    /// <summary>
    /// When Kestrel is done with the connection, how long what it wrote may take to leave (a client that stopped reading
    /// holds it in the tunnel's flow control): then the connection is reset instead of held until shutdown.
    /// </summary>
    internal static readonly TimeSpan SendDrainTimeout = TimeSpan.FromSeconds(10);

    /// <summary>A send gathers Kestrel's small segments into frames of up to this many bytes (the relay's default frame size).</summary>
    private const int MaximumSendChunk = 64 * 1024;

    private static long s_lastId;

    private readonly TunnelConnection _tunnel;
    private readonly ConnectionSettings _settings;
    private readonly Pipe _input;
    private readonly Pipe _output;
    private readonly DuplexPipe _transport;
    private readonly CancellationTokenSource _closed = new();
    private readonly FeatureCollection _features = new();
    private Exception? _abortReason;
    private Task _receiving = Task.CompletedTask;
    private Task _sending = Task.CompletedTask;

    public SiteLinkConnection(TunnelConnection tunnel, SiteLinkEndPoint endPoint, ConnectionSettings settings)
    {
        _tunnel = tunnel;
        _settings = settings;
        ConnectionId = "sitelink-" + Interlocked.Increment(ref s_lastId).ToString("x", System.Globalization.CultureInfo.InvariantCulture);
        LocalEndPoint = endPoint;
        RemoteEndPoint = tunnel.Info.ClientAddress;
        ConnectionClosed = _closed.Token;
        _input = new Pipe(new PipeOptions(
            pauseWriterThreshold: settings.MaxReadBufferSize, resumeWriterThreshold: settings.MaxReadBufferSize / 2, useSynchronizationContext: false));
        _output = new Pipe(new PipeOptions(
            pauseWriterThreshold: settings.MaxWriteBufferSize, resumeWriterThreshold: settings.MaxWriteBufferSize / 2, useSynchronizationContext: false));
        _transport = new DuplexPipe(_input.Reader, _output.Writer);
        Transport = _transport;

        _features.Set<IConnectionIdFeature>(this);
        _features.Set<IConnectionTransportFeature>(this);
        _features.Set<IConnectionItemsFeature>(this);
        _features.Set<IConnectionLifetimeFeature>(this);
        _features.Set<IConnectionEndPointFeature>(this);
        _features.Set<ISiteLinkConnectionFeature>(this);
    }

    public override string ConnectionId { get; set; }

    public override IFeatureCollection Features => _features;

    public override IDictionary<object, object?> Items { get; set; } = new ConnectionItems();

    public override IDuplexPipe Transport { get; set; }

    public override CancellationToken ConnectionClosed { get; set; }

    public override EndPoint? LocalEndPoint { get; set; }

    public override EndPoint? RemoteEndPoint { get; set; }

    public TunnelConnectionInfo Info => _tunnel.Info;

    public void Start()
    {
        _receiving = ReceiveAsync();
        _sending = SendAsync();
    }

    /// <summary>Resets the public client's connection and ends both loops.</summary>
    public override void Abort(ConnectionAbortedException abortReason)
    {
        if (Interlocked.CompareExchange(ref _abortReason, abortReason, null) is not null)
        {
            return;
        }

        _tunnel.Stream.Abort();
        _output.Reader.CancelPendingRead();
    }

    private async Task ReceiveAsync()
    {
        Exception? error = null;
        var writer = _input.Writer;
        try
        {
            while (true)
            {
                var buffer = writer.GetMemory(MinimumReadSize);
                var received = await _tunnel.Stream.ReadAsync(buffer).ConfigureAwait(false);
                if (received == 0)
                {
                    // The client closed its sending side.
                    break;
                }

                writer.Advance(received);
                var flushed = await writer.FlushAsync().ConfigureAwait(false);
                if (flushed.IsCompleted || flushed.IsCanceled)
                {
                    // Kestrel reads no more.
                    break;
                }
            }
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or InvalidOperationException)
        {
            // Reset by the client or the relay, or aborted here (then _abortReason says why).
            if (Volatile.Read(ref _abortReason) is null)
            {
                TransportLog.ConnectionFailed(_settings.Logger, ConnectionId, RemoteEndPoint, "receiving", ex.Message);
            }

            error = new ConnectionResetException(ex.Message, ex);
        }
        finally
        {
            await writer.CompleteAsync(Volatile.Read(ref _abortReason) ?? error).ConfigureAwait(false);
            FireConnectionClosed();
        }
    }

    private async Task SendAsync()
    {
        Exception? error = null;
        var reader = _output.Reader;
        byte[]? gather = null;
        try
        {
            while (true)
            {
                var result = await reader.ReadAsync().ConfigureAwait(false);
                if (result.IsCanceled)
                {
                    // Aborted.
                    break;
                }

                var buffer = result.Buffer;
                if (buffer.IsSingleSegment)
                {
                    await _tunnel.Stream.WriteAsync(buffer.First).ConfigureAwait(false);
                }
                else
                {
                    // Kestrel writes in small segments: gathered, they go as few large frames instead of many small ones.
                    gather ??= ArrayPool<byte>.Shared.Rent(MaximumSendChunk);
                    while (!buffer.IsEmpty)
                    {
                        var chunk = buffer.Slice(0, Math.Min(buffer.Length, gather.Length));
                        chunk.CopyTo(gather);
                        await _tunnel.Stream.WriteAsync(gather.AsMemory(0, (int)chunk.Length)).ConfigureAwait(false);
                        buffer = buffer.Slice(chunk.End);
                    }
                }

                reader.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted)
                {
                    // Kestrel completed its output: the client reads the end of the stream after everything sent.
                    await _tunnel.Stream.CompleteWritesAsync().ConfigureAwait(false);
                    break;
                }
            }
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or InvalidOperationException)
        {
            if (Volatile.Read(ref _abortReason) is null)
            {
                TransportLog.ConnectionFailed(_settings.Logger, ConnectionId, RemoteEndPoint, "sending", ex.Message);
                error = ex;
                // What is left cannot reach the client: reset, which also ends the receive loop.
                Abort(new ConnectionAbortedException("Sending to the public client failed: " + ex.Message, ex));
            }
        }
        finally
        {
            if (gather is not null)
            {
                // Cleared: the next renter may serve another client.
                ArrayPool<byte>.Shared.Return(gather, clearArray: true);
            }

            await reader.CompleteAsync(error).ConfigureAwait(false);
            // A receive loop waiting for Kestrel to read (a full input buffer) is released.
            _input.Writer.CancelPendingFlush();
        }
    }

    private void FireConnectionClosed()
    {
        try
        {
            _closed.Cancel();
        }
        catch (AggregateException ex)
        {
            // A callback of Kestrel's or the application's failed; the connection is closing regardless.
            TransportLog.ConnectionFailed(_settings.Logger, ConnectionId, RemoteEndPoint, "closing", ex.InnerException?.Message ?? ex.Message);
        }
    }

    /// <summary>
    /// Kestrel is done with the connection: what it wrote is sent and half-closed, then the tunnelled connection
    /// closes gracefully — the relay delivers everything to the client before it ends the call, which also ends the
    /// receive loop (bounded by the session's StreamCloseTimeout, after which the connection is reset).
    /// </summary>
    public override async ValueTask DisposeAsync()
    {
        await _transport.Input.CompleteAsync().ConfigureAwait(false);
        await _transport.Output.CompleteAsync().ConfigureAwait(false);
        try
        {
            await _sending.WaitAsync(SendDrainTimeout).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // The client does not take the last of the response: reset it, which ends the write the send loop is in.
            Abort(new ConnectionAbortedException($"The public client did not read the rest of the response within {SendDrainTimeout.TotalSeconds:0} s."));
            await _sending.ConfigureAwait(false);
        }

        await _tunnel.DisposeAsync().ConfigureAwait(false);
        await _receiving.ConfigureAwait(false);
        _closed.Dispose();
        await base.DisposeAsync().ConfigureAwait(false);
    }

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }
}
