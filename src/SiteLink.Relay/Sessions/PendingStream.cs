using System.Net.Sockets;

namespace SiteLink.Relay.Sessions;

/// <summary>
/// A public connection offered to an agent and waiting for the agent's Stream call. Claimed at most once: by the
/// agent's stream, by the agent's refusal, by its expiry, or by the end of the session; whoever claims it owns the socket.
/// </summary>
internal sealed class PendingStream
{
    private int _claimed;

    public PendingStream(string id, AgentSession session, string bindId, string endpointName, string cloudEndpoint, Socket client)
    {
        Id = id;
        Session = session;
        BindId = bindId;
        EndpointName = endpointName;
        CloudEndpoint = cloudEndpoint;
        Client = client;
        // Read once, now: the socket may be closed (and RemoteEndPoint throw) by the time anyone logs it.
        ClientAddress = client.RemoteEndPoint?.ToString() ?? "unknown";
    }

    public string Id { get; }

    public AgentSession Session { get; }

    public string BindId { get; }

    public string EndpointName { get; }

    public string CloudEndpoint { get; }

    public Socket Client { get; }

    public string ClientAddress { get; }

    public ITimer? Expiry { get; set; }

    /// <summary>For a connection on a parked stream: cancelled when the agent refuses it, which ends the bridge.</summary>
    public CancellationTokenSource? Refusal { get; set; }

    /// <summary>Takes ownership; true for exactly one caller.</summary>
    public bool TryClaim()
    {
        if (Interlocked.Exchange(ref _claimed, 1) != 0)
        {
            return false;
        }

        Expiry?.Dispose();
        return true;
    }
}
