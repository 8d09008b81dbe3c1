using System.Net.Sockets;
using System.Security.Cryptography;

namespace SiteLink.FunctionalTests.Infrastructure;

internal static class SocketTestExtensions
{
    /// <summary>Sends all of <paramref name="data"/> in chunks of <paramref name="chunk"/> bytes.</summary>
    public static async Task SendAllAsync(this Socket socket, ReadOnlyMemory<byte> data, int chunk = 64 * 1024)
    {
        for (var offset = 0; offset < data.Length; offset += chunk)
        {
            var slice = data.Slice(offset, Math.Min(chunk, data.Length - offset));
            await socket.SendAsync(slice, SocketFlags.None);
        }
    }

    /// <summary>Reads until the peer's FIN; returns everything read.</summary>
    public static async Task<byte[]> ReadToEndAsync(this Socket socket)
    {
        using var collected = new MemoryStream();
        var buffer = new byte[64 * 1024];
        while (true)
        {
            var read = await socket.ReceiveAsync(buffer, SocketFlags.None);
            if (read == 0)
            {
                return collected.ToArray();
            }

            collected.Write(buffer, 0, read);
        }
    }

    /// <summary>Reads until the peer's FIN, hashing as it goes; returns the SHA-256 and the byte count.</summary>
    public static async Task<(byte[] Sha256, long Length)> HashToEndAsync(this Socket socket)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[64 * 1024];
        long total = 0;
        while (true)
        {
            var read = await socket.ReceiveAsync(buffer, SocketFlags.None);
            if (read == 0)
            {
                return (hash.GetHashAndReset(), total);
            }

            hash.AppendData(buffer, 0, read);
            total += read;
        }
    }

    /// <summary>
    /// Sends <paramref name="size"/> random bytes and half-closes while reading to the peer's FIN (an echo's whole
    /// answer); returns the SHA-256 of what was sent and of what came back, and the count that came back.
    /// </summary>
    public static async Task<(byte[] Sent, byte[] Received, long Length)> EchoRandomAsync(this Socket socket, int size)
    {
        var payload = RandomNumberGenerator.GetBytes(size);
        var sending = Task.Run(async () =>
        {
            await socket.SendAllAsync(payload);
            socket.Shutdown(SocketShutdown.Send);
        });
        var (received, length) = await socket.HashToEndAsync().DefaultTimeout();
        await sending.DefaultTimeout();
        return (SHA256.HashData(payload), received, length);
    }

    /// <summary>
    /// Connects to <paramref name="to"/> (from <paramref name="from"/> when given, any of 127.0.0.0/8 on loopback) and
    /// waits for the server to close the connection: true when it was closed (FIN or reset, even one so quick that the
    /// connect itself reports it), false when data arrived instead.
    /// </summary>
    public static async Task<bool> ConnectAndWaitForCloseAsync(System.Net.IPEndPoint to, System.Net.IPAddress? from = null)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        if (from is not null)
        {
            socket.Bind(new System.Net.IPEndPoint(from, 0));
        }

        try
        {
            await socket.ConnectAsync(to).DefaultTimeout();
        }
        catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionReset or SocketError.ConnectionRefused)
        {
            return true;
        }

        return await socket.WaitForCloseAsync().DefaultTimeout();
    }

    /// <summary>Waits until the peer closes: returns true on FIN or reset, false if data arrived instead.</summary>
    public static async Task<bool> WaitForCloseAsync(this Socket socket)
    {
        var buffer = new byte[1];
        try
        {
            return await socket.ReceiveAsync(buffer, SocketFlags.None) == 0;
        }
        catch (SocketException)
        {
            return true;
        }
    }

    public static byte[] RandomBytes(int length)
    {
        var data = new byte[length];
        Random.Shared.NextBytes(data);
        return data;
    }
}
