namespace SiteLink.Relay.Sessions;

/// <summary>
/// A public connection offered to an agent and waiting for the agent's Stream call. Claimed at most once: by the
/// agent's stream, by the agent's refusal, by its expiry, or by the end of the session; whoever claims it owns the
/// connection.
/// </summary>
internal sealed class PendingStream
{
    private int _claimed;

    public PendingStream(string id, AgentSession session, string bindId, PublicConnection client)
    {
        Id = id;
        Session = session;
        BindId = bindId;
        Client = client;
    }

    public string Id { get; }

    public AgentSession Session { get; }

    public string BindId { get; }

    /// <summary>The internal endpoint name the connection is for.</summary>
    public string EndpointName => Client.Endpoint.Endpoint;

    /// <summary>The cloud endpoint it came to.</summary>
    public string CloudEndpoint => Client.Endpoint.Name;

    public PublicConnection Client { get; }

    public string ClientAddress => Client.Address;

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
