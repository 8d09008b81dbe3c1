using System.Net.Sockets;
using SiteLink.Internal;

namespace SiteLink;

/// <summary>
/// Copies bytes between a local upstream socket and a tunnelled connection, both directions at once, propagating
/// half-close: the end of one side's sending direction becomes a shutdown of the other side's. A failure on either
/// side aborts both, so nothing is left half-open.
/// </summary>
internal static class StreamBridge
{
    // Below the large-object-heap threshold; rented from the shared pool only while data is moving.
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
            SocketIo.Reset(upstream);
            tunnel.Abort();
        }

        return result;
    }

    private static async Task<BridgeResult> UpstreamToTunnelAsync(Socket upstream, TunnelStream tunnel, CancellationToken cancellationToken)
    {
        var dataLikely = false;
        while (true)
        {
            byte[] buffer;
            int read;
            try
            {
                (buffer, read) = await SocketIo.ReceivePooledAsync(upstream, BufferSize, dataLikely, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return BridgeResult.Canceled;
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                return BridgeResult.UpstreamFailed;
            }

            // A full buffer means more is probably waiting: skip the zero-byte wait next time.
            dataLikely = read == BufferSize;
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
            finally
            {
                SocketIo.Return(buffer, read);
            }
        }
    }

    private static async Task<BridgeResult> TunnelToUpstreamAsync(TunnelStream tunnel, Socket upstream, CancellationToken cancellationToken)
    {
        while (true)
        {
            ReadOnlyMemory<byte> chunk;
            try
            {
                // The frame's own memory goes straight to the socket: no buffer, no copy.
                chunk = await tunnel.ReadChunkAsync(cancellationToken).ConfigureAwait(false);
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
                if (chunk.IsEmpty)
                {
                    upstream.Shutdown(SocketShutdown.Send);
                    return BridgeResult.Completed;
                }

                await upstream.SendAsync(chunk, SocketFlags.None, cancellationToken).ConfigureAwait(false);
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
}
