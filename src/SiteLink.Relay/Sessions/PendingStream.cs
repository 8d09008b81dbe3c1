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
    }

    public string Id { get; }

    public AgentSession Session { get; }

    public string BindId { get; }

    public string EndpointName { get; }

    public string CloudEndpoint { get; }

    public Socket Client { get; }

    public string ClientAddress => Client.RemoteEndPoint?.ToString() ?? "unknown";

    public ITimer? Expiry { get; set; }

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
