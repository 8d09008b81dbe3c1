using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>
/// A real TCP service on 127.0.0.1:0 that serves each connection with a delegate, and stops by itself when disposed.
/// </summary>
internal sealed class TestUpstream : IAsyncDisposable
{
    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    private readonly Func<Socket, CancellationToken, Task> _serve;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _connections = [];
    private readonly Task _acceptLoop;
    private int _accepted;
    private int _open;

    private TestUpstream(Func<Socket, CancellationToken, Task> serve)
    {
        _serve = serve;
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(512);
        _acceptLoop = AcceptLoopAsync();
    }

    public int Port => ((IPEndPoint)_listener.LocalEndPoint!).Port;

    /// <summary>The address a forward endpoint points at: <c>tcp://127.0.0.1:port</c>.</summary>
    public Uri Uri => Loopback.Tcp(Port);

    public int Accepted => Volatile.Read(ref _accepted);

    /// <summary>Connections accepted and not yet finished.</summary>
    public int Open => Volatile.Read(ref _open);

    /// <summary>Echoes every byte back; after the client's FIN it finishes sending and closes.</summary>
    public static TestUpstream Echo() => new(EchoAsync);

    /// <summary>Reads until the client's FIN, then answers with the SHA-256 of what it read followed by the byte count (8 bytes, little-endian).</summary>
    public static TestUpstream DigestAfterEof() => new(DigestAsync);

    public static TestUpstream Custom(Func<Socket, CancellationToken, Task> serve) => new(serve);

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await _listener.AcceptAsync(_stop.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }

            Interlocked.Increment(ref _accepted);
            Interlocked.Increment(ref _open);
            lock (_connections)
            {
                _connections.Add(ServeOneAsync(socket));
            }
        }
    }

    private async Task ServeOneAsync(Socket socket)
    {
        using (socket)
        {
            try
            {
                await _serve(socket, _stop.Token);
            }
            catch (Exception ex) when (ex is SocketException or OperationCanceledException or IOException)
            {
                // The test decides what a failed connection means; the upstream just stops serving it.
            }
            finally
            {
                Interlocked.Decrement(ref _open);
            }
        }
    }

    private static async Task EchoAsync(Socket socket, CancellationToken cancellationToken)
    {
        var buffer = new byte[64 * 1024];
        while (true)
        {
            var read = await socket.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);
            if (read == 0)
            {
                socket.Shutdown(SocketShutdown.Send);
                return;
            }

            await socket.SendAsync(buffer.AsMemory(0, read), SocketFlags.None, cancellationToken);
        }
    }

    private static async Task DigestAsync(Socket socket, CancellationToken cancellationToken)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[64 * 1024];
        long total = 0;
        while (true)
        {
            var read = await socket.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);
            if (read == 0)
            {
                break;
            }

            hash.AppendData(buffer, 0, read);
            total += read;
        }

        var reply = new byte[40];
        hash.GetHashAndReset().CopyTo(reply, 0);
        BitConverter.TryWriteBytes(reply.AsSpan(32), total);
        await socket.SendAsync(reply, SocketFlags.None, cancellationToken);
        socket.Shutdown(SocketShutdown.Send);
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Dispose();
        await _acceptLoop.DefaultTimeout();
        Task[] connections;
        lock (_connections)
        {
            connections = [.. _connections];
        }

        await Task.WhenAll(connections).DefaultTimeout();
        _stop.Dispose();
    }
}

/// <summary>Upstream addresses on the loopback interface.</summary>
internal static class Loopback
{
    /// <summary><c>tcp://127.0.0.1:port</c>, as a forward endpoint takes it.</summary>
    public static Uri Tcp(int port) => new($"tcp://127.0.0.1:{port}");
}
