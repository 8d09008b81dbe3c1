using System.Buffers.Text;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using SiteLink.Internal;
using SiteLink.Protocol.V1;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Events;

namespace SiteLink.Relay.Sessions;

/// <summary>
/// Routes public connections to agent sessions: offers each to the session serving its endpoint, and hands it to
/// the agent's Stream call when that arrives. A connection nobody can serve is closed at once, never held open.
/// </summary>
internal sealed class ConnectionRouter : IDisposable
{
    private readonly SessionRegistry _registry;
    private readonly RelayLimits _limits;
    private readonly RelayCounters _counters;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly LogSampler _refusalLog;
    private readonly PeerEventLog _sampled;
    private readonly RefusalEvents _refusalEvents;

    public ConnectionRouter(SessionRegistry registry, RelayOptions options, RelayCounters counters, TimeProvider timeProvider, ILogger<ConnectionRouter> logger, PeerEventLog? sampled = null, IRelayEventSink? events = null)
    {
        _sampled = sampled ?? new PeerEventLog(timeProvider);
        _refusalEvents = new RefusalEvents(events ?? new NullRelayEventSink(), timeProvider);
        _registry = registry;
        _limits = options.Limits;
        _counters = counters;
        _timeProvider = timeProvider;
        _logger = logger;
        // Public clients cause refusals at will: every one is counted, one a second is logged.
        _refusalLog = new LogSampler(timeProvider, TimeSpan.FromSeconds(1), (count, interval) => RelayLog.ConnectionsRefusedSummary(_logger, count, interval));
    }

    /// <summary>Offers a newly accepted public connection to the agent serving its endpoint. Takes ownership of it.</summary>
    public void Offer(PublicConnection client)
    {
        var endpoint = client.Endpoint;
        if (!_registry.TryRoute(endpoint.Tenant, endpoint.Endpoint, HasRoom, out var member))
        {
            Refuse(client, RefusalReason.NoAgent, $"no agent serves '{endpoint.Endpoint}'");
            return;
        }

        // Counted against its member (by TryRoute) until it closes, however it ends, refusals below included.
        client.OnClosed(member.Release);
        var (session, bindId) = (member.Session, member.BindId);

        if (session.ActiveStreams >= _limits.MaxConcurrentStreamsPerSession)
        {
            Refuse(client, RefusalReason.StreamLimit, $"session {session.Id} is at MaxConcurrentStreamsPerSession");
            return;
        }

        if (session.Pending.Count >= _limits.MaxPendingStreamsPerSession)
        {
            Refuse(client, RefusalReason.StreamLimit, $"session {session.Id} is at MaxPendingStreamsPerSession");
            return;
        }

        var pending = new PendingStream(NewStreamId(), session, bindId, client);
        if (session.TryOpenMultiplexed(pending))
        {
            // The session's data call carries it from here: no new stream, no round trip, no expiry to watch.
            _counters.OnMultiplexed();
            RelayLog.ConnectionOffered(_logger, endpoint.Name, pending.Id, client.Address, session.Id);
            return;
        }

        if (session.TryPairParked(pending))
        {
            // A parked stream carries it from here: no OpenStream round trip, no expiry to watch.
            _counters.OnPairedParked();
            RelayLog.ConnectionOffered(_logger, endpoint.Name, pending.Id, client.Address, session.Id);
            return;
        }

        session.Pending[pending.Id] = pending;
        pending.Expiry = _timeProvider.CreateTimer(OnExpired, (this, pending), _limits.PendingStreamTimeout, Timeout.InfiniteTimeSpan);
        var offered = session.Send(new RelayMessage
        {
            OpenStream = new OpenStream
            {
                StreamId = pending.Id,
                BindId = bindId,
                EndpointName = endpoint.Endpoint,
                ClientAddress = client.Address,
                Sni = client.Sni ?? "",
            },
        });
        if (!offered)
        {
            Withdraw(pending, RefusalReason.SessionEnded, "the session ended");
            return;
        }

        RelayLog.ConnectionOffered(_logger, endpoint.Name, pending.Id, client.Address, session.Id);
    }

    /// <summary>Below its stream limits: a pool prefers such members to ones that would refuse.</summary>
    private bool HasRoom(AgentSession session) =>
        session.ActiveStreams < _limits.MaxConcurrentStreamsPerSession && session.Pending.Count < _limits.MaxPendingStreamsPerSession;

    private static void OnExpired(object? state)
    {
        var (router, pending) = ((ConnectionRouter, PendingStream))state!;
        router.Withdraw(pending, RefusalReason.PairingTimeout, $"the agent did not open the stream within {router._limits.PendingStreamTimeout}");
    }

    /// <summary>The agent refused an offer.</summary>
    public void OnRefusedByAgent(AgentSession session, StreamRefused refused)
    {
        if (session.Pending.TryGetValue(refused.StreamId, out var pending))
        {
            Withdraw(pending, RefusalReason.AgentRefused, $"the agent refused it: {refused.Reason}: {SafeText.Clean(refused.Message)}");
        }
        else if (session.PairedParked.TryRemove(refused.StreamId, out var paired))
        {
            // Ending the bridge resets the client and ends the parked call, which the agent is waiting for.
            CountRefusal(paired.Client, RefusalReason.AgentRefused);
            LogRefusal(paired.Client, $"the agent refused it: {refused.Reason}: {SafeText.Clean(refused.Message)}");
            paired.Client.Transport.NoteRefusal(RefusalReason.AgentRefused, $"{refused.Reason}: {SafeText.Clean(refused.Message)}");
            try
            {
                paired.Refusal?.Cancel();
            }
            catch (ObjectDisposedException)
            {
                // The bridge ended meanwhile.
            }
        }
    }

    /// <summary>The session ended: close what it was offered and never opened.</summary>
    public void OnSessionEnded(IEnumerable<PendingStream> offers)
    {
        foreach (var pending in offers)
        {
            Withdraw(pending, RefusalReason.SessionEnded, "the session ended");
        }
    }

    /// <summary>Claims the offer an agent's Stream call names; null when it is unknown, expired, used or another session's.</summary>
    public PendingStream? Claim(AgentSession session, string streamId)
    {
        if (session.Pending.TryRemove(streamId, out var pending) && pending.TryClaim())
        {
            return pending;
        }

        _counters.OnUnknownStream();
        if (_sampled.UnknownStreams.ShouldLog(out var suppressed))
        {
            RelayLog.UnknownStream(_logger, session.Id, SafeText.Clean(streamId, SafeText.MaxIdLength), suppressed);
        }
        return null;
    }

    private void Withdraw(PendingStream pending, RefusalReason reason, string message)
    {
        pending.Session.Pending.TryRemove(pending.Id, out _);
        if (pending.TryClaim())
        {
            Refuse(pending.Client, reason, message);
        }
    }

    /// <summary>Resets a public connection nobody will serve, counted by <paramref name="reason"/>.</summary>
    public void Refuse(PublicConnection client, RefusalReason reason, string message)
    {
        CountRefusal(client, reason);
        LogRefusal(client, message);
        client.Refuse(reason, message);
    }

    /// <summary>Counts a public connection refused for <paramref name="reason"/>, and reports it (coalesced: <see cref="RefusalEvents"/>).</summary>
    public void CountRefusal(PublicConnection client, RefusalReason reason)
    {
        _counters.OnRefused(reason);
        _refusalEvents.OnRefused(client.Endpoint, reason);
    }

    /// <summary>
    /// Counts and logs a denial by an endpoint's traffic policy: each kind (endpoint, rule, reason — e.g. an expired
    /// token) at most once a second, with how many were held back, so every reason shows in the log while a flood costs
    /// a line a second per kind. At most 256 kinds are told apart; more share one sampler.
    /// </summary>
    public void OnPolicyDenied(CloudEndpointOptions endpoint, string client, Policy.PolicyDenial denial)
    {
        _counters.OnPolicyDenied(endpoint.Name, denial.Rule, denial.Reason);
        var kind = $"{endpoint.Name}|{denial.Rule}|{denial.Kind}";
        var sampler = _policySamplers.Count < 256 || _policySamplers.ContainsKey(kind)
            ? _policySamplers.GetOrAdd(kind, _ => new LogSampler(_timeProvider, TimeSpan.FromSeconds(1)))
            : _sampled.PolicyDenials;
        if (sampler.ShouldLog(out var suppressed))
        {
            RelayLog.PolicyDenied(_logger, endpoint.Name, client, denial.Rule, denial.Message, suppressed);
        }
    }

    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, LogSampler> _policySamplers = new(StringComparer.Ordinal);

    private void LogRefusal(PublicConnection client, string message)
    {
        if (_refusalLog.ShouldLog(out var suppressed))
        {
            RelayLog.ConnectionRefused(_logger, client.Endpoint.Name, client.Address, message, suppressed);
        }
    }

    public void Dispose()
    {
        _refusalLog.Dispose();
        _refusalEvents.Dispose();
        foreach (var sampler in _policySamplers.Values)
        {
            sampler.Dispose();
        }
    }

    private static string NewStreamId()
    {
        Span<byte> bytes = stackalloc byte[16];
        RandomNumberGenerator.Fill(bytes);
        return Base64Url.EncodeToString(bytes);
    }
}
