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
    /// <paramref name="dataLikely"/>, it first waits with a zero-byte read, so an idle connection holds no buffer.
    /// The caller gives the buffer back with <see cref="Return"/>. A read of 0 means the peer finished sending.
    /// </summary>
    public static async ValueTask<(byte[] Buffer, int Read)> ReceivePooledAsync(Socket socket, int size, bool dataLikely, CancellationToken cancellationToken)
    {
        if (!dataLikely)
        {
            await socket.ReceiveAsync(Memory<byte>.Empty, SocketFlags.None, cancellationToken).ConfigureAwait(false);
        }

        var buffer = ArrayPool<byte>.Shared.Rent(size);
        try
        {
            var read = await socket.ReceiveAsync(buffer.AsMemory(0, size), SocketFlags.None, cancellationToken).ConfigureAwait(false);
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
