using System.Net;
using System.Net.Sockets;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>
/// A TCP proxy on 127.0.0.1:0 in front of a target, for fault injection: it passes traffic, black-holes it (stops
/// forwarding in both directions while keeping every socket open — the half-open case), resets every connection,
/// adds latency, and heals. Stops by itself when disposed.
/// </summary>
internal sealed class FaultProxy : IAsyncDisposable
{
    private readonly IPEndPoint _target;
    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    private readonly CancellationTokenSource _stop = new();
    private readonly List<(Socket Client, Socket Server)> _pairs = [];
    private readonly List<Task> _pumps = [];
    private readonly Lock _gate = new();
    private readonly Task _acceptLoop;
    private TaskCompletionSource _flowing = NewOpenGate();
    private TimeSpan _latency;
    private int _accepted;

    public FaultProxy(IPEndPoint target)
    {
        _target = target;
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(128);
        _acceptLoop = AcceptLoopAsync();
    }

    public int Port => ((IPEndPoint)_listener.LocalEndPoint!).Port;

    /// <summary>Connections accepted so far.</summary>
    public int Accepted => Volatile.Read(ref _accepted);

    /// <summary>Connection pairs open now.</summary>
    public int OpenConnections
    {
        get
        {
            lock (_gate)
            {
                return _pairs.Count;
            }
        }
    }

    public TimeSpan Latency
    {
        get => _latency;
        set => _latency = value;
    }

    private static TaskCompletionSource NewOpenGate()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        gate.SetResult();
        return gate;
    }

    /// <summary>Stops forwarding in both directions; sockets stay open, bytes already read are held, not dropped.</summary>
    public void BlackHole()
    {
        lock (_gate)
        {
            if (_flowing.Task.IsCompleted)
            {
                _flowing = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            }
        }
    }

    /// <summary>Forwards again.</summary>
    public void Heal()
    {
        lock (_gate)
        {
            _flowing.TrySetResult();
        }
    }

    /// <summary>Resets every open connection on both sides (RST, not FIN).</summary>
    public void ResetAll()
    {
        (Socket Client, Socket Server)[] pairs;
        lock (_gate)
        {
            pairs = [.. _pairs];
            _pairs.Clear();
        }

        foreach (var (client, server) in pairs)
        {
            Reset(client);
            Reset(server);
        }
    }

    private static void Reset(Socket socket)
    {
        try
        {
            socket.LingerState = new LingerOption(true, 0);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
        }

        socket.Dispose();
    }

    private Task WhenFlowingAsync()
    {
        lock (_gate)
        {
            return _flowing.Task;
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
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }

            Interlocked.Increment(ref _accepted);
            var server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            client.NoDelay = true;
            try
            {
                await server.ConnectAsync(_target, _stop.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException)
            {
                Reset(client);
                server.Dispose();
                continue;
            }

            lock (_gate)
            {
                _pairs.Add((client, server));
                _pumps.Add(RelayPairAsync(client, server));
            }
        }
    }

    private async Task RelayPairAsync(Socket client, Socket server)
    {
        await Task.WhenAll(PumpAsync(client, server), PumpAsync(server, client));
        lock (_gate)
        {
            _pairs.Remove((client, server));
        }

        client.Dispose();
        server.Dispose();
    }

    private async Task PumpAsync(Socket from, Socket to)
    {
        var buffer = new byte[64 * 1024];
        try
        {
            while (true)
            {
                await WhenFlowingAsync().WaitAsync(_stop.Token);
                var read = await from.ReceiveAsync(buffer, SocketFlags.None, _stop.Token);
                await WhenFlowingAsync().WaitAsync(_stop.Token);
                if (_latency > TimeSpan.Zero)
                {
                    await Task.Delay(_latency, _stop.Token);
                }

                if (read == 0)
                {
                    to.Shutdown(SocketShutdown.Send);
                    return;
                }

                await to.SendAsync(buffer.AsMemory(0, read), SocketFlags.None, _stop.Token);
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or OperationCanceledException)
        {
            // One side failed or was reset: reset the other too, as a network path would.
            lock (_gate)
            {
                _pairs.RemoveAll(p => p.Client == from || p.Server == from || p.Client == to || p.Server == to);
            }

            Reset(from);
            Reset(to);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Dispose();
        Heal();
        ResetAll();
        await _acceptLoop.DefaultTimeout();
        Task[] pumps;
        lock (_gate)
        {
            pumps = [.. _pumps];
        }

        await Task.WhenAll(pumps).DefaultTimeout();
        _stop.Dispose();
    }
}
