using System.Net.Sockets;
using SiteLink.Internal;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;

namespace SiteLink.Relay.Sessions;

/// <summary>
/// A public client's connection to a cloud endpoint, from accept to close. Whoever owns it closes it exactly once —
/// cleanly (<see cref="Close"/>) or with a reset (<see cref="Reset"/>) — which also gives its place back to the
/// endpoint's connection limits.
/// </summary>
internal sealed class PublicConnection
{
    private Action? _release;
    private int _closed;

    public PublicConnection(Socket socket, CloudEndpointOptions endpoint, Action? release = null, ReadOnlyMemory<byte> prefix = default, string? sni = null)
        : this(new SocketTransport(socket, prefix), socket.RemoteEndPoint?.ToString() ?? "unknown", endpoint, release, sni)
    {
    }

    public PublicConnection(IPublicTransport transport, string address, CloudEndpointOptions endpoint, Action? release = null, string? sni = null)
    {
        Transport = transport;
        Endpoint = endpoint;
        _release = release;
        // Read once, now: the socket may be closed (and RemoteEndPoint throw) by the time anyone logs it.
        Address = address;
        Sni = sni;
    }

    /// <summary>The bytes of the connection.</summary>
    public IPublicTransport Transport { get; }

    /// <summary>The cloud endpoint it came to.</summary>
    public CloudEndpointOptions Endpoint { get; }

    /// <summary>The client's <c>ip:port</c>.</summary>
    public string Address { get; }

    /// <summary>The TLS server name the client asked for (TLS and HTTPS endpoints), else null.</summary>
    public string? Sni { get; }

    /// <summary>Refuses the connection before it was bridged: the client is told why where it can be (HTTP), else reset.</summary>
    public void Refuse(RefusalReason reason, string message)
    {
        if (TryClose())
        {
            Transport.Refuse(reason, message);
            Release();
        }
    }

    /// <summary>Closes the connection with a reset, so the client knows it failed rather than ended.</summary>
    public void Reset()
    {
        if (TryClose())
        {
            Transport.Reset();
            Release();
        }
    }

    /// <summary>Closes the connection cleanly (what was sent is delivered, then FIN).</summary>
    public void Close()
    {
        if (TryClose())
        {
            Transport.Close();
            Release();
        }
    }

    /// <summary>Runs <paramref name="action"/> once when the connection closes (at once if it already has).</summary>
    public void OnClosed(Action action)
    {
        while (true)
        {
            var current = Volatile.Read(ref _release);
            if (Interlocked.CompareExchange(ref _release, current is null ? action : current + action, current) == current)
            {
                break;
            }
        }

        if (Volatile.Read(ref _closed) != 0)
        {
            // Closed meanwhile: whatever the close did not run (ours, maybe) runs now, exactly once.
            Release();
        }
    }

    private bool TryClose() => Interlocked.Exchange(ref _closed, 1) == 0;

    private void Release() => Interlocked.Exchange(ref _release, null)?.Invoke();
}

/// <summary>
/// The public side of a bridged connection: a TCP socket, or the in-memory connection an HTTP cloud endpoint's
/// forwarder opened. Failures of the peer surface as <see cref="IOException"/>, <see cref="SocketException"/> or
/// <see cref="ObjectDisposedException"/>.
/// </summary>
internal interface IPublicTransport
{
    /// <summary>
    /// Reads up to <paramref name="size"/> bytes into a pooled buffer (given back with <see cref="SocketIo.Return"/>);
    /// 0 when the client finished sending.
    /// </summary>
    ValueTask<(byte[] Buffer, int Read)> ReceivePooledAsync(int size, bool dataLikely, CancellationToken cancellationToken);

    /// <summary>Sends <paramref name="data"/> to the client; completes once it may be reused.</summary>
    ValueTask SendAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken);

    /// <summary>Ends the direction toward the client (FIN); reading goes on.</summary>
    void ShutdownSend();

    /// <summary>Ends the connection as failed.</summary>
    void Reset();

    /// <summary>Ends the connection cleanly.</summary>
    void Close();

    /// <summary>The agent opened its stream: bridging starts.</summary>
    void OnBridged()
    {
    }

    /// <summary>The agent refused a connection already being bridged (a parked stream): the reset that follows says why where it can.</summary>
    void NoteRefusal(RefusalReason reason, string message)
    {
    }

    /// <summary>Ends a connection nobody will serve; by default a reset.</summary>
    void Refuse(RefusalReason reason, string message) => Reset();
}

/// <summary>A TCP client; <c>prefix</c> holds bytes already read from it (a TLS ClientHello peeked for its SNI), returned first.</summary>
internal sealed class SocketTransport(Socket socket, ReadOnlyMemory<byte> prefix) : IPublicTransport
{
    private ReadOnlyMemory<byte> _prefix = prefix;

    public Socket Socket => socket;

    public async ValueTask<(byte[] Buffer, int Read)> ReceivePooledAsync(int size, bool dataLikely, CancellationToken cancellationToken)
    {
        if (!_prefix.IsEmpty)
        {
            var n = Math.Min(size, _prefix.Length);
            var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(n);
            _prefix.Span[..n].CopyTo(buffer);
            _prefix = _prefix[n..];
            return (buffer, n);
        }

        return await SocketIo.ReceivePooledAsync(socket, size, dataLikely, cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask SendAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken) =>
        await socket.SendAsync(data, SocketFlags.None, cancellationToken).ConfigureAwait(false);

    public void ShutdownSend()
    {
        try
        {
            socket.Shutdown(SocketShutdown.Send);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // The client is already gone; the other direction reports it.
        }
    }

    public void Reset() => SocketIo.Reset(socket);

    public void Close() => socket.Dispose();
}
