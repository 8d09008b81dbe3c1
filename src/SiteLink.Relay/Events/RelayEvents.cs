using SiteLink.Internal;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Sessions;

namespace SiteLink.Relay.Events;

/// <summary>Publishing the relay's events, one helper per kind of happening, for whatever <see cref="IRelayEventSink"/> is registered.</summary>
public static class RelayEvents
{
    /// <summary>
    /// Publishes <c>token.revoked</c>: the token <paramref name="tokenName"/> of <paramref name="tenant"/> no longer
    /// authenticates (its sessions end). For every way a token is revoked: <c>RelayServer.RevokeToken</c>, a
    /// configuration change, an admin API.
    /// </summary>
    public static void PublishTokenRevoked(this IRelayEventSink sink, string tenant, string tokenName, string reason, DateTimeOffset time)
    {
        ArgumentNullException.ThrowIfNull(sink);
        sink.Publish(new RelayEvent(RelayEventTypes.TokenRevoked, tenant.ToLowerInvariant(), tokenName, time, new Dictionary<string, object?>
        {
            ["tokenName"] = tokenName,
            ["reason"] = reason,
        }));
    }
}

/// <summary>
/// The events of agent sessions: <c>session.connected</c> / <c>.disconnected</c> / <c>.reconnected</c>,
/// <c>endpoint.bound</c> / <c>.unbound</c>. Remembers when each agent (tenant and client id) last disconnected, for
/// <c>session.reconnected</c>: at most <see cref="MaxRemembered"/> agents, the longest gone forgotten first.
/// </summary>
internal sealed class SessionEvents
{
    /// <summary>Agents whose last disconnect is remembered.</summary>
    public const int MaxRemembered = 10_000;


    private readonly IRelayEventSink _sink;
    private readonly string _relayId;
    private readonly TimeProvider _timeProvider;
    private readonly Dictionary<(string Tenant, string ClientId), LinkedListNode<Departure>> _departed = [];
    private readonly LinkedList<Departure> _departures = new();
    private readonly Lock _gate = new();

    public SessionEvents(IRelayEventSink sink, RelayOptions options, TimeProvider timeProvider)
    {
        _sink = sink;
        _relayId = options.RelayId;
        _timeProvider = timeProvider;
    }

    /// <summary>Agents whose last disconnect is remembered now.</summary>
    public int Remembered
    {
        get
        {
            lock (_gate)
            {
                return _departed.Count;
            }
        }
    }

    public void Connected(AgentSession session, string remoteAddress)
    {
        var tenant = session.Token.Tenant;
        // The Hello metadata as the session keeps it: already capped and cleaned (TunnelService).
        var declared = session.Metadata.ToDictionary(e => e.Key, e => (object?)e.Value, StringComparer.Ordinal);

        Publish(RelayEventTypes.SessionConnected, tenant, session.Id, session.StartedAt, new Dictionary<string, object?>
        {
            ["sessionId"] = session.Id,
            ["clientId"] = session.ClientId,
            ["sdkVersion"] = session.SdkVersion,
            ["tokenName"] = session.Token.Name,
            ["remoteAddress"] = remoteAddress,
            ["relayId"] = _relayId,
            ["metadata"] = declared,
        });

        Departure? previous = null;
        if (session.ClientId.Length > 0)
        {
            lock (_gate)
            {
                if (_departed.Remove((tenant, session.ClientId), out var node))
                {
                    _departures.Remove(node);
                    previous = node.Value;
                }
            }
        }

        if (previous is not null)
        {
            Publish(RelayEventTypes.SessionReconnected, tenant, session.Id, session.StartedAt, new Dictionary<string, object?>
            {
                ["sessionId"] = session.Id,
                ["clientId"] = session.ClientId,
                ["previousSessionId"] = previous.SessionId,
                ["downtimeSeconds"] = Seconds(session.StartedAt - previous.At),
                ["relayId"] = _relayId,
            });
        }
    }

    /// <summary>The session is gone: each endpoint it still bound is unbound, then it disconnected.</summary>
    public void Disconnected(AgentSession session, string reason, string? code, IReadOnlyList<BoundEndpoint> unbound)
    {
        foreach (var endpoint in unbound)
        {
            Unbound(session, endpoint);
        }

        var now = _timeProvider.GetUtcNow();
        var tenant = session.Token.Tenant;
        Publish(RelayEventTypes.SessionDisconnected, tenant, session.Id, now, new Dictionary<string, object?>
        {
            ["sessionId"] = session.Id,
            ["clientId"] = session.ClientId,
            ["reason"] = reason,
            ["code"] = code,
            ["durationSeconds"] = Seconds(now - session.StartedAt),
            ["relayId"] = _relayId,
        });

        if (session.ClientId.Length == 0)
        {
            return;
        }

        lock (_gate)
        {
            var key = (tenant, session.ClientId);
            if (_departed.Remove(key, out var stale))
            {
                _departures.Remove(stale);
            }
            else if (_departed.Count >= MaxRemembered && _departures.First is { } oldest)
            {
                _departures.RemoveFirst();
                _departed.Remove(oldest.Value.Key);
            }

            _departed[key] = _departures.AddLast(new Departure(key, session.Id, now));
        }
    }

    public void Bound(AgentSession session, BoundEndpoint endpoint) => PublishEndpoint(RelayEventTypes.EndpointBound, session, endpoint);

    public void Unbound(AgentSession session, BoundEndpoint endpoint) => PublishEndpoint(RelayEventTypes.EndpointUnbound, session, endpoint);

    private void PublishEndpoint(string type, AgentSession session, BoundEndpoint endpoint) =>
        Publish(type, session.Token.Tenant, endpoint.Name, _timeProvider.GetUtcNow(), new Dictionary<string, object?>
        {
            ["endpoint"] = endpoint.Name,
            ["sessionId"] = session.Id,
            ["clientId"] = session.ClientId,
            ["pooling"] = endpoint.Pooling,
            ["kind"] = endpoint.Kind,
        });

    private void Publish(string type, string tenant, string subject, DateTimeOffset time, Dictionary<string, object?> data) =>
        _sink.Publish(new RelayEvent(type, tenant, subject, time, data));

    private static double Seconds(TimeSpan span) => Math.Round(Math.Max(span.TotalSeconds, 0), 3);

    private sealed record Departure((string Tenant, string ClientId) Key, string SessionId, DateTimeOffset At);
}
