using System.Buffers;
using System.Net.Sockets;

namespace SiteLink.Internal;

/// <summary>
/// Socket helpers shared by the agent's and the relay's bridges (compiled into both assemblies): pooled reads that
/// hold no buffer while a connection is idle, and closing with a reset.
/// </summary>
internal static class SocketIo
{
    /// <summary>
    /// Reads up to <paramref name="size"/> bytes into a buffer rented from the shared pool. Unless
    /// <paramref name="dataLikely"/>, it first waits with a zero-byte read, so an idle connection holds no buffer, and
    /// then rents only as much as has arrived (at most <paramref name="size"/>): a few bytes, or the end of the stream,
    /// take a small array, not the largest a read could fill.
    /// The caller gives the buffer back with <see cref="Return"/>. A read of 0 means the peer finished sending.
    /// </summary>
    public static async ValueTask<(byte[] Buffer, int Read)> ReceivePooledAsync(Socket socket, int size, bool dataLikely, CancellationToken cancellationToken)
    {
        var want = size;
        if (!dataLikely)
        {
            await socket.ReceiveAsync(Memory<byte>.Empty, SocketFlags.None, cancellationToken).ConfigureAwait(false);
            // The caller holds the buffer until the bytes are written on (behind every other connection's writes on a
            // shared transport). Renting the full size for each small read took one array per busy connection, far
            // more than the shared pool keeps when thousands are busy at once (10,000 connections each echoing a byte,
            // or ending): every one a fresh 64 KiB array that outlived the young generations and stayed in the heap
            // as garbage. 0 available after the wait is the end of the stream (or a reset): the read below says which.
            want = Math.Clamp(socket.Available, 1, size);
        }

        var buffer = ArrayPool<byte>.Shared.Rent(want);
        try
        {
            var read = await socket.ReceiveAsync(buffer.AsMemory(0, Math.Min(buffer.Length, size)), SocketFlags.None, cancellationToken).ConfigureAwait(false);
            return (buffer, read);
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(buffer);
            throw;
        }
    }

    /// <summary>Gives a buffer back, clearing what was read into it: another connection (maybe another tenant's) rents it next.</summary>
    public static void Return(byte[] buffer, int read)
    {
        buffer.AsSpan(0, read).Clear();
        ArrayPool<byte>.Shared.Return(buffer);
    }

    /// <summary>Closes a socket with a reset, so its peer knows the connection failed rather than ended.</summary>
    public static void Reset(Socket socket)
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
