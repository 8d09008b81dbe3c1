using System.Collections.Frozen;
using System.Security.Cryptography;
using System.Text;
using SiteLink.Relay.Configuration;

namespace SiteLink.Relay.Security;

/// <summary>Who presented an authtoken: its name (never the secret), tenant and ACL.</summary>
/// <param name="Name">The token's configured name.</param>
/// <param name="Tenant">The tenant it belongs to.</param>
/// <param name="Acl">The endpoint names it may bind.</param>
public sealed record TokenIdentity(string Name, string Tenant, EndpointAcl Acl);

/// <summary>
/// Looks up authtokens by the SHA-256 of the secret, so only hashes are kept in memory and the comparison does not
/// depend on how much of a guessed secret is right. The token list can be replaced while the relay runs.
/// </summary>
public sealed class AuthTokenStore
{
    private const string BearerPrefix = "Bearer ";
    private const int MaxAuthorizationLength = 1024;
    private readonly HashSet<string> _revoked = new(StringComparer.OrdinalIgnoreCase);
    private readonly Lock _gate = new();
    private volatile Snapshot _snapshot;

    /// <summary>Creates the store from configured tokens (assumed validated).</summary>
    public AuthTokenStore(IEnumerable<AuthTokenOptions> tokens)
    {
        _snapshot = new Snapshot(tokens);
    }

    /// <summary>
    /// Replaces the token list (assumed validated). Returns the names of tokens that were removed or whose secret,
    /// tenant or allowed names changed: their sessions must end, so the agents reconnect under the new rules.
    /// </summary>
    public IReadOnlySet<string> Replace(IEnumerable<AuthTokenOptions> tokens)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        lock (_gate)
        {
            var previous = _snapshot;
            // Unchanged tokens keep their identity object: "still current" is then a reference comparison.
            var next = new Snapshot(tokens, previous);
            _snapshot = next;
            return previous.ByName
                .Where(held => !next.ByName.TryGetValue(held.Key, out var now) || !ReferenceEquals(now.Identity, held.Value.Identity))
                .Select(held => held.Key)
                .ToHashSet(StringComparer.OrdinalIgnoreCase);
        }
    }

    /// <summary>
    /// Whether <paramref name="identity"/> (resolved earlier, e.g. when a control stream authenticated) is still what
    /// its token means now: not revoked, not removed, and neither its secret, tenant nor allowed names changed since.
    /// </summary>
    public bool IsCurrent(TokenIdentity identity)
    {
        ArgumentNullException.ThrowIfNull(identity);
        lock (_gate)
        {
            return !_revoked.Contains(identity.Name)
                && _snapshot.ByName.TryGetValue(identity.Name, out var now)
                && ReferenceEquals(now.Identity, identity);
        }
    }

    /// <summary>
    /// Resolves an <c>authorization</c> header value. Returns null and a reason (safe to log) when it is missing,
    /// malformed, unknown or revoked.
    /// </summary>
    public TokenIdentity? Authenticate(string? authorization, out string failure)
    {
        if (string.IsNullOrEmpty(authorization))
        {
            failure = "no authtoken was presented (authorization: Bearer <token>)";
            return null;
        }

        if (!authorization.StartsWith(BearerPrefix, StringComparison.OrdinalIgnoreCase) || authorization.Length == BearerPrefix.Length)
        {
            failure = "the authorization header is not a Bearer token";
            return null;
        }

        if (authorization.Length > MaxAuthorizationLength)
        {
            failure = "the authtoken is not valid";
            return null;
        }

        var hash = HashToHex(authorization[BearerPrefix.Length..].Trim());
        if (!_snapshot.ByHash.TryGetValue(hash, out var identity))
        {
            failure = "the authtoken is not valid";
            return null;
        }

        lock (_gate)
        {
            if (_revoked.Contains(identity.Name))
            {
                failure = "the authtoken was revoked";
                return null;
            }
        }

        failure = "";
        return identity;
    }

    /// <summary>Who a token is by its name (tenant, allowed names), revoked or not; null when no token has that name.</summary>
    public TokenIdentity? Find(string name) => _snapshot.ByName.TryGetValue(name, out var held) ? held.Identity : null;

    /// <summary>Marks a token revoked by name; later calls with it are refused.</summary>
    public void Revoke(string name)
    {
        lock (_gate)
        {
            _revoked.Add(name);
        }
    }

    /// <summary>The normalised hash (upper-case hex, no colons) of a configured token's secret.</summary>
    public static string SecretHashOf(AuthTokenOptions token) =>
        token.Token is { Length: > 0 } secret ? HashToHex(secret) : token.Sha256!.Replace(":", "", StringComparison.Ordinal).ToUpperInvariant();

    /// <summary>Upper-case hex SHA-256 of a secret's UTF-8 bytes.</summary>
    public static string HashToHex(string secret) => Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(secret)));

    /// <summary>Parses a 64-hex-digit hash (colons allowed); null when malformed.</summary>
    public static byte[]? TryParseSha256(string text)
    {
        var hex = text.Replace(":", "", StringComparison.Ordinal);
        if (hex.Length != 64 || !hex.All(char.IsAsciiHexDigit))
        {
            return null;
        }

        return Convert.FromHexString(hex);
    }

    /// <summary>How many tokens are configured.</summary>
    public int Count => _snapshot.ByHash.Count;

    private sealed class Snapshot
    {
        public Snapshot(IEnumerable<AuthTokenOptions> tokens, Snapshot? previous = null)
        {
            var entries = tokens.Select(t =>
            {
                var hash = SecretHashOf(t);
                var identity = new TokenIdentity(t.Name, t.Tenant.ToLowerInvariant(), new EndpointAcl(t.Allow));
                if (previous is not null && previous.ByName.TryGetValue(t.Name, out var before) && before.Hash == hash
                    && before.Identity.Tenant == identity.Tenant && before.Identity.Acl.Patterns.SequenceEqual(identity.Acl.Patterns))
                {
                    identity = before.Identity;
                }

                return (Hash: hash, Identity: identity);
            }).ToArray();
            ByHash = entries.ToFrozenDictionary(e => e.Hash, e => e.Identity, StringComparer.Ordinal);
            ByName = entries.ToFrozenDictionary(e => e.Identity.Name, e => (e.Hash, e.Identity), StringComparer.OrdinalIgnoreCase);
        }

        public FrozenDictionary<string, TokenIdentity> ByHash { get; }

        public FrozenDictionary<string, (string Hash, TokenIdentity Identity)> ByName { get; }
    }
}
