namespace SiteLink.Relay.Events;

/// <summary>
/// Something that happened on the relay that a vendor may subscribe to (docs/operations.md, "Events"): a session
/// connected or ended, an endpoint was bound, a connection refused, a token revoked, an agent refused for its version.
/// </summary>
/// <param name="Type">The event type, e.g. <c>session.connected</c> (<see cref="RelayEventTypes"/>).</param>
/// <param name="Tenant">The tenant it concerns (lower case).</param>
/// <param name="Subject">What it is about: a session id, an endpoint name, a token name.</param>
/// <param name="Time">When it happened.</param>
/// <param name="Data">The event's details, as JSON-serialisable values (strings, numbers, booleans, nested dictionaries or lists).</param>
public sealed record RelayEvent(string Type, string Tenant, string Subject, DateTimeOffset Time, IReadOnlyDictionary<string, object?> Data);

/// <summary>The event types the relay publishes.</summary>
public static class RelayEventTypes
{
    /// <summary>An agent session started.</summary>
    public const string SessionConnected = "session.connected";

    /// <summary>An agent session ended; <c>reason</c> says why.</summary>
    public const string SessionDisconnected = "session.disconnected";

    /// <summary>An agent (same tenant and client id) started a session again after one of its sessions ended.</summary>
    public const string SessionReconnected = "session.reconnected";

    /// <summary>A session bound an internal endpoint.</summary>
    public const string EndpointBound = "endpoint.bound";

    /// <summary>A session released an internal endpoint (unbind, or the session ended).</summary>
    public const string EndpointUnbound = "endpoint.unbound";

    /// <summary>A public connection was refused; <c>reason</c> says why (coalesced: <c>count</c> per second and reason).</summary>
    public const string ConnectionRefused = "connection.refused";

    /// <summary>An authtoken was revoked (by the API, a configuration change or expiry).</summary>
    public const string TokenRevoked = "token.revoked";

    /// <summary>An agent was refused because its SDK version is older than the relay's <c>MinimumAgentVersion</c>.</summary>
    public const string AgentVersionRefused = "agent.version_refused";

    /// <summary>Every type, for validating subscriptions.</summary>
    public static readonly IReadOnlyList<string> All =
        [SessionConnected, SessionDisconnected, SessionReconnected, EndpointBound, EndpointUnbound, ConnectionRefused, TokenRevoked, AgentVersionRefused];
}

/// <summary>Where the relay's components report <see cref="RelayEvent"/>s. Publishing never blocks and never throws.</summary>
public interface IRelayEventSink
{
    /// <summary>Reports an event; returns at once.</summary>
    void Publish(RelayEvent relayEvent);
}

/// <summary>The sink when nothing listens.</summary>
internal sealed class NullRelayEventSink : IRelayEventSink
{
    public void Publish(RelayEvent relayEvent)
    {
    }
}
