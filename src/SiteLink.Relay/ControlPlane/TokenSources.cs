using SiteLink.Relay.Configuration;
using SiteLink.Relay.Security;
using SiteLink.Relay.Sessions;

namespace SiteLink.Relay.ControlPlane;

/// <summary>
/// The authtokens in force come from two places: the configuration (reloaded when its file changes) and the control
/// plane's store (the admin API). This holds both, applies their union to the <see cref="AuthTokenStore"/> (a name in
/// both: the configuration's wins) and ends the sessions of every token removed or changed, whichever side changed it.
/// </summary>
internal sealed class TokenSources(AuthTokenStore tokens, SessionRegistry registry, IReadOnlyList<AuthTokenOptions> configured, Events.IRelayEventSink events, TimeProvider time)
{
    private readonly Lock _gate = new();
    private IReadOnlyList<AuthTokenOptions> _configured = configured;
    private IReadOnlyList<AuthTokenOptions> _stored = [];

    /// <summary>Whether <paramref name="configured"/> is what the configuration side holds now.</summary>
    public bool HoldsConfigured(IReadOnlyList<AuthTokenOptions> configured)
    {
        lock (_gate)
        {
            return Fingerprint(_configured) == Fingerprint(configured);
        }
    }

    /// <summary>
    /// Replaces the configuration's tokens; returns the names whose sessions were ended. Each configured token removed or
    /// changed (secret, tenant, allowed names) is published as <c>token.revoked</c>.
    /// </summary>
    public IReadOnlyList<string> SetConfigured(IReadOnlyList<AuthTokenOptions> configured)
    {
        lock (_gate)
        {
            var before = _configured.Select(t => tokens.Find(t.Name)).OfType<TokenIdentity>().ToList();
            _configured = configured;
            var ended = Apply(out var changed);
            var now = time.GetUtcNow();
            foreach (var identity in before.Where(i => changed.Contains(i.Name)))
            {
                var kept = configured.Any(t => string.Equals(t.Name, identity.Name, StringComparison.OrdinalIgnoreCase));
                Events.RelayEvents.PublishTokenRevoked(events, identity.Tenant, identity.Name, kept ? "changed in the configuration (secret, tenant or allowed names)" : "removed from the configuration", now);
            }

            return ended;
        }
    }

    /// <summary>Replaces the store's tokens; returns the names whose sessions were ended.</summary>
    public IReadOnlyList<string> SetStored(IReadOnlyList<AuthTokenOptions> stored)
    {
        lock (_gate)
        {
            _stored = stored;
            return Apply(out _);
        }
    }

    /// <summary>Whether a token of this name comes from the configuration (read-only through the API).</summary>
    public bool IsConfigured(string name)
    {
        lock (_gate)
        {
            return _configured.Any(t => string.Equals(t.Name, name, StringComparison.OrdinalIgnoreCase));
        }
    }

    private List<string> Apply(out IReadOnlySet<string> changed)
    {
        var configured = _configured;
        var names = new HashSet<string>(configured.Select(t => t.Name), StringComparer.OrdinalIgnoreCase);
        changed = tokens.Replace([.. configured, .. _stored.Where(t => !names.Contains(t.Name))]);
        var replaced = changed;
        var ended = new List<string>();
        foreach (var session in registry.Sessions.Where(s => replaced.Contains(s.Token.Name)).ToArray())
        {
            session.End(SessionEnd.Revoked);
            ended.Add(session.Token.Name);
        }

        return ended;
    }

    private static string Fingerprint(IEnumerable<AuthTokenOptions> tokens) => string.Join("\n", tokens
        .Select(t => $"{t.Name}\t{AuthTokenStore.SecretHashOf(t)}\t{t.Tenant.ToLowerInvariant()}\t{string.Join(",", t.Allow)}")
        .Order(StringComparer.Ordinal));
}
