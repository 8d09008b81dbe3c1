using System.Buffers;
using System.Net.Sockets;

namespace SiteLink;

/// <summary>
/// Copies bytes between a local upstream socket and a tunnelled connection, both directions at once, propagating
/// half-close: the end of one side's sending direction becomes a shutdown of the other side's. A failure on either
/// side aborts both, so nothing is left half-open.
/// </summary>
internal static class StreamBridge
{
    // Below the large-object-heap threshold; one buffer per direction from the shared pool.
    internal const int BufferSize = 64 * 1024;

    public static async Task<BridgeResult> RunAsync(Socket upstream, TunnelStream tunnel, CancellationToken cancellationToken)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var toTunnel = UpstreamToTunnelAsync(upstream, tunnel, linked.Token);
        var toUpstream = TunnelToUpstreamAsync(tunnel, upstream, linked.Token);

        var first = await Task.WhenAny(toTunnel, toUpstream).ConfigureAwait(false);
        var firstResult = await first.ConfigureAwait(false);
        BridgeResult result;
        if (firstResult == BridgeResult.Completed)
        {
            // One direction ended cleanly; the other may still carry an answer.
            result = await (first == toTunnel ? toUpstream : toTunnel).ConfigureAwait(false);
        }
        else
        {
            result = firstResult;
            linked.Cancel();
            await (first == toTunnel ? toUpstream : toTunnel).ConfigureAwait(false);
        }

        if (result == BridgeResult.Completed)
        {
            upstream.Dispose();
            await tunnel.DisposeAsync().ConfigureAwait(false);
        }
        else
        {
            Reset(upstream);
            tunnel.Abort();
        }

        return result;
    }

    private static async Task<BridgeResult> UpstreamToTunnelAsync(Socket upstream, TunnelStream tunnel, CancellationToken cancellationToken)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
        try
        {
            while (true)
            {
                int read;
                try
                {
                    read = await upstream.ReceiveAsync(buffer.AsMemory(), SocketFlags.None, cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return BridgeResult.Canceled;
                }
                catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
                {
                    return BridgeResult.UpstreamFailed;
                }

                try
                {
                    if (read == 0)
                    {
                        await tunnel.CompleteWritesAsync(cancellationToken).ConfigureAwait(false);
                        return BridgeResult.Completed;
                    }

                    await tunnel.WriteAsync(buffer.AsMemory(0, read), cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return BridgeResult.Canceled;
                }
                catch (Exception ex) when (ex is IOException or ObjectDisposedException)
                {
                    return BridgeResult.TunnelFailed;
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer, clearArray: true);
        }
    }

    private static async Task<BridgeResult> TunnelToUpstreamAsync(TunnelStream tunnel, Socket upstream, CancellationToken cancellationToken)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
        try
        {
            while (true)
            {
                int read;
                try
                {
                    read = await tunnel.ReadAsync(buffer.AsMemory(), cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return BridgeResult.Canceled;
                }
                catch (Exception ex) when (ex is IOException or ObjectDisposedException)
                {
                    return BridgeResult.TunnelFailed;
                }

                try
                {
                    if (read == 0)
                    {
                        upstream.Shutdown(SocketShutdown.Send);
                        return BridgeResult.Completed;
                    }

                    await upstream.SendAsync(buffer.AsMemory(0, read), SocketFlags.None, cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return BridgeResult.Canceled;
                }
                catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
                {
                    return BridgeResult.UpstreamFailed;
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer, clearArray: true);
        }
    }

    /// <summary>Closes a socket with a reset, so its peer knows the connection failed rather than ended.</summary>
    internal static void Reset(Socket socket)
    {
        try
        {
            socket.LingerState = new LingerOption(true, 0);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // Already closed.
        }

        socket.Dispose();
    }
}
