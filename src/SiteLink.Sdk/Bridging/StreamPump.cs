using System.Buffers;
using System.Net.Sockets;
using System.Security.Authentication;

namespace SiteLink.Bridging;

/// <summary>One side of a pumped connection: its stream, how to end its sending direction, abort it, and close it.</summary>
internal readonly record struct Duplex(Stream Stream, Func<ValueTask> CompleteWrites, Action Abort, Func<ValueTask> Close);

/// <summary>
/// Copies bytes between two streams, both directions at once, with half-close, for connections where TLS ends at the
/// agent (to the public client, or to the upstream) and the socket fast path of <see cref="StreamBridge"/> does not
/// apply. A failure on either side aborts both. Holds one pooled 64 KiB buffer per direction while the connection lives.
/// </summary>
internal static class StreamPump
{
    public static async Task<BridgeResult> RunAsync(Duplex upstream, Duplex tunnel, CancellationToken cancellationToken)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var toTunnel = CopyAsync(upstream.Stream, tunnel, BridgeResult.UpstreamFailed, BridgeResult.TunnelFailed, linked.Token);
        var toUpstream = CopyAsync(tunnel.Stream, upstream, BridgeResult.TunnelFailed, BridgeResult.UpstreamFailed, linked.Token);

        var first = await Task.WhenAny(toTunnel, toUpstream).ConfigureAwait(false);
        var result = await first.ConfigureAwait(false);
        if (result == BridgeResult.Completed)
        {
            // One direction ended cleanly; the other may still carry an answer.
            result = await (first == toTunnel ? toUpstream : toTunnel).ConfigureAwait(false);
        }
        else
        {
            await linked.CancelAsync().ConfigureAwait(false);
            await (first == toTunnel ? toUpstream : toTunnel).ConfigureAwait(false);
        }

        if (result == BridgeResult.Completed)
        {
            await upstream.Close().ConfigureAwait(false);
            await tunnel.Close().ConfigureAwait(false);
        }
        else
        {
            upstream.Abort();
            tunnel.Abort();
        }

        return result;
    }

    private static async Task<BridgeResult> CopyAsync(Stream from, Duplex to, BridgeResult readFailed, BridgeResult writeFailed, CancellationToken cancellationToken)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(StreamBridge.BufferSize);
        var used = 0;
        try
        {
            while (true)
            {
                int read;
                try
                {
                    read = await from.ReadAsync(buffer.AsMemory(0, StreamBridge.BufferSize), cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return BridgeResult.Canceled;
                }
                catch (Exception ex) when (ex is IOException or ObjectDisposedException or SocketException or AuthenticationException or InvalidOperationException)
                {
                    return readFailed;
                }

                used = Math.Max(used, read);
                try
                {
                    if (read == 0)
                    {
                        await to.CompleteWrites().ConfigureAwait(false);
                        return BridgeResult.Completed;
                    }

                    await to.Stream.WriteAsync(buffer.AsMemory(0, read), cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return BridgeResult.Canceled;
                }
                catch (Exception ex) when (ex is IOException or ObjectDisposedException or SocketException or InvalidOperationException)
                {
                    return writeFailed;
                }
            }
        }
        finally
        {
            buffer.AsSpan(0, used).Clear();
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
