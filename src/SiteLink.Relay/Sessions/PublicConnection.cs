using System.Net.Sockets;
using SiteLink.Internal;
using SiteLink.Relay.Configuration;

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

    public PublicConnection(Socket socket, CloudEndpointOptions endpoint, Action? release = null)
    {
        Socket = socket;
        Endpoint = endpoint;
        _release = release;
        // Read once, now: the socket may be closed (and RemoteEndPoint throw) by the time anyone logs it.
        Address = socket.RemoteEndPoint?.ToString() ?? "unknown";
    }

    public Socket Socket { get; }

    /// <summary>The cloud endpoint it came to.</summary>
    public CloudEndpointOptions Endpoint { get; }

    /// <summary>The client's <c>ip:port</c>.</summary>
    public string Address { get; }

    /// <summary>Closes the connection with a reset, so the client knows it failed rather than ended.</summary>
    public void Reset()
    {
        if (TryClose())
        {
            SocketIo.Reset(Socket);
            Release();
        }
    }

    /// <summary>Closes the connection cleanly (what was sent is delivered, then FIN).</summary>
    public void Close()
    {
        if (TryClose())
        {
            Socket.Dispose();
            Release();
        }
    }

    private bool TryClose() => Interlocked.Exchange(ref _closed, 1) == 0;

    private void Release() => Interlocked.Exchange(ref _release, null)?.Invoke();
}
