using System.Globalization;
using Microsoft.AspNetCore.Http;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Protocols;
using Microsoft.IdentityModel.Protocols.OpenIdConnect;
using Microsoft.IdentityModel.Tokens;
using SiteLink.Relay.Configuration;

namespace SiteLink.Relay.Policy;

/// <summary>
/// A <c>jwt</c> rule's validation, by Microsoft.IdentityModel: bearer tokens checked for signature (keys from a JWKS
/// URL, cached and refreshed by a <see cref="ConfigurationManager{T}"/> — so a new key id is picked up — or from a
/// file), issuer, audience, lifetime with clock skew, allowed algorithms (never unsigned), and required claims. The
/// validation parameters are built once.
/// </summary>
internal sealed class JwtValidator : IDisposable
{
    private static readonly string[] DefaultAlgorithms =
    [
        SecurityAlgorithms.RsaSha256, SecurityAlgorithms.RsaSha384, SecurityAlgorithms.RsaSha512,
        SecurityAlgorithms.RsaSsaPssSha256, SecurityAlgorithms.EcdsaSha256, SecurityAlgorithms.EcdsaSha384,
    ];

    private static readonly string[] KnownAlgorithms =
    [
        .. DefaultAlgorithms, SecurityAlgorithms.RsaSsaPssSha384, SecurityAlgorithms.RsaSsaPssSha512, SecurityAlgorithms.EcdsaSha512,
    ];

    /// <summary>Tokens that passed lately, by their SHA-256: a keep-alive client sends the same token on every request.</summary>
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, (string? Subject, DateTime ValidUntil)> _passed = new(StringComparer.Ordinal);

    /// <summary>The most tokens remembered; past it the memory starts over.</summary>
    internal const int MaxRemembered = 4096;

    /// <summary>
    /// How long a token that passed is taken on trust (never past its own expiry). A key withdrawn from the key set
    /// stops the tokens it signed once the set is fetched again (hourly, <see cref="KeySetMaxAge"/>) and this has passed.
    /// </summary>
    internal static readonly TimeSpan RememberFor = TimeSpan.FromMinutes(1);

    /// <summary>How old a fetched key set may get before it is fetched again, unknown key ids or not.</summary>
    internal static readonly TimeSpan KeySetMaxAge = TimeSpan.FromHours(1);

    private readonly JsonWebTokenHandler _handler = new() { MapInboundClaims = false };
    private readonly TokenValidationParameters _parameters;
    private readonly KeyValuePair<string, string>[] _required;
    private readonly string _realm;

    private JwtValidator(TokenValidationParameters parameters, KeyValuePair<string, string>[] required, string realm)
    {
        _parameters = parameters;
        _required = required;
        _realm = realm;
    }

    public static JwtValidator? Create(PolicyRuleOptions options, string endpoint, string at, List<string> errors)
    {
        var before = errors.Count;
        if (string.IsNullOrWhiteSpace(options.Issuer))
        {
            errors.Add($"{at}:Issuer is required (the iss tokens must name).");
        }

        if (options.Audiences.Count == 0 || options.Audiences.Exists(string.IsNullOrWhiteSpace))
        {
            errors.Add($"{at}:Audiences needs at least one audience (the aud tokens must name).");
        }

        if (options.JwksUrl is null == options.JwksFile is null)
        {
            errors.Add($"{at}: jwt needs exactly one of JwksUrl and JwksFile (where the signing keys are).");
        }

        Uri? url = null;
        if (options.JwksUrl is not null && (!Uri.TryCreate(options.JwksUrl, UriKind.Absolute, out url)
            || !(url.Scheme == Uri.UriSchemeHttps || (url.Scheme == Uri.UriSchemeHttp && url.IsLoopback))))
        {
            errors.Add($"{at}:JwksUrl '{Clean(options.JwksUrl)}' must be an absolute https URL (http only to loopback).");
        }

        IList<SecurityKey>? fileKeys = null;
        if (options.JwksFile is not null)
        {
            try
            {
                fileKeys = new JsonWebKeySet(File.ReadAllText(options.JwksFile)).GetSigningKeys();
                if (fileKeys.Count == 0)
                {
                    errors.Add($"{at}:JwksFile '{Clean(options.JwksFile)}' holds no signing key.");
                }
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException or System.Text.Json.JsonException)
            {
                errors.Add($"{at}:JwksFile '{Clean(options.JwksFile)}' cannot be read as a JWKS document: {Clean(ex.Message)}");
            }
        }

        if (options.JwksRefreshInterval < TimeSpan.FromSeconds(1) || options.JwksRefreshInterval > TimeSpan.FromHours(1))
        {
            errors.Add($"{at}:JwksRefreshInterval must be from 1 second to 1 hour.");
        }

        if (options.ClockSkew < TimeSpan.Zero || options.ClockSkew > TimeSpan.FromMinutes(5))
        {
            errors.Add($"{at}:ClockSkew must be from 0 to 5 minutes.");
        }

        if (options.Realm is { } realm && (realm.Length > 64 || realm.Any(c => c is '"' or < ' ' or > '~')))
        {
            errors.Add($"{at}:Realm must be at most 64 visible ASCII characters, without quotes.");
        }

        var algorithms = options.Algorithms.Count == 0 ? DefaultAlgorithms : [.. options.Algorithms];
        foreach (var algorithm in algorithms.Where(a => !KnownAlgorithms.Contains(a, StringComparer.Ordinal)))
        {
            errors.Add($"{at}:Algorithms '{Clean(algorithm)}' is not one of {string.Join(", ", KnownAlgorithms)}.");
        }

        if (errors.Count != before)
        {
            return null;
        }

        var parameters = new TokenValidationParameters
        {
            ValidIssuer = options.Issuer,
            ValidAudiences = [.. options.Audiences],
            ValidateIssuer = true,
            ValidateAudience = true,
            ValidateLifetime = true,
            RequireExpirationTime = true,
            RequireSignedTokens = true,
            ValidateIssuerSigningKey = true,
            ClockSkew = options.ClockSkew,
            ValidAlgorithms = algorithms,
        };
        if (fileKeys is not null)
        {
            parameters.IssuerSigningKeys = fileKeys;
        }
        else
        {
            parameters.ConfigurationManager = new ConfigurationManager<OpenIdConnectConfiguration>(url!.AbsoluteUri, new JwksRetriever(),
                new HttpDocumentRetriever { RequireHttps = url.Scheme == Uri.UriSchemeHttps })
            {
                AutomaticRefreshInterval = KeySetMaxAge,
                RefreshInterval = options.JwksRefreshInterval,
            };
        }

        return new JwtValidator(parameters, [.. options.RequiredClaims], string.IsNullOrWhiteSpace(options.Realm) ? endpoint : options.Realm.Trim());
    }

    /// <summary>Checks an <c>Authorization</c> header: the subject when the token is good, else why not and the answer.</summary>
    public async Task<(string? Subject, string? Problem, int Status, string? Challenge)> ValidateAsync(string authorization)
    {
        if (!authorization.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            return (null, "no bearer token", StatusCodes.Status401Unauthorized, $"Bearer realm=\"{_realm}\"");
        }

        var token = authorization[7..].Trim();
        var fingerprint = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(token)));
        var now = DateTime.UtcNow;
        if (_passed.TryGetValue(fingerprint, out var remembered))
        {
            if (now < remembered.ValidUntil)
            {
                // The same token that passed a moment ago: no signature to check again.
                return (remembered.Subject, null, 0, null);
            }

            _passed.TryRemove(fingerprint, out _);
        }

        var result = await _handler.ValidateTokenAsync(token, _parameters).ConfigureAwait(false);
        if (!result.IsValid)
        {
            var why = Describe(result.Exception);
            return (null, $"invalid token: {why}", StatusCodes.Status401Unauthorized, $"Bearer realm=\"{_realm}\", error=\"invalid_token\", error_description=\"{why}\"");
        }

        foreach (var (type, value) in _required)
        {
            // scope and scp are lists of words; any other claim must equal the value.
            var words = type is "scope" or "scp";
            if (!result.ClaimsIdentity.FindAll(type).Any(c => c.Value == value || (words && c.Value.Split(' ').Contains(value, StringComparer.Ordinal))))
            {
                return (null, $"the token has no claim {type}={value}", StatusCodes.Status403Forbidden, $"Bearer realm=\"{_realm}\", error=\"insufficient_scope\"");
            }
        }

        var subject = result.ClaimsIdentity.FindFirst("sub")?.Value;
        if (subject is { Length: > 128 } || (subject is not null && subject.Any(c => c is < '!' or > '~')))
        {
            // Passed on as a header the service trusts: refused rather than altered (two subjects must never read alike).
            return (null, "the token's subject is not 1 to 128 visible ASCII characters", StatusCodes.Status401Unauthorized, $"Bearer realm=\"{_realm}\", error=\"invalid_token\"");
        }

        if (result.SecurityToken is JsonWebToken { ValidTo: var expires } && expires > now)
        {
            if (_passed.Count >= MaxRemembered)
            {
                _passed.Clear();
            }

            // Trusted until its expiry (no clock skew granted here) or for RememberFor, whichever comes first.
            _passed[fingerprint] = (subject, expires < now + RememberFor ? expires : now + RememberFor);
        }

        return (subject, null, 0, null);
    }

    /// <summary>A short reason for the log and the challenge (never the token).</summary>
    private static string Describe(Exception? exception) => exception switch
    {
        SecurityTokenExpiredException => "expired",
        SecurityTokenNotYetValidException => "not valid yet",
        SecurityTokenNoExpirationException => "no expiry",
        SecurityTokenInvalidAudienceException => "wrong audience",
        SecurityTokenInvalidIssuerException => "wrong issuer",
        SecurityTokenInvalidAlgorithmException => "algorithm not accepted",
        SecurityTokenSignatureKeyNotFoundException => "signed with an unknown key",
        SecurityTokenInvalidSignatureException => "bad signature or unsigned",
        SecurityTokenMalformedException => "malformed",
        null => "unknown",
        _ => exception.GetType().Name.Replace("SecurityToken", "", StringComparison.Ordinal).Replace("Exception", "", StringComparison.Ordinal),
    };

    private static string Clean(string? text) => Internal.SafeText.Clean(text, 128);

    public void Dispose()
    {
    }

    /// <summary>Reads a bare JWKS document as the configuration the token handler takes its signing keys from.</summary>
    private sealed class JwksRetriever : IConfigurationRetriever<OpenIdConnectConfiguration>
    {
        public async Task<OpenIdConnectConfiguration> GetConfigurationAsync(string address, IDocumentRetriever retriever, CancellationToken cancel)
        {
            var keys = new JsonWebKeySet(await retriever.GetDocumentAsync(address, cancel).ConfigureAwait(false));
            var configuration = new OpenIdConnectConfiguration { JsonWebKeySet = keys };
            foreach (var key in keys.GetSigningKeys())
            {
                configuration.SigningKeys.Add(key);
            }

            return configuration;
        }
    }
}
