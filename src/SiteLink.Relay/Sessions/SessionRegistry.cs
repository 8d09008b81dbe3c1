using System.Collections.Concurrent;
using System.Collections.ObjectModel;
using System.Globalization;
using System.Net;
using SiteLink.Internal;
using SiteLink.Protocol.V1;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Security;

namespace SiteLink.Relay.Sessions;

/// <summary>
/// The live sessions and which serve each internal endpoint of each tenant: one session, or for a pooled name several
/// (each bound with pooling on), among which every new connection goes to the one with the fewest active connections
/// (ties broken at random). Names are per tenant and compared without case. One lock guards the routes and binds;
/// lookups on the connection path take it briefly.
/// </summary>
internal sealed class SessionRegistry
{
    private readonly RelayLimits _limits;
    private readonly ConcurrentDictionary<string, AgentSession> _sessions = new(StringComparer.Ordinal);
    private readonly Dictionary<(string Tenant, string Name), Route> _routes = [];
    private readonly KeyedCounter<string> _sessionsPerToken = new(StringComparer.OrdinalIgnoreCase);
    private readonly KeyedCounter<string> _handshakesPerToken = new(StringComparer.OrdinalIgnoreCase);
    private readonly KeyedCounter<IPAddress> _handshakesPerAddress = new();
    private readonly Lock _gate = new();
    private bool _draining;

    private readonly RelayCounters _counters;

    public SessionRegistry(RelayOptions options, RelayCounters? counters = null)
    {
        _limits = options.Limits;
        _counters = counters ?? new RelayCounters();
    }

    public int SessionCount => _sessions.Count;

    /// <summary>The refusal of <see cref="TryAdd"/> for a token revoked or changed while its session was being set up.</summary>
    public const string TokenNoLongerValid = "the authtoken was revoked or changed while the session was being set up";

    public IEnumerable<AgentSession> Sessions => _sessions.Values;

    public bool TryGetSession(string id, out AgentSession session) => _sessions.TryGetValue(id, out session!);

    /// <summary>The relay is stopping: no new sessions.</summary>
    public void BeginDrain()
    {
        lock (_gate)
        {
            _draining = true;
        }
    }

    public bool IsDraining
    {
        get
        {
            lock (_gate)
            {
                return _draining;
            }
        }
    }

    /// <summary>
    /// Counts a control stream that authenticated and now waits for its Hello, unless its token already has
    /// <c>MaxSessionsPerToken</c> such streams or its client address <c>MaxPendingHellosPerIp</c>; returns the refusal
    /// otherwise. Every successful call is paired with <see cref="EndHandshake"/>.
    /// </summary>
    public string? TryBeginHandshake(string tokenName, IPAddress address)
    {
        lock (_gate)
        {
            var perToken = _handshakesPerToken[tokenName];
            if (perToken >= _limits.MaxSessionsPerToken)
            {
                return $"token '{tokenName}' already has {perToken.ToString(CultureInfo.InvariantCulture)} control streams waiting for Hello (limit MaxSessionsPerToken); try again";
            }

            if (!_handshakesPerAddress.TryIncrement(address, _limits.MaxPendingHellosPerIp))
            {
                return $"{address} already has {_handshakesPerAddress[address].ToString(CultureInfo.InvariantCulture)} control streams waiting for Hello (limit MaxPendingHellosPerIp); try again";
            }

            _handshakesPerToken.TryIncrement(tokenName, int.MaxValue);
            return null;
        }
    }

    /// <summary>The control stream counted by <see cref="TryBeginHandshake"/> said Hello, or ended.</summary>
    public void EndHandshake(string tokenName, IPAddress address)
    {
        lock (_gate)
        {
            _handshakesPerToken.Decrement(tokenName);
            _handshakesPerAddress.Decrement(address);
        }
    }

    /// <summary>Control streams waiting for their Hello now.</summary>
    public int PendingHandshakes
    {
        get
        {
            lock (_gate)
            {
                return _handshakesPerToken.Total;
            }
        }
    }

    /// <summary>
    /// Adds a session unless its token already holds the maximum, or <paramref name="stillValid"/> (checked under the
    /// registry's lock, so a revocation that scans the registry afterwards cannot miss the session) says its token no
    /// longer is; returns the refusal otherwise.
    /// </summary>
    public string? TryAdd(AgentSession session, Func<TokenIdentity, bool>? stillValid = null)
    {
        lock (_gate)
        {
            if (stillValid is not null && !stillValid(session.Token))
            {
                return TokenNoLongerValid;
            }

            if (!_sessionsPerToken.TryIncrement(session.Token.Name, _limits.MaxSessionsPerToken))
            {
                return $"token '{session.Token.Name}' already holds {_sessionsPerToken[session.Token.Name].ToString(CultureInfo.InvariantCulture)} sessions (limit MaxSessionsPerToken)";
            }

            _sessions[session.Id] = session;
            _counters.OnSessionStarted();
            return null;
        }
    }

    /// <summary>
    /// Removes a session and every route to it. Returns whether it was still registered (only the first removal is),
    /// the offers it still had, for the caller to close, and the endpoints it still bound.
    /// </summary>
    public SessionRemoval Remove(AgentSession session)
    {
        BoundEndpoint[] unbound;
        lock (_gate)
        {
            if (!_sessions.TryRemove(session.Id, out _))
            {
                return new SessionRemoval(false, [], []);
            }

            unbound = [.. session.Binds.Values];
            foreach (var (bindId, bound) in session.Binds)
            {
                RemoveMember(session, bindId, bound.Name);
            }

            _counters.OnUnbound(session.Binds.Count);
            _counters.OnSessionEnded();
            session.Binds.Clear();
            _sessionsPerToken.Decrement(session.Token.Name);
        }

        return new SessionRemoval(true, session.Pending.Values.ToArray(), unbound);
    }

    public BindResult Bind(AgentSession session, Bind bind)
    {
        var result = BindCore(session, bind);
        if (result.Status == BindStatus.Ok)
        {
            _counters.OnBound();
        }
        else
        {
            _counters.OnBindRefused(result.Status.ToString().ToLowerInvariant() switch
            {
                "nametaken" => "name_taken",
                "limitexceeded" => "limit_exceeded",
                "poolingmismatch" => "pooling_mismatch",
                var other => other,
            });
        }

        return result;
    }

    private BindResult BindCore(AgentSession session, Bind bind)
    {
        // A bind id longer than the limit is refused, and not echoed back.
        BindResult Result(BindStatus status, string message) => new() { BindId = bind.BindId.Length <= SafeText.MaxIdLength ? bind.BindId : "", Status = status, Message = message };

        if (string.IsNullOrEmpty(bind.BindId) || bind.BindId.Length > 64)
        {
            return Result(BindStatus.Invalid, "bind_id must be 1 to 64 characters");
        }

        if (bind.BindId.Any(char.IsControl))
        {
            return Result(BindStatus.Invalid, "bind_id must not contain control characters");
        }

        if (!EndpointAcl.IsValidName(bind.Name))
        {
            return Result(BindStatus.Invalid, $"'{SafeText.Clean(bind.Name, SafeText.MaxIdLength)}' is not a valid endpoint name (1-63 letters, digits, '-', '_', '.', starting with a letter or digit)");
        }

        if (bind.Kind != EndpointKind.Tcp)
        {
            return Result(BindStatus.Invalid, $"endpoint kind {bind.Kind} is not supported by this relay");
        }

        if (EndpointDescriptionRules.FindProblem(bind.Description, bind.Metadata) is { } problem)
        {
            return Result(BindStatus.Invalid, $"'{bind.Name}': {problem}");
        }

        if (!session.Token.Acl.Allows(bind.Name))
        {
            return Result(BindStatus.Denied, $"token '{session.Token.Name}' may not bind '{bind.Name}' (allowed: {string.Join(", ", session.Token.Acl.Patterns)})");
        }

        var name = bind.Name.ToLowerInvariant();
        lock (_gate)
        {
            if (session.Lifetime.IsCancellationRequested)
            {
                return Result(BindStatus.Invalid, "the session is ending");
            }

            if (session.Binds.ContainsKey(bind.BindId))
            {
                return Result(BindStatus.Invalid, $"bind_id '{bind.BindId}' is already used in this session");
            }

            if (session.Binds.Count >= _limits.MaxBindsPerSession)
            {
                return Result(BindStatus.LimitExceeded, $"the session already binds {session.Binds.Count.ToString(CultureInfo.InvariantCulture)} endpoints (limit MaxBindsPerSession)");
            }

            var key = (session.Token.Tenant, name);
            if (_routes.TryGetValue(key, out var existing))
            {
                if (existing.Members.Exists(m => m.Session == session))
                {
                    return Result(BindStatus.NameTaken, $"'{bind.Name}' is already bound by this session");
                }

                if (!existing.Pooling && !bind.Pooling)
                {
                    return Result(BindStatus.NameTaken, $"'{bind.Name}' is already bound by another agent session");
                }

                if (existing.Pooling != bind.Pooling)
                {
                    return Result(BindStatus.PoolingMismatch, existing.Pooling
                        ? $"'{bind.Name}' is a pool of {existing.Members.Count.ToString(CultureInfo.InvariantCulture)} agent session(s): bind it with pooling on to join"
                        : $"'{bind.Name}' is already bound by another agent session without pooling: a pooled bind cannot share it");
                }
            }
            else
            {
                existing = new Route(bind.Pooling);
                _routes[key] = existing;
            }

            existing.Members.Add(new RouteMember(session, bind.BindId));
            session.Binds[bind.BindId] = new BoundEndpoint(
                name,
                bind.Description,
                bind.Metadata.Count == 0 ? ReadOnlyDictionary<string, string>.Empty : new Dictionary<string, string>(bind.Metadata, StringComparer.Ordinal).AsReadOnly(),
                bind.Pooling);
        }

        return Result(BindStatus.Ok, "");
    }

    /// <summary>Removes a bind; returns the endpoint it bound, or null when the session had no such bind.</summary>
    public BoundEndpoint? Unbind(AgentSession session, string bindId)
    {
        lock (_gate)
        {
            if (!session.Binds.Remove(bindId, out var bound))
            {
                return null;
            }

            RemoveMember(session, bindId, bound.Name);
            _counters.OnUnbound();
            return bound;
        }
    }

    /// <summary>Removes every bind of a session (it said Goodbye), so it is offered nothing new; returns the endpoints it bound.</summary>
    public IReadOnlyList<BoundEndpoint> UnbindAll(AgentSession session)
    {
        var unbound = new List<BoundEndpoint>();
        lock (_gate)
        {
            foreach (var bindId in session.Binds.Keys.ToArray())
            {
                if (Unbind(session, bindId) is { } bound)
                {
                    unbound.Add(bound);
                }
            }
        }

        return unbound;
    }

    /// <summary>
    /// The endpoint a tenant's name is bound to right now, with the session serving it and what the agent declared
    /// about it (description, metadata); null when nobody binds it. For operators and the relay's own tooling.
    /// </summary>
    public (AgentSession Session, BoundEndpoint Endpoint)? Describe(string tenant, string endpoint)
    {
        lock (_gate)
        {
            if (_routes.TryGetValue((tenant.ToLowerInvariant(), endpoint.ToLowerInvariant()), out var route)
                && (route.Members.Find(m => !m.Session.IsLeaving) ?? route.Members[0]) is var first
                && first.Session.Binds.TryGetValue(first.BindId, out var bound))
            {
                return (first.Session, bound);
            }
        }

        return null;
    }

    /// <summary>What a session binds now (a copy, for operators).</summary>
    public IReadOnlyList<BoundEndpoint> BindsOf(AgentSession session)
    {
        lock (_gate)
        {
            return [.. session.Binds.Values];
        }
    }

    /// <summary>The sessions serving a tenant's endpoint (several for a pool), in the order they bound.</summary>
    public IReadOnlyList<AgentSession> Members(string tenant, string endpoint)
    {
        lock (_gate)
        {
            return _routes.TryGetValue((tenant.ToLowerInvariant(), endpoint.ToLowerInvariant()), out var route)
                ? route.Members.ConvertAll(m => m.Session)
                : [];
        }
    }

    /// <summary>
    /// Picks the member that serves a new connection to a tenant's endpoint and counts the connection against it (the
    /// caller gives it back with <see cref="RouteMember.Release"/> when the connection closes): of the members not
    /// leaving, those whose session <paramref name="hasRoom"/> (below its stream limits) first, and among them the one
    /// with the fewest active connections, ties broken at random. Picked and counted under one lock, so connections
    /// arriving together spread instead of all seeing the same least busy member.
    /// </summary>
    public bool TryRoute(string tenant, string endpoint, Func<AgentSession, bool> hasRoom, out RouteMember member)
    {
        member = null!;
        lock (_gate)
        {
            if (!_routes.TryGetValue((tenant.ToLowerInvariant(), endpoint.ToLowerInvariant()), out var route))
            {
                return false;
            }

            var ties = 0;
            var best = (Room: false, Active: int.MaxValue);
            foreach (var candidate in route.Members)
            {
                if (candidate.Session.IsLeaving)
                {
                    continue;
                }

                var rank = (Room: route.Members.Count == 1 || hasRoom(candidate.Session), candidate.Active);
                if (member is null || (rank.Room && !best.Room) || (rank.Room == best.Room && rank.Active < best.Active))
                {
                    (member, best, ties) = (candidate, rank, 1);
                }
                else if (rank == best && Random.Shared.Next(++ties) == 0)
                {
                    // Reservoir sampling: each of the tied members ends up chosen with the same chance.
                    member = candidate;
                }
            }

            member?.Acquire();
        }

        return member is not null;
    }

    /// <summary>As <see cref="TryRoute(string, string, Func{AgentSession, bool}, out RouteMember)"/>, every session counted as having room.</summary>
    public bool TryRoute(string tenant, string endpoint, out RouteMember member) => TryRoute(tenant, endpoint, static _ => true, out member);

    private void RemoveMember(AgentSession session, string bindId, string name)
    {
        var key = (session.Token.Tenant, name);
        if (_routes.TryGetValue(key, out var route))
        {
            route.Members.RemoveAll(m => m.Session == session && m.BindId == bindId);
            if (route.Members.Count == 0)
            {
                _routes.Remove(key);
            }
        }
    }

    /// <summary>A tenant's endpoint name: who serves it, and whether it is a pool.</summary>
    private sealed class Route(bool pooling)
    {
        public bool Pooling { get; } = pooling;

        public List<RouteMember> Members { get; } = [];
    }
}

/// <summary>What <see cref="SessionRegistry.Remove"/> did: whether the session was still there, its open offers, the endpoints it still bound.</summary>
internal readonly record struct SessionRemoval(bool Removed, IReadOnlyList<PendingStream> Offers, IReadOnlyList<BoundEndpoint> Unbound);

/// <summary>One session's bind of an endpoint name, with the public connections it serves now.</summary>
internal sealed class RouteMember(AgentSession session, string bindId)
{
    private int _active;

    public AgentSession Session { get; } = session;

    public string BindId { get; } = bindId;

    /// <summary>Connections offered to this member and not closed yet.</summary>
    public int Active => Volatile.Read(ref _active);

    public void Acquire() => Interlocked.Increment(ref _active);

    public void Release() => Interlocked.Decrement(ref _active);
}
