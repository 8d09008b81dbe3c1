using System.Diagnostics.Metrics;

namespace SiteLink.Relay.Diagnostics;

/// <summary>Why the relay refused a public connection.</summary>
public enum RefusalReason
{
    /// <summary>No agent serves the endpoint.</summary>
    NoAgent,

    /// <summary>The serving session is at its concurrent or pending stream limit.</summary>
    StreamLimit,

    /// <summary>The agent refused the connection (unknown endpoint, upstream unreachable, overloaded).</summary>
    AgentRefused,

    /// <summary>The agent did not open the stream in time.</summary>
    PairingTimeout,

    /// <summary>The serving session ended before the agent opened the stream.</summary>
    SessionEnded,

    /// <summary>The cloud endpoint carries its <c>MaxConnections</c>.</summary>
    EndpointLimit,

    /// <summary>The client's address carries the cloud endpoint's <c>MaxConnectionsPerClientIp</c>.</summary>
    ClientIpLimit,

    /// <summary>A tls listener: the ClientHello names no server, or one no endpoint serves.</summary>
    UnknownHost,

    /// <summary>A tls listener: no complete, well-formed ClientHello within <c>ClientHelloTimeout</c>.</summary>
    BadClientHello,
}

/// <summary>
/// Running totals of what the relay did (for tests and logs), published as metrics on the <c>SiteLink.Relay</c> meter.
/// </summary>
public sealed class RelayCounters
{
    /// <summary>The relay's meter name.</summary>
    public const string MeterName = "SiteLink.Relay";

    private readonly Counter<long> _connections;
    private readonly UpDownCounter<long> _activeConnections;
    private readonly Counter<long> _refusals;
    private readonly Counter<long> _bytes;
    private readonly UpDownCounter<long> _sessions;
    private readonly UpDownCounter<long> _binds;
    private readonly Counter<long> _sessionEnds;
    private readonly Counter<long> _bindRefusals;

    private readonly long[] _refused = new long[Enum.GetValues<RefusalReason>().Length];
    private long _accepted;
    private long _completed;
    private long _bytesFromClients;
    private long _bytesToClients;
    private long _unknownStreamRequests;
    private long _sessionsTimedOut;
    private long _sessionsTakenOver;
    private long _pairedParked;
    private long _multiplexed;
    private long _authenticationFailures;
    private long _protocolErrors;
    private long _idleTimeouts;
    private long _parkedExpired;
    private long _controlQueuePeakBytes;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, long> _agentConnectionEvents = new(StringComparer.Ordinal);
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, long> _sessionEndReasons = new(StringComparer.Ordinal);
    private readonly Counter<long> _authFailures;
    private readonly Counter<long> _agentConnectionRefusals;
    private readonly Counter<long> _agentConnectionClosures;
    private readonly Counter<long> _idleClosures;
    private readonly Counter<long> _httpErrors;
    private readonly Counter<long> _policyDenials;
    private readonly Counter<long> _versionRefusals;
    private long _agentsVersionRefused;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, long> _policyDenialTotals = new(StringComparer.Ordinal);

    /// <summary>Creates the counters and their instruments on a meter from <paramref name="meterFactory"/> (or a process-wide meter).</summary>
    public RelayCounters(IMeterFactory? meterFactory = null)
    {
        var meter = meterFactory?.Create(MeterName) ?? new Meter(MeterName);
        _sessions = meter.CreateUpDownCounter<long>("sitelink.relay.sessions", "{session}", "Agent sessions connected.");
        _sessionEnds = meter.CreateCounter<long>("sitelink.relay.session.ends", "{session}", "Agent sessions the relay ended, by sitelink.reason (queue_full, timed_out, taken_over, revoked, protocol_error, draining).");
        _binds = meter.CreateUpDownCounter<long>("sitelink.relay.binds", "{bind}", "Internal endpoints bound by agents.");
        _bindRefusals = meter.CreateCounter<long>("sitelink.relay.bind.refusals", "{bind}", "Binds refused, by sitelink.reason (denied, name_taken, invalid, limit_exceeded).");
        _connections = meter.CreateCounter<long>("sitelink.relay.connections", "{connection}", "Public connections paired with an agent stream.");
        _activeConnections = meter.CreateUpDownCounter<long>("sitelink.relay.connection.active", "{connection}", "Public connections being bridged.");
        _refusals = meter.CreateCounter<long>("sitelink.relay.connection.refusals", "{connection}", "Public connections refused, by sitelink.reason.");
        _bytes = meter.CreateCounter<long>("sitelink.relay.io", "By", "Bytes bridged; network.io.direction receive = from public clients.");
        _authFailures = meter.CreateCounter<long>("sitelink.relay.auth.failures", "{call}", "Agent-port calls refused for a missing, unknown or revoked authtoken.");
        _agentConnectionRefusals = meter.CreateCounter<long>("sitelink.relay.agent_connection.refusals", "{connection}", "Agent-port connections closed at accept, by sitelink.reason (connection limits).");
        _agentConnectionClosures = meter.CreateCounter<long>("sitelink.relay.agent_connection.closures", "{connection}", "Agent-port connections the relay closed, by sitelink.reason (pre_authentication_timeout, failed_calls).");
        _httpErrors = meter.CreateCounter<long>("sitelink.relay.http.errors", "{request}", "Requests to http(s) cloud endpoints answered by the relay itself, by sitelink.reason (unknown_host, misdirected, no_agent, agent_refused, agent_timeout, overloaded, upstream_timeout, upstream_error, client_closed).");
        _policyDenials = meter.CreateCounter<long>("sitelink.relay.policy.denials", "{request}", "Connections and requests a cloud endpoint's traffic policy denied, by sitelink.endpoint, sitelink.rule and sitelink.reason (ip_denied, rate_limited, unauthorized, denied).");
        _idleClosures = meter.CreateCounter<long>("sitelink.relay.connection.idle_timeouts", "{connection}", "Tunnelled connections closed after carrying nothing for the cloud endpoint's IdleTimeout.");
        _versionRefusals = meter.CreateCounter<long>("sitelink.relay.agents.version_refused", "{session}", "Agents refused at Hello because their SDK is older than Relay:MinimumAgentVersion (or they reported no version).");
    }

    /// <summary>Agent-port calls refused for a missing, unknown or revoked authtoken.</summary>
    public long AuthenticationFailures => Interlocked.Read(ref _authenticationFailures);

    /// <summary>Malformed or out-of-place control messages and calls received from agents.</summary>
    public long ProtocolErrors => Interlocked.Read(ref _protocolErrors);

    /// <summary>Agents refused at Hello because their SDK is older than <c>Relay:MinimumAgentVersion</c> (or reported none).</summary>
    public long AgentsVersionRefused => Interlocked.Read(ref _agentsVersionRefused);

    /// <summary>Tunnelled connections closed because nothing moved for the cloud endpoint's IdleTimeout.</summary>
    public long IdleTimeouts => Interlocked.Read(ref _idleTimeouts);

    /// <summary>Parked streams the relay released because they waited their <c>ParkedStreamLifetime</c> out.</summary>
    public long ParkedStreamsExpired => Interlocked.Read(ref _parkedExpired);

    /// <summary>The most bytes of control messages ever queued for one agent at once.</summary>
    public long ControlQueuePeakBytes => Interlocked.Read(ref _controlQueuePeakBytes);

    /// <summary>
    /// Agent-port connections refused at accept or closed by the relay for <paramref name="reason"/>: <c>connection_limit</c>,
    /// <c>address_limit</c>, <c>address_cooldown</c>, <c>pre_authentication_timeout</c>, <c>failed_calls</c>.
    /// </summary>
    public long AgentConnectionEvents(string reason) => _agentConnectionEvents.TryGetValue(reason, out var count) ? count : 0;

    /// <summary>
    /// Sessions the relay ended for <paramref name="reason"/>: <c>queue_full</c>, <c>timed_out</c>, <c>taken_over</c>,
    /// <c>revoked</c>, <c>protocol_error</c>, <c>draining</c>.
    /// </summary>
    public long SessionsEnded(string reason) => _sessionEndReasons.TryGetValue(reason, out var count) ? count : 0;

    /// <summary>Public connections paired with an agent stream.</summary>
    public long ConnectionsAccepted => Interlocked.Read(ref _accepted);

    /// <summary>Public connections whose bridge has ended.</summary>
    public long ConnectionsCompleted => Interlocked.Read(ref _completed);

    /// <summary>Bytes received from public clients and sent down to agents.</summary>
    public long BytesFromClients => Interlocked.Read(ref _bytesFromClients);

    /// <summary>Bytes received from agents and sent to public clients.</summary>
    public long BytesToClients => Interlocked.Read(ref _bytesToClients);

    /// <summary>Stream calls naming a stream that does not exist, expired, was used, or belongs to another session.</summary>
    public long UnknownStreamRequests => Interlocked.Read(ref _unknownStreamRequests);

    /// <summary>Sessions dropped because their agent sent nothing for its heartbeat interval + tolerance.</summary>
    public long SessionsTimedOut => Interlocked.Read(ref _sessionsTimedOut);

    /// <summary>Sessions ended because their agent reconnected and named them as its previous session.</summary>
    public long SessionsTakenOver => Interlocked.Read(ref _sessionsTakenOver);

    /// <summary>Public connections paired at once with a stream the agent had parked (no OpenStream round trip).</summary>
    public long ConnectionsPairedParked => Interlocked.Read(ref _pairedParked);

    /// <summary>Connections carried on a session's multiplexed data call (protocol version 2).</summary>
    public long ConnectionsMultiplexed => Interlocked.Read(ref _multiplexed);

    /// <summary>Tunnelled connections being bridged now.</summary>
    public long ActiveConnections => ConnectionsAccepted - ConnectionsCompleted;

    /// <summary>Public connections refused for <paramref name="reason"/>.</summary>
    public long Refused(RefusalReason reason) => Interlocked.Read(ref _refused[(int)reason]);

    internal void OnRefused(RefusalReason reason)
    {
        Interlocked.Increment(ref _refused[(int)reason]);
        _refusals.Add(1, new KeyValuePair<string, object?>("sitelink.reason", ReasonName(reason)));
    }

    internal void OnAccepted()
    {
        Interlocked.Increment(ref _accepted);
        _connections.Add(1);
        _activeConnections.Add(1);
    }

    internal void OnCompleted()
    {
        Interlocked.Increment(ref _completed);
        _activeConnections.Add(-1);
    }

    internal void OnBytesFromClient(long count)
    {
        Interlocked.Add(ref _bytesFromClients, count);
        _bytes.Add(count, new KeyValuePair<string, object?>("network.io.direction", "receive"));
    }

    internal void OnBytesToClient(long count)
    {
        Interlocked.Add(ref _bytesToClients, count);
        _bytes.Add(count, new KeyValuePair<string, object?>("network.io.direction", "transmit"));
    }

    internal void OnPairedParked() => Interlocked.Increment(ref _pairedParked);

    internal void OnMultiplexed() => Interlocked.Increment(ref _multiplexed);

    internal void OnSessionStarted() => _sessions.Add(1);

    internal void OnSessionEnded() => _sessions.Add(-1);

    internal void OnBound() => _binds.Add(1);

    internal void OnUnbound(int count = 1) => _binds.Add(-count);

    /// <summary>Requests to http(s) cloud endpoints the relay answered itself, by reason.</summary>
    public long HttpErrors(string reason) => _httpErrorTotals.TryGetValue(reason, out var count) ? count : 0;

    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, long> _httpErrorTotals = new(StringComparer.Ordinal);

    internal void OnHttpError(string reason)
    {
        _httpErrorTotals.AddOrUpdate(reason, 1, static (_, count) => count + 1);
        _httpErrors.Add(1, new KeyValuePair<string, object?>("sitelink.reason", reason));
    }

    /// <summary>Denials by a traffic policy so far, by rule name (for tests and the startup report).</summary>
    public long PolicyDenials(string rule) => _policyDenialTotals.TryGetValue(rule, out var count) ? count : 0;

    internal void OnPolicyDenied(string endpoint, string rule, string reason)
    {
        _policyDenialTotals.AddOrUpdate(rule, 1, static (_, count) => count + 1);
        _policyDenials.Add(1, new KeyValuePair<string, object?>("sitelink.endpoint", endpoint), new KeyValuePair<string, object?>("sitelink.rule", rule), new KeyValuePair<string, object?>("sitelink.reason", reason));
    }

    internal void OnBindRefused(string reason) => _bindRefusals.Add(1, new KeyValuePair<string, object?>("sitelink.reason", reason));

    /// <summary>The metric's <c>sitelink.reason</c> of a refusal, e.g. <c>no_agent</c> (also the <c>reason</c> of <c>connection.refused</c> events).</summary>
    internal static string ReasonName(RefusalReason reason) => reason switch
    {
        RefusalReason.NoAgent => "no_agent",
        RefusalReason.StreamLimit => "stream_limit",
        RefusalReason.AgentRefused => "agent_refused",
        RefusalReason.PairingTimeout => "pairing_timeout",
        RefusalReason.SessionEnded => "session_ended",
        RefusalReason.EndpointLimit => "endpoint_limit",
        RefusalReason.ClientIpLimit => "client_ip_limit",
        RefusalReason.UnknownHost => "unknown_host",
        RefusalReason.BadClientHello => "bad_client_hello",
        _ => "other",
    };

    internal void OnUnknownStream() => Interlocked.Increment(ref _unknownStreamRequests);

    /// <summary>The relay ended a session; <paramref name="reason"/> is one of those <see cref="SessionsEnded"/> lists.</summary>
    internal void OnSessionEndedBy(string reason)
    {
        switch (reason)
        {
            case "timed_out":
                Interlocked.Increment(ref _sessionsTimedOut);
                break;
            case "taken_over":
                Interlocked.Increment(ref _sessionsTakenOver);
                break;
        }

        _sessionEndReasons.AddOrUpdate(reason, 1, (_, count) => count + 1);
        _sessionEnds.Add(1, new KeyValuePair<string, object?>("sitelink.reason", reason));
    }

    internal void OnAuthenticationFailed()
    {
        Interlocked.Increment(ref _authenticationFailures);
        _authFailures.Add(1);
    }

    internal void OnProtocolError() => Interlocked.Increment(ref _protocolErrors);

    internal void OnAgentVersionRefused()
    {
        Interlocked.Increment(ref _agentsVersionRefused);
        _versionRefusals.Add(1);
    }

    internal void OnParkedStreamExpired() => Interlocked.Increment(ref _parkedExpired);

    internal void OnIdleTimeout()
    {
        Interlocked.Increment(ref _idleTimeouts);
        _idleClosures.Add(1);
    }

    internal void OnControlQueued(long bytes)
    {
        var peak = Interlocked.Read(ref _controlQueuePeakBytes);
        while (bytes > peak)
        {
            var seen = Interlocked.CompareExchange(ref _controlQueuePeakBytes, bytes, peak);
            if (seen == peak)
            {
                return;
            }

            peak = seen;
        }
    }

    internal void OnAgentConnectionRefused(string reason)
    {
        _agentConnectionEvents.AddOrUpdate(reason, 1, (_, count) => count + 1);
        _agentConnectionRefusals.Add(1, new KeyValuePair<string, object?>("sitelink.reason", reason));
    }

    internal void OnAgentConnectionClosed(string reason)
    {
        _agentConnectionEvents.AddOrUpdate(reason, 1, (_, count) => count + 1);
        _agentConnectionClosures.Add(1, new KeyValuePair<string, object?>("sitelink.reason", reason));
    }
}
