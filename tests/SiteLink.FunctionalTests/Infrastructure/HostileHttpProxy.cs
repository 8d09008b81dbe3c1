using System.Net;
using System.Net.Sockets;
using System.Text;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>
/// An HTTP proxy on 127.0.0.1:0 that behaves as a test scripts it: it reads each CONNECT request (up to its blank line),
/// then hands the socket to the script — which may trickle, lie, close, or be honest (<see cref="TunnelAsync"/>). It
/// counts the client connections open now, so a test can see the agent close what it no longer uses. Stops by itself
/// when disposed, closing every socket.
/// </summary>
internal sealed class HostileHttpProxy : IAsyncDisposable
{
    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    private readonly Func<Socket, string, CancellationToken, Task> _script;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Socket> _open = [];
    private readonly List<Task> _handlers = [];
    private readonly Lock _gate = new();
    private readonly Task _acceptLoop;
    private int _accepted;

    /// <param name="script">Runs per connection with the CONNECT request's text; the socket is closed when it returns.</param>
    public HostileHttpProxy(Func<Socket, string, CancellationToken, Task> script)
    {
        _script = script;
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(128);
        _acceptLoop = AcceptLoopAsync();
    }

    public Uri Address => new($"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndPoint!).Port}");

    /// <summary>Client connections accepted so far.</summary>
    public int Accepted => Volatile.Read(ref _accepted);

    /// <summary>Client connections open now (the agent has not closed them, nor the script).</summary>
    public int OpenConnections
    {
        get
        {
            lock (_gate)
            {
                return _open.Count;
            }
        }
    }

    /// <summary>Resets every open connection (a proxy restarting under its clients); it goes on accepting.</summary>
    public void ResetAll()
    {
        lock (_gate)
        {
            foreach (var socket in _open)
            {
                socket.LingerState = new LingerOption(true, 0);
                socket.Dispose();
            }
        }
    }

    /// <summary>The honest script: answers 200 and relays bytes both ways to the requested host:port.</summary>
    public static async Task TunnelAsync(Socket client, string request, CancellationToken cancellationToken)
    {
        var authority = request.Split(' ')[1];
        var colon = authority.LastIndexOf(':');
        using var server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await server.ConnectAsync(IPAddress.Parse(authority[..colon]), int.Parse(authority[(colon + 1)..], System.Globalization.CultureInfo.InvariantCulture), cancellationToken);
        await client.SendAsync("HTTP/1.1 200 Connection established\r\n\r\n"u8.ToArray(), cancellationToken);
        using var either = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        await Task.WhenAny(PumpAsync(client, server, either.Token), PumpAsync(server, client, either.Token));
        await either.CancelAsync();
    }

    /// <summary>Reads (and drops) what the client sends until it closes its side: a script that says nothing more.</summary>
    public static async Task UntilClosedAsync(Socket client, CancellationToken cancellationToken)
    {
        var buffer = new byte[4096];
        while (await client.ReceiveAsync(buffer, cancellationToken) > 0)
        {
        }
    }

    private static async Task PumpAsync(Socket from, Socket to, CancellationToken cancellationToken)
    {
        var buffer = new byte[64 * 1024];
        try
        {
            int n;
            while ((n = await from.ReceiveAsync(buffer, cancellationToken)) > 0)
            {
                await to.SendAsync(buffer.AsMemory(0, n), cancellationToken);
            }
        }
        catch (Exception ex) when (ex is SocketException or OperationCanceledException or ObjectDisposedException)
        {
        }
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(_stop.Token);
            }
            catch (Exception ex) when (ex is SocketException or OperationCanceledException or ObjectDisposedException)
            {
                return;
            }

            Interlocked.Increment(ref _accepted);
            lock (_gate)
            {
                _open.Add(client);
                _handlers.Add(HandleAsync(client));
            }
        }
    }

    private async Task HandleAsync(Socket client)
    {
        try
        {
            var request = await ReadRequestAsync(client, _stop.Token);
            if (request is not null)
            {
                await _script(client, request, _stop.Token);
            }
        }
        catch (Exception ex) when (ex is SocketException or OperationCanceledException or ObjectDisposedException or IOException)
        {
        }
        finally
        {
            lock (_gate)
            {
                _open.Remove(client);
            }

            client.Dispose();
        }
    }

    private static async Task<string?> ReadRequestAsync(Socket client, CancellationToken cancellationToken)
    {
        var received = new List<byte>();
        var one = new byte[1];
        while (received.Count < 16 * 1024)
        {
            if (await client.ReceiveAsync(one, cancellationToken) == 0)
            {
                return null;
            }

            received.Add(one[0]);
            if (received.Count >= 4 && received[^4] == '\r' && received[^3] == '\n' && received[^2] == '\r' && received[^1] == '\n')
            {
                return Encoding.Latin1.GetString(received.ToArray());
            }
        }

        return null;
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Dispose();
        await _acceptLoop;
        ResetAll();
        Task[] handlers;
        lock (_gate)
        {
            handlers = [.. _handlers];
        }

        await Task.WhenAll(handlers).WaitAsync(TimeSpan.FromSeconds(10));
        _stop.Dispose();
    }
}
