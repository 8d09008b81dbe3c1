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
/// depend on how much of a guessed secret is right.
/// </summary>
public sealed class AuthTokenStore
{
    private const string BearerPrefix = "Bearer ";
    private readonly FrozenDictionary<string, TokenIdentity> _byHash;
    private readonly HashSet<string> _revoked = new(StringComparer.OrdinalIgnoreCase);
    private readonly Lock _gate = new();

    /// <summary>Creates the store from configured tokens (assumed validated).</summary>
    public AuthTokenStore(IEnumerable<AuthTokenOptions> tokens)
    {
        _byHash = tokens.ToFrozenDictionary(
            t => SecretHashOf(t),
            t => new TokenIdentity(t.Name, t.Tenant.ToLowerInvariant(), new EndpointAcl(t.Allow)),
            StringComparer.Ordinal);
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

        var hash = HashToHex(authorization[BearerPrefix.Length..].Trim());
        if (!_byHash.TryGetValue(hash, out var identity))
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
    public int Count => _byHash.Count;
}
