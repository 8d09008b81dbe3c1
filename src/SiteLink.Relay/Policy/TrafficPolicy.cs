using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Http;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Security;

namespace SiteLink.Relay.Policy;

/// <summary>Why a policy rule stopped a connection or request, and what an HTTP client is answered.</summary>
internal sealed record PolicyDenial(string Rule, string Reason, string Message, int Status, string? Challenge = null, string? Body = null)
{
    /// <summary>The rule answered the client itself (an OpenID Connect login redirect): nothing more to write or count.</summary>
    public bool Handled { get; init; }

    /// <summary>What kind of denial this is, for sampling the log: from a fixed set (never a client's own text).</summary>
    public string Kind { get; init; } = Reason;
}

/// <summary>
/// A cloud endpoint's traffic policy, compiled from <see cref="TrafficPolicyOptions"/>: address ranges parsed once,
/// rate limiters built once (System.Threading.RateLimiting), password hashes decoded once. Evaluated on the
/// connection path, before the agent is asked for anything; immutable once built (a changed policy is a new one).
/// </summary>
internal sealed class TrafficPolicy : IDisposable
{
    private readonly SyncRule[] _onConnect;
    private readonly Rule[] _onRequest;
    private readonly SyncRule[] _onResponse;

    private TrafficPolicy(SyncRule[] onConnect, Rule[] onRequest, SyncRule[] onResponse)
    {
        _onConnect = onConnect;
        _onRequest = onRequest;
        _onResponse = onResponse;
    }

    public bool HasConnectRules => _onConnect.Length > 0;

    /// <summary>Compiles an endpoint's policy; null when it has none. Every problem goes to <paramref name="errors"/>, prefixed with <paramref name="where"/>.</summary>
    public static TrafficPolicy? Compile(CloudEndpointOptions endpoint, string where, List<string> errors) => Compile(endpoint.Policy, endpoint, where, errors);

    /// <summary>Compiles <paramref name="policy"/> for <paramref name="endpoint"/> (a reload: the running endpoint, the policy read again).</summary>
    public static TrafficPolicy? Compile(TrafficPolicyOptions policy, CloudEndpointOptions endpoint, string where, List<string> errors)
    {
        if (policy.IsEmpty)
        {
            return null;
        }

        var before = errors.Count;
        var onConnect = CompilePhase(endpoint, policy.OnConnect, "on_connect", $"{where}:Policy:OnConnect", ConnectTypes, errors);
        var onRequest = CompilePhase(endpoint, policy.OnHttpRequest, "on_http_request", $"{where}:Policy:OnHttpRequest", RequestTypes, errors);
        var onResponse = CompilePhase(endpoint, policy.OnHttpResponse, "on_http_response", $"{where}:Policy:OnHttpResponse", ResponseTypes, errors);
        if (!endpoint.IsHttp && (policy.OnHttpRequest.Count > 0 || policy.OnHttpResponse.Count > 0))
        {
            errors.Add($"{where}:Policy: OnHttpRequest and OnHttpResponse apply to http and https endpoints; '{endpoint.Name}' is {endpoint.Protocol} (use OnConnect).");
        }

        // The connect and response phases take only rules that answer at once (their type lists say which).
        return errors.Count == before ? new TrafficPolicy([.. onConnect.Cast<SyncRule>()], onRequest, [.. onResponse.Cast<SyncRule>()]) : null;
    }

    /// <summary>What a policy says, as text: equal for equal policies, so a reload applies only what changed.</summary>
    public static string Fingerprint(TrafficPolicyOptions policy) => System.Text.Json.JsonSerializer.Serialize(policy);

    private static readonly string[] ConnectTypes = ["restrict-ips", "rate-limit"];
    private static readonly string[] RequestTypes = ["restrict-ips", "rate-limit", "basic-auth", "jwt", "oidc", "add-headers", "remove-headers", "deny"];

    /// <summary>A policy's oidc rules with their places in OnHttpRequest (which name their authentication schemes).</summary>
    public static IEnumerable<(PolicyRuleOptions Rule, int Index)> OidcRules(TrafficPolicyOptions policy) =>
        policy.OnHttpRequest.Select((rule, index) => (rule, index)).Where(x => string.Equals(x.rule.Type.Trim(), "oidc", StringComparison.OrdinalIgnoreCase));

    /// <summary>The authentication schemes (and the callback path) of an endpoint's oidc rule at <paramref name="index"/> of OnHttpRequest.</summary>
    public static (string Cookie, string Oidc, string CallbackPath) OidcSchemes(string endpoint, int index) =>
        ($"sitelink-cookie.{endpoint}.{index.ToString(CultureInfo.InvariantCulture)}", $"sitelink-oidc.{endpoint}.{index.ToString(CultureInfo.InvariantCulture)}",
         $"/.sitelink/oidc/{endpoint}.{index.ToString(CultureInfo.InvariantCulture)}/callback");
    private static readonly string[] ResponseTypes = ["add-headers", "remove-headers"];

    private static Rule[] CompilePhase(CloudEndpointOptions endpoint, List<PolicyRuleOptions> rules, string phase, string where, string[] types, List<string> errors)
    {
        var compiled = new List<Rule>();
        for (var i = 0; i < rules.Count; i++)
        {
            var options = rules[i];
            var at = $"{where}[{i.ToString(CultureInfo.InvariantCulture)}]";
            var type = options.Type.Trim().ToLowerInvariant();
            if (!types.Contains(type))
            {
                errors.Add($"{at}:Type '{Clean(options.Type)}' is not one of {string.Join(", ", types)}.");
                continue;
            }

            var name = string.IsNullOrWhiteSpace(options.Name) ? $"{phase}[{i.ToString(CultureInfo.InvariantCulture)}]:{type}" : options.Name.Trim();
            if (name.Length > 64 || name.Any(char.IsControl))
            {
                errors.Add($"{at}:Name must be at most 64 characters without control characters.");
                continue;
            }

            Rule? rule = type switch
            {
                "restrict-ips" => RestrictIps.Create(name, options, at, errors),
                "rate-limit" => RateLimit.Create(name, options, phase, at, errors),
                "basic-auth" => BasicAuth.Create(name, options, endpoint.Name, at, errors),
                "jwt" => JwtRule.Create(name, options, endpoint.Name, at, errors),
                "oidc" => OidcLogin.Create(name, options, OidcSchemes(endpoint.Name, i), at, errors),
                "add-headers" => AddHeaders.Create(name, options, at, errors),
                "remove-headers" => RemoveHeaders.Create(name, options, at, errors),
                _ => Deny.Create(name, options, at, errors),
            };
            if (rule is not null)
            {
                compiled.Add(rule);
            }
        }

        return [.. compiled];
    }

    /// <summary>The on-connect rules for a new connection from <paramref name="client"/>; null when it may go on.</summary>
    public PolicyDenial? OnConnect(IPAddress client)
    {
        var context = new PolicyContext(Normalize(client), null);
        foreach (var rule in _onConnect)
        {
            if (rule.Apply(context) is { } denial)
            {
                return denial;
            }
        }

        return null;
    }

    /// <summary>The on-request rules; null when the request may be forwarded (with the headers they set).</summary>
    public async ValueTask<PolicyDenial?> OnHttpRequestAsync(HttpContext http)
    {
        var context = new PolicyContext(Normalize(http.Connection.RemoteIpAddress ?? IPAddress.None), http);
        foreach (var rule in _onRequest)
        {
            if (await rule.ApplyAsync(context).ConfigureAwait(false) is { } denial)
            {
                return denial;
            }
        }

        if (context.User is { } subject)
        {
            // Who it was, for traces (OpenTelemetry's enduser.id on the request's activity) and for the rest of the request.
            http.Items[SubjectKey] = subject;
            System.Diagnostics.Activity.Current?.SetTag("enduser.id", subject);
        }

        if (_onResponse.Length > 0)
        {
            // Applied last, over whatever the upstream sent.
            http.Response.OnStarting(static state =>
            {
                var (policy, context) = ((TrafficPolicy, PolicyContext))state;
                foreach (var rule in policy._onResponse)
                {
                    rule.Apply(context);
                }

                return Task.CompletedTask;
            }, (this, context with { Response = true }));
        }

        return null;
    }

    /// <summary>The <c>HttpContext.Items</c> key of the user or token subject the policy let through.</summary>
    public const string SubjectKey = "sitelink.subject";

    private static IPAddress Normalize(IPAddress address) => address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;

    private static string Clean(string? text) => Internal.SafeText.Clean(text, 64);

    /// <summary>
    /// Disposes a policy that was replaced or whose endpoint was removed (its rate limiters' timers) two minutes later,
    /// once the connections and requests that read it before are done with it (one that outlives it gets 503).
    /// </summary>
    public static void DisposeLater(TrafficPolicy? policy)
    {
        if (policy is not null)
        {
            _ = Task.Delay(TimeSpan.FromMinutes(2)).ContinueWith(_ => policy.Dispose(), CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
        }
    }

    public void Dispose()
    {
        foreach (var rule in _onConnect.Concat(_onRequest).Concat(_onResponse))
        {
            (rule as IDisposable)?.Dispose();
        }
    }

    /// <summary>What rules see: the client's address, the request (null on connect), and who basic-auth let through.</summary>
    private sealed record PolicyContext(IPAddress Client, HttpContext? Http, bool Response = false)
    {
        public string? User { get; set; }
    }

    private abstract class Rule(string name)
    {
        public string Name { get; } = name;

        public abstract ValueTask<PolicyDenial?> ApplyAsync(PolicyContext context);
    }

    /// <summary>A rule that answers at once (the only kind the connect and response phases take).</summary>
    private abstract class SyncRule(string name) : Rule(name)
    {
        public abstract PolicyDenial? Apply(PolicyContext context);

        public sealed override ValueTask<PolicyDenial?> ApplyAsync(PolicyContext context) => ValueTask.FromResult(Apply(context));
    }

    private sealed class RestrictIps(string name, IPNetwork[] allow, IPNetwork[] deny) : SyncRule(name)
    {
        public static RestrictIps? Create(string name, PolicyRuleOptions options, string at, List<string> errors)
        {
            if (options.Allow.Count == 0 && options.Deny.Count == 0)
            {
                errors.Add($"{at}: restrict-ips needs Allow or Deny (CIDR ranges).");
                return null;
            }

            var allow = Parse(options.Allow, $"{at}:Allow", errors);
            var deny = Parse(options.Deny, $"{at}:Deny", errors);
            return allow is null || deny is null ? null : new RestrictIps(name, allow, deny);
        }

        private static IPNetwork[]? Parse(List<string> ranges, string at, List<string> errors)
        {
            var parsed = new List<IPNetwork>();
            var ok = true;
            for (var i = 0; i < ranges.Count; i++)
            {
                var text = ranges[i].Trim();
                var slash = text.IndexOf('/', StringComparison.Ordinal);
                if (IPNetwork.TryParse(text, out var network))
                {
                    if (network.BaseAddress.IsIPv4MappedToIPv6)
                    {
                        // Clients' mapped addresses are compared as IPv4: a mapped range would never match.
                        errors.Add($"{at}[{i.ToString(CultureInfo.InvariantCulture)}] '{Clean(text)}' is an IPv4-mapped IPv6 range: write the IPv4 range.");
                        ok = false;
                        continue;
                    }

                    if (IPAddress.TryParse(text.AsSpan(0, slash), out var written) && !written.Equals(network.BaseAddress))
                    {
                        // 10.0.0.1/8 is ambiguous (one host, or its network?): say so rather than guess.
                        errors.Add($"{at}[{i.ToString(CultureInfo.InvariantCulture)}] '{Clean(text)}' has bits set past its /{network.PrefixLength.ToString(CultureInfo.InvariantCulture)} prefix: write {network} for the range, or {written}/{(written.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128).ToString(CultureInfo.InvariantCulture)} for the one address.");
                        ok = false;
                        continue;
                    }

                    parsed.Add(network);
                }
                else if (!text.Contains('/', StringComparison.Ordinal) && IPAddress.TryParse(text, out var address))
                {
                    parsed.Add(new IPNetwork(address, address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128));
                }
                else
                {
                    errors.Add($"{at}[{i.ToString(CultureInfo.InvariantCulture)}] '{Clean(text)}' is not an address or a CIDR range (e.g. 10.0.0.0/8, 2001:db8::/32; no bits set past the prefix).");
                    ok = false;
                }
            }

            return ok ? [.. parsed] : null;
        }

        public override PolicyDenial? Apply(PolicyContext context)
        {
            var client = context.Client;
            if (Array.Exists(deny, n => n.Contains(client)))
            {
                return new PolicyDenial(Name, "ip_denied", $"{client} is in a denied range", StatusCodes.Status403Forbidden);
            }

            return allow.Length > 0 && !Array.Exists(allow, n => n.Contains(client))
                ? new PolicyDenial(Name, "ip_denied", $"{client} is not in an allowed range", StatusCodes.Status403Forbidden)
                : null;
        }
    }

    private sealed class RateLimit(string name, PartitionedRateLimiter<PolicyContext> limiter, double perSecond) : SyncRule(name), IDisposable
    {
        public static RateLimit? Create(string name, PolicyRuleOptions options, string phase, string at, List<string> errors)
        {
            var ok = true;
            if (options.Capacity is < 1 or > 1_000_000)
            {
                errors.Add($"{at}:Capacity must be from 1 to 1,000,000 (the burst a client may start at once).");
                ok = false;
            }

            if (!(options.PerSecond >= 0.001 && options.PerSecond <= 1_000_000))
            {
                errors.Add($"{at}:PerSecond must be from 0.001 (one every ~17 minutes) to 1,000,000.");
                ok = false;
            }

            var key = options.Key.Trim().ToLowerInvariant();
            if (key is not ("client-ip" or "endpoint" or "subject"))
            {
                errors.Add($"{at}:Key '{Clean(options.Key)}' is not client-ip, endpoint or subject.");
                ok = false;
            }
            else if (key == "subject" && phase != "on_http_request")
            {
                errors.Add($"{at}:Key subject applies to OnHttpRequest (after a basic-auth or jwt rule has found who it is).");
                ok = false;
            }

            if (!ok)
            {
                return null;
            }

            // Below one a second: one token every 1/PerSecond seconds; from one a second: PerSecond (rounded) tokens each
            // second. Replenished by the limiter's own timer; no queueing: a client past its budget is answered at once.
            var period = options.PerSecond < 1 ? TimeSpan.FromSeconds(1 / options.PerSecond) : TimeSpan.FromSeconds(1);
            var perPeriod = options.PerSecond < 1 ? 1 : (int)Math.Round(options.PerSecond);
            var bucket = new TokenBucketRateLimiterOptions
            {
                TokenLimit = options.Capacity,
                TokensPerPeriod = perPeriod,
                ReplenishmentPeriod = period,
                QueueLimit = 0,
                AutoReplenishment = true,
            };
            var limiter = key switch
            {
                "endpoint" => PartitionedRateLimiter.Create<PolicyContext, string>(_ => RateLimitPartition.GetTokenBucketLimiter("", _ => bucket)),
                // The user or token subject an earlier rule established; a request without one counts under its address.
                "subject" => PartitionedRateLimiter.Create<PolicyContext, string>(c => RateLimitPartition.GetTokenBucketLimiter(
                    c.User is { } user ? "user:" + user : "ip:" + ClientAddress.KeyOf(c.Client), _ => bucket)),
                // IPv6 clients share a bucket per /64, the block one host usually holds.
                _ => PartitionedRateLimiter.Create<PolicyContext, string>(c => RateLimitPartition.GetTokenBucketLimiter("ip:" + ClientAddress.KeyOf(c.Client), _ => bucket)),
            };
            return new RateLimit(name, limiter, options.PerSecond);
        }

        public override PolicyDenial? Apply(PolicyContext context)
        {
            RateLimitLease lease;
            try
            {
                lease = limiter.AttemptAcquire(context);
            }
            catch (ObjectDisposedException)
            {
                // A request that outlived its policy's replacement (a reload): asked to come again, under the new one.
                return new PolicyDenial(Name, "rate_limited", "the policy was replaced meanwhile", StatusCodes.Status503ServiceUnavailable);
            }

            using var _ = lease;
            return lease.IsAcquired
                ? null
                : new PolicyDenial(Name, "rate_limited", string.Create(CultureInfo.InvariantCulture, $"{(context.User is { } user ? $"user '{user}'" : context.Client.ToString())} is past the rate limit ({perSecond:0.###}/s)"), StatusCodes.Status429TooManyRequests);
        }

        public void Dispose() => limiter.Dispose();
    }

    private sealed class BasicAuth(string name, string realm, Dictionary<string, PasswordHash> users, PasswordHash decoy) : Rule(name)
    {
        /// <summary>
        /// Password checks running at once, process-wide: each costs a PBKDF2 (tenths of a second at 600,000
        /// iterations), so a client guessing passwords must not take every core from every tenant. Past the cap the
        /// request is answered 503 at once.
        /// </summary>
        private static readonly SemaphoreSlim Checks = new(Math.Max(1, Environment.ProcessorCount / 2));

        /// <summary>Credentials verified lately (SHA-256 of them, never themselves): PBKDF2 runs once per new pair, not per request.</summary>
        private readonly ConcurrentDictionary<string, string> _verified = new(StringComparer.Ordinal);

        public static BasicAuth? Create(string name, PolicyRuleOptions options, string endpoint, string at, List<string> errors)
        {
            var realm = string.IsNullOrWhiteSpace(options.Realm) ? endpoint : options.Realm.Trim();
            if (realm.Length > 64 || realm.Any(c => char.IsControl(c) || c == '"'))
            {
                errors.Add($"{at}:Realm must be at most 64 characters, without control characters or quotes.");
                return null;
            }

            if (options.Users.Count == 0)
            {
                errors.Add($"{at}: basic-auth needs at least one user in Users.");
                return null;
            }

            var users = new Dictionary<string, PasswordHash>(StringComparer.Ordinal);
            for (var i = 0; i < options.Users.Count; i++)
            {
                var user = options.Users[i];
                var userAt = $"{at}:Users[{i.ToString(CultureInfo.InvariantCulture)}]";
                if (user.Name.Length is 0 or > 64 || user.Name.Any(c => char.IsControl(c) || c == ':'))
                {
                    errors.Add($"{userAt}:Name must be 1 to 64 characters, without ':' or control characters.");
                }
                else if (!PasswordHash.TryParse(user.PasswordHash, out var hash, out var problem))
                {
                    errors.Add($"{userAt}:PasswordHash of '{Clean(user.Name)}' {problem}");
                }
                else if (!users.TryAdd(user.Name, hash))
                {
                    errors.Add($"{userAt}:Name '{Clean(user.Name)}' is listed twice.");
                }
            }

            // An unknown user costs what a wrong password of this rule's users costs: the same iterations.
            return users.Count == options.Users.Count
                ? new BasicAuth(name, realm, users, PasswordHash.Create(Convert.ToBase64String(RandomNumberGenerator.GetBytes(16)), users.Values.Max(h => h.Iterations)))
                : null;
        }

        public override async ValueTask<PolicyDenial?> ApplyAsync(PolicyContext context)
        {
            var header = context.Http!.Request.Headers.Authorization.ToString();
            var challenge = $"Basic realm=\"{realm}\", charset=\"UTF-8\"";
            if (!header.StartsWith("Basic ", StringComparison.OrdinalIgnoreCase))
            {
                return new PolicyDenial(Name, "unauthorized", "no credentials", StatusCodes.Status401Unauthorized, challenge) { Kind = "no credentials" };
            }

            string user, password;
            try
            {
                var decoded = Encoding.UTF8.GetString(Convert.FromBase64String(header[6..].Trim()));
                var colon = decoded.IndexOf(':', StringComparison.Ordinal);
                if (colon <= 0)
                {
                    return new PolicyDenial(Name, "unauthorized", "malformed credentials", StatusCodes.Status401Unauthorized, challenge) { Kind = "malformed credentials" };
                }

                (user, password) = (decoded[..colon], decoded[(colon + 1)..]);
            }
            catch (FormatException)
            {
                return new PolicyDenial(Name, "unauthorized", "malformed credentials", StatusCodes.Status401Unauthorized, challenge) { Kind = "malformed credentials" };
            }

            var fingerprint = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(header)));
            if (_verified.TryGetValue(fingerprint, out var known) && known == user)
            {
                context.User = user;
                return null;
            }

            // An unknown user costs the same as a wrong password: nobody learns which names exist from the timing.
            var hash = users.TryGetValue(user, out var found) ? found : decoy;
            if (!await Checks.WaitAsync(0).ConfigureAwait(false))
            {
                return new PolicyDenial(Name, "busy", "too many password checks at once", StatusCodes.Status503ServiceUnavailable) { Kind = "busy" };
            }

            bool verified;
            try
            {
                // Off the thread that received the request (the http listener runs requests inline on it).
                verified = await Task.Run(() => hash.Verify(password)).ConfigureAwait(false);
            }
            finally
            {
                Checks.Release();
            }

            if (!verified || found is null)
            {
                return new PolicyDenial(Name, "unauthorized", $"wrong user name or password (user '{Clean(user)}')", StatusCodes.Status401Unauthorized, challenge) { Kind = "wrong user name or password" };
            }

            if (_verified.Count >= 1024)
            {
                _verified.Clear();
            }

            _verified[fingerprint] = user;
            context.User = user;
            return null;
        }
    }

    private sealed class JwtRule(string name, JwtValidator validator) : Rule(name), IDisposable
    {
        public static JwtRule? Create(string name, PolicyRuleOptions options, string endpoint, string at, List<string> errors) =>
            JwtValidator.Create(options, endpoint, at, errors) is { } validator ? new JwtRule(name, validator) : null;

        public override async ValueTask<PolicyDenial?> ApplyAsync(PolicyContext context)
        {
            var (user, problem, status, challenge) = await validator.ValidateAsync(context.Http!.Request.Headers.Authorization.ToString()).ConfigureAwait(false);
            if (problem is not null)
            {
                return new PolicyDenial(Name, status == StatusCodes.Status403Forbidden ? "forbidden" : "unauthorized", problem, status, challenge) { Kind = problem };
            }

            context.User = user;
            return null;
        }

        public void Dispose() => validator.Dispose();
    }

    /// <summary>
    /// OpenID Connect login for browsers: ASP.NET Core's OpenID Connect handler (authorization code with PKCE) and a
    /// cookie per endpoint and rule, registered when the http endpoints start; a request without the cookie is sent to
    /// the provider, one with it is let through when its email is allowed.
    /// </summary>
    private sealed class OidcLogin(string name, string cookie, string oidc, string[] emails, string[] domains) : Rule(name)
    {
        public static OidcLogin? Create(string name, PolicyRuleOptions options, (string Cookie, string Oidc, string CallbackPath) schemes, string at, List<string> errors)
        {
            var before = errors.Count;
            if (!Uri.TryCreate(options.Authority, UriKind.Absolute, out var authority)
                || !(authority.Scheme == Uri.UriSchemeHttps || (authority.Scheme == Uri.UriSchemeHttp && authority.IsLoopback)))
            {
                errors.Add($"{at}:Authority must be the provider's absolute https URL (http only to loopback).");
            }

            if (string.IsNullOrWhiteSpace(options.ClientId) || string.IsNullOrEmpty(options.ClientSecret))
            {
                errors.Add($"{at}: oidc needs ClientId and ClientSecret.");
            }

            if (options.SessionLifetime < TimeSpan.FromMinutes(1) || options.SessionLifetime > TimeSpan.FromDays(30))
            {
                errors.Add($"{at}:SessionLifetime must be from 1 minute to 30 days.");
            }

            return errors.Count == before
                ? new OidcLogin(name, schemes.Cookie, schemes.Oidc, [.. options.AllowedEmails.Select(e => e.Trim())], [.. options.AllowedDomains.Select(d => d.Trim().TrimStart('@'))])
                : null;
        }

        public override async ValueTask<PolicyDenial?> ApplyAsync(PolicyContext context)
        {
            var http = context.Http!;
            var session = await Microsoft.AspNetCore.Authentication.AuthenticationHttpContextExtensions.AuthenticateAsync(http, cookie).ConfigureAwait(false);
            if (!session.Succeeded)
            {
                await Microsoft.AspNetCore.Authentication.AuthenticationHttpContextExtensions.ChallengeAsync(http, oidc,
                    new Microsoft.AspNetCore.Authentication.AuthenticationProperties { RedirectUri = http.Request.PathBase + http.Request.Path + http.Request.QueryString }).ConfigureAwait(false);
                return new PolicyDenial(Name, "login", "sent to log in", StatusCodes.Status302Found) { Handled = true, Kind = "login" };
            }

            var email = session.Principal.FindFirst("email")?.Value;
            var allowed = (emails.Length == 0 && domains.Length == 0)
                || (email is not null && (emails.Contains(email, StringComparer.OrdinalIgnoreCase)
                    || domains.Any(d => email.EndsWith("@" + d, StringComparison.OrdinalIgnoreCase))));
            if (!allowed)
            {
                return new PolicyDenial(Name, "forbidden", $"'{Clean(email)}' is not allowed here", StatusCodes.Status403Forbidden) { Kind = "not allowed" };
            }

            context.User = Visible(email ?? session.Principal.FindFirst("sub")?.Value ?? "");
            return null;
        }
    }

    private sealed class AddHeaders(string name, KeyValuePair<string, string>[] headers) : SyncRule(name)
    {
        public static AddHeaders? Create(string name, PolicyRuleOptions options, string at, List<string> errors)
        {
            if (options.Headers.Count == 0)
            {
                errors.Add($"{at}: add-headers needs Headers (name: value).");
                return null;
            }

            var ok = true;
            foreach (var (header, value) in options.Headers)
            {
                if (!IsToken(header) || value.Length > 1024 || value.Any(c => c is not (' ' or '\t') and (< '!' or > '~')))
                {
                    errors.Add($"{at}:Headers '{Clean(header)}': names are HTTP tokens, values at most 1,024 visible ASCII characters (spaces and tabs allowed).");
                    ok = false;
                }
            }

            return ok ? new AddHeaders(name, [.. options.Headers]) : null;
        }

        public override PolicyDenial? Apply(PolicyContext context)
        {
            var target = context.Response ? context.Http!.Response.Headers : context.Http!.Request.Headers;
            var certificate = context.Http.Connection.ClientCertificate;
            foreach (var (header, value) in headers)
            {
                var text = value
                    .Replace("${client.ip}", context.Client.ToString(), StringComparison.Ordinal)
                    .Replace("${auth.user}", context.User ?? "", StringComparison.Ordinal);
                if (text.Contains("${client.cert.", StringComparison.Ordinal))
                {
                    // From a certificate the handshake verified against the endpoint's authorities (mutual TLS); empty without one.
                    text = text
                        .Replace("${client.cert.subject}", certificate is null ? "" : Visible(certificate.Subject), StringComparison.Ordinal)
                        .Replace("${client.cert.sha256}", certificate?.GetCertHashString(System.Security.Cryptography.HashAlgorithmName.SHA256) ?? "", StringComparison.Ordinal);
                }

                target[header] = text;
            }

            return null;
        }
    }

    private sealed class RemoveHeaders(string name, string[] names) : SyncRule(name)
    {
        public static RemoveHeaders? Create(string name, PolicyRuleOptions options, string at, List<string> errors)
        {
            if (options.Names.Count == 0 || options.Names.Exists(n => !IsToken(n)))
            {
                errors.Add($"{at}: remove-headers needs Names, each an HTTP header name.");
                return null;
            }

            return new RemoveHeaders(name, [.. options.Names]);
        }

        public override PolicyDenial? Apply(PolicyContext context)
        {
            var target = context.Response ? context.Http!.Response.Headers : context.Http!.Request.Headers;
            foreach (var header in names)
            {
                target.Remove(header);
            }

            return null;
        }
    }

    private sealed class Deny(string name, int status, string? body) : SyncRule(name)
    {
        public static Deny? Create(string name, PolicyRuleOptions options, string at, List<string> errors)
        {
            if (options.Status is < 400 or > 599)
            {
                errors.Add($"{at}:Status must be from 400 to 599.");
                return null;
            }

            if (options.Body is { Length: > 1024 })
            {
                errors.Add($"{at}:Body must be at most 1,024 characters.");
                return null;
            }

            return new Deny(name, options.Status, options.Body);
        }

        public override PolicyDenial? Apply(PolicyContext context) =>
            new(Name, "denied", "denied by rule", status, Body: body);
    }

    /// <summary>Only visible ASCII and spaces survive into a header (a subject may hold anything).</summary>
    private static string Visible(string text) => string.Concat(text.Select(c => c is >= ' ' and <= '~' ? c : '?'));

    private static bool IsToken(string name) =>
        name.Length is > 0 and <= 128 && name.All(c => c is > ' ' and < '\u007f' && "()<>@,;:\\\"/[]?={}".IndexOf(c, StringComparison.Ordinal) < 0);
}
