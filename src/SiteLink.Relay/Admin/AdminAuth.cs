using System.Net;
using Microsoft.AspNetCore.Http;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.ControlPlane;
using SiteLink.Relay.ControlPlane.Store;
using SiteLink.Relay.Policy;
using SiteLink.Relay.Security;

namespace SiteLink.Relay.Admin;

/// <summary>Who called the admin API and what they may do.</summary>
/// <param name="Actor">For the audit log: <c>key:NAME</c> or <c>jwt:SUBJECT</c>.</param>
/// <param name="CanWrite">Full access (else read-only).</param>
internal sealed record AdminCaller(string Actor, bool CanWrite);

/// <summary>
/// Authenticates admin API calls: <c>Authorization: Bearer</c> with an admin key (configured, or created through the
/// API; looked up by the SHA-256 of the secret) or, when configured, a JWT from the vendor's identity provider whose
/// scope grants read or full access. A client address that keeps failing is answered 429 for a while without its
/// attempts being checked or audited, so a flood of guesses costs the relay little.
/// </summary>
internal sealed class AdminAuth : IDisposable
{
    /// <summary>Failed authentications one client address may make in a burst; refilled at one per second.</summary>
    public const int FailureBurst = 20;

    private const string BearerPrefix = "Bearer ";
    private readonly Dictionary<string, (string Name, bool Full)> _configuredKeys;
    private readonly ControlPlane.ControlPlane _controlPlane;
    private readonly JwtValidator? _fullJwt;
    private readonly JwtValidator? _readJwt;
    private readonly TokenBuckets _failures;

    public AdminAuth(RelayOptions options, ControlPlane.ControlPlane controlPlane, TimeProvider time)
    {
        _controlPlane = controlPlane;
        _configuredKeys = options.Admin.Keys.ToDictionary(
            k => k.Sha256!.Replace(":", "", StringComparison.Ordinal).ToUpperInvariant(),
            k => (k.Name, string.Equals(k.Scope, "full", StringComparison.OrdinalIgnoreCase)),
            StringComparer.Ordinal);
        if (options.Admin.Jwt is { } jwt)
        {
            var errors = new List<string>();
            _fullJwt = JwtValidator.Create(JwtRule(jwt, jwt.FullScope), "sitelink-admin", "Relay:Admin:Jwt", errors);
            _readJwt = JwtValidator.Create(JwtRule(jwt, jwt.ReadScope), "sitelink-admin", "Relay:Admin:Jwt", errors);
            if (errors.Count > 0)
            {
                throw new RelayConfigurationException(errors);
            }
        }

        // Our own buckets on the relay's clock (deterministic, and keyed like the agent port's limits: IPv6 per /64).
        _failures = new TokenBuckets(perSecond: 1, FailureBurst, time);
    }

    /// <summary>Whether <paramref name="address"/> has spent its failures (answer 429 without checking).</summary>
    public bool IsThrottled(IPAddress address) => !_failures.HasAny(Key(address));

    /// <summary>Counts a failed authentication against <paramref name="address"/>.</summary>
    public void OnFailure(IPAddress address) => _failures.TryTake(Key(address));

    private static string Key(IPAddress address) => ClientAddress.KeyOf(address).ToString();

    /// <summary>The caller, or null and why not (safe to return and log: never the credential).</summary>
    public async Task<(AdminCaller? Caller, string Problem)> AuthenticateAsync(string? authorization)
    {
        if (string.IsNullOrEmpty(authorization))
        {
            return (null, "no credentials: send Authorization: Bearer <admin key>");
        }

        if (!authorization.StartsWith(BearerPrefix, StringComparison.OrdinalIgnoreCase) || authorization.Length > 8192)
        {
            return (null, "the Authorization header is not a Bearer credential");
        }

        var credential = authorization[BearerPrefix.Length..].Trim();
        if (credential.Count(c => c == '.') == 2 && _fullJwt is not null && _readJwt is not null)
        {
            var (subject, problem, status, _) = await _fullJwt.ValidateAsync(authorization).ConfigureAwait(false);
            if (problem is null)
            {
                return (new AdminCaller($"jwt:{subject ?? "unknown"}", CanWrite: true), "");
            }

            if (status == StatusCodes.Status403Forbidden)
            {
                (subject, problem, _, _) = await _readJwt.ValidateAsync(authorization).ConfigureAwait(false);
                if (problem is null)
                {
                    return (new AdminCaller($"jwt:{subject ?? "unknown"}", CanWrite: false), "");
                }
            }

            return (null, $"the token was not accepted: {problem}");
        }

        var hash = AuthTokenStore.HashToHex(credential);
        if (_configuredKeys.TryGetValue(hash, out var configured))
        {
            return (new AdminCaller($"key:{configured.Name}", configured.Full), "");
        }

        var stored = _controlPlane.State.Cached("admin-keys-by-hash", () => _controlPlane.State.Parsed<AdminKeyBody>(ResourceKinds.AdminKey)
            .GroupBy(k => k.Body.Sha256, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => new AdminCaller($"key:{g.First().Resource.Name}", string.Equals(g.First().Body.Scope, "full", StringComparison.Ordinal)), StringComparer.Ordinal));
        return stored.TryGetValue(hash, out var caller) ? (caller, "") : (null, "the admin key is not valid");
    }

    private static PolicyRuleOptions JwtRule(AdminJwtOptions jwt, string scope)
    {
        var rule = new PolicyRuleOptions { Type = "jwt", Issuer = jwt.Issuer, JwksUrl = jwt.JwksUrl, JwksFile = jwt.JwksFile };
        rule.Audiences.AddRange(jwt.Audiences);
        rule.RequiredClaims["scope"] = scope;
        return rule;
    }

    public void Dispose()
    {
        _fullJwt?.Dispose();
        _readJwt?.Dispose();
    }
}
