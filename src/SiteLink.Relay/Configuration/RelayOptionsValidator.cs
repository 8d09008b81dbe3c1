using System.Globalization;
using System.Net;
using SiteLink.Internal;
using SiteLink.Relay.Security;

namespace SiteLink.Relay.Configuration;

/// <summary>Checks a <see cref="RelayOptions"/> and lists every problem at once. Never quotes a secret.</summary>
public static class RelayOptionsValidator
{
    /// <summary>Returns every problem found; empty when the options are valid.</summary>
    public static IReadOnlyList<string> Validate(RelayOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = new List<string>();
        if (string.IsNullOrWhiteSpace(options.RelayId))
        {
            errors.Add("Relay:RelayId must not be empty.");
        }

        var onLoopback = true;
        if (!TryParseEndPoint(options.AgentListen, out var agentListen))
        {
            errors.Add($"Relay:AgentListen '{options.AgentListen}' is not an ip:port address.");
        }
        else
        {
            onLoopback = IPAddress.IsLoopback(agentListen.Address);
        }

        ValidateTls(options.Tls, onLoopback, options.AgentListen, errors);
        ValidateTokens(options.Tokens, onLoopback, errors, allowEmpty: options.HasControlPlane);
        ValidateCloudEndpoints(options, errors);
        ValidateControlPlane(options, errors);
        ValidateLimits(options.Limits, errors);
        ValidateEvents(options.Events, options.Webhooks, errors);
        if (options.DrainTimeout < TimeSpan.Zero)
        {
            errors.Add("Relay:DrainTimeout must not be negative.");
        }

        if (!string.IsNullOrEmpty(options.MinimumAgentVersion) && !Agents.SemanticVersion.TryParse(options.MinimumAgentVersion, out _))
        {
            errors.Add($"Relay:MinimumAgentVersion '{SafeText.Clean(options.MinimumAgentVersion, SafeText.MaxIdLength)}' is not a semantic version: write major.minor.patch with an optional -prerelease, e.g. 2.1.0 or 2.1.0-rc.1 (+build metadata is ignored), or leave it empty for no minimum.");
        }

        return errors;
    }

    /// <summary>Throws <see cref="RelayConfigurationException"/> listing every problem, if there is any.</summary>
    public static void ThrowIfInvalid(RelayOptions options)
    {
        var errors = Validate(options);
        if (errors.Count > 0)
        {
            throw new RelayConfigurationException(errors);
        }
    }

    /// <summary>Parses a validated <c>ip:port</c>.</summary>
    internal static IPEndPoint ParseEndPoint(string text) =>
        TryParseEndPoint(text, out var endPoint) ? endPoint : throw new FormatException($"'{text}' is not an ip:port address.");

    internal static bool TryParseEndPoint(string? text, out IPEndPoint endPoint)
    {
        endPoint = null!;
        if (string.IsNullOrWhiteSpace(text) || !IPEndPoint.TryParse(text, out var parsed) || parsed is null)
        {
            return false;
        }

        // IPEndPoint.TryParse accepts a bare address as port 0; insist on an explicit port.
        var hasPort = text.StartsWith('[') ? text.Contains("]:", StringComparison.Ordinal) : text.Count(c => c == ':') == 1;
        if (!hasPort)
        {
            return false;
        }

        endPoint = parsed;
        return true;
    }

    /// <summary>Weak plaintext tokens of <paramref name="tokens"/> and why (accepted on loopback only, with a warning).</summary>
    public static IEnumerable<(string Name, string Why)> WeakTokens(IEnumerable<AuthTokenOptions> tokens)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        foreach (var token in tokens)
        {
            if (token.Token is { Length: >= MinimumTokenLength } secret && TokenStrength.Weakness(secret) is { } why)
            {
                yield return (token.Name, why);
            }
        }
    }

    private const int MinimumTokenLength = 16;

    private static void ValidateTls(RelayTlsOptions tls, bool onLoopback, string agentListen, List<string> errors)
    {
        if (tls.Disabled && tls.CertificatePath is not null)
        {
            errors.Add("Relay:Tls: CertificatePath is set but Disabled is true; choose one.");
        }

        if (!onLoopback && tls.Disabled && !tls.AllowPlaintextOnNetwork)
        {
            errors.Add($"Relay:Tls:Disabled serves agents without TLS, so authtokens would cross the network in clear text, and Relay:AgentListen '{agentListen}' is not a loopback address. Configure Relay:Tls:CertificatePath, listen on 127.0.0.1, or set Relay:Tls:AllowPlaintextOnNetwork to do it anyway.");
        }

        if (!onLoopback && !tls.Disabled && tls.CertificatePath is null && !tls.AllowDevelopmentCertificateOnNetwork)
        {
            errors.Add($"Relay:AgentListen '{agentListen}' is not a loopback address but no certificate is configured: set Relay:Tls:CertificatePath (PKCS#12, or PEM with KeyPath), or set Relay:Tls:AllowDevelopmentCertificateOnNetwork to serve the generated self-signed certificate (agents must then pin its SHA-256).");
        }

        if (tls.CertificatePath is not null && !File.Exists(tls.CertificatePath))
        {
            errors.Add($"Relay:Tls:CertificatePath '{tls.CertificatePath}' does not exist.");
        }

        if (tls.KeyPath is not null && !File.Exists(tls.KeyPath))
        {
            errors.Add($"Relay:Tls:KeyPath '{tls.KeyPath}' does not exist.");
        }
    }

    /// <summary>Checks the token list alone (also used when it is reloaded while the relay runs).</summary>
    internal static void ValidateTokens(IList<AuthTokenOptions> tokens, bool onLoopback, List<string> errors, bool allowEmpty = false)
    {
        if (tokens.Count == 0 && !allowEmpty)
        {
            errors.Add("Relay:Tokens is empty: no agent could connect. Add at least one token.");
        }

        var names = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        var secrets = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        for (var i = 0; i < tokens.Count; i++)
        {
            var token = tokens[i];
            var where = $"Relay:Tokens:{i.ToString(CultureInfo.InvariantCulture)}";
            if (string.IsNullOrWhiteSpace(token.Name))
            {
                errors.Add($"{where}:Name is required.");
            }
            else if (!names.Add(token.Name))
            {
                errors.Add($"{where}:Name '{token.Name}' is used by another token.");
            }

            var label = string.IsNullOrWhiteSpace(token.Name) ? where : $"token '{token.Name}'";
            var hasSecret = !string.IsNullOrEmpty(token.Token);
            var hasHash = !string.IsNullOrEmpty(token.Sha256);
            if (hasSecret == hasHash)
            {
                errors.Add($"{where}: {label} needs exactly one of Token or Sha256.");
            }
            else if (hasHash && AuthTokenStore.TryParseSha256(token.Sha256!) is null)
            {
                errors.Add($"{where}:Sha256 of {label} must be 64 hexadecimal digits.");
            }
            else if (hasSecret && token.Token!.Length < MinimumTokenLength)
            {
                errors.Add($"{where}:Token of {label} is too short (at least 16 characters).");
            }
            else if (hasSecret && !onLoopback && TokenStrength.Weakness(token.Token!) is { } weakness)
            {
                errors.Add($"{where}:Token of {label} is weak: {weakness}. Agent-port addresses other than loopback need random tokens (e.g. 'openssl rand -base64 32'), or Sha256 of one.");
            }
            else
            {
                if (!secrets.Add(AuthTokenStore.SecretHashOf(token)))
                {
                    errors.Add($"{where}: {label} has the same secret as another token.");
                }
            }

            if (string.IsNullOrWhiteSpace(token.Tenant))
            {
                errors.Add($"{where}:Tenant of {label} is required.");
            }

            if (token.Allow.Count == 0)
            {
                errors.Add($"{where}:Allow of {label} is empty; list the endpoint names it may bind ('*' for any).");
            }

            foreach (var pattern in token.Allow)
            {
                if (!EndpointAcl.IsValidPattern(pattern))
                {
                    errors.Add($"{where}:Allow pattern '{pattern}' of {label} is invalid (letters, digits, '-', '_', '.', '*', '?').");
                }
            }
        }
    }

    /// <summary>The admin API's listener, keys and JWT settings, and the store's.</summary>
    private static void ValidateControlPlane(RelayOptions options, List<string> errors)
    {
        var admin = options.Admin;
        if (admin.Listen is { } listen)
        {
            if (!TryParseEndPoint(listen, out var endPoint))
            {
                errors.Add($"Relay:Admin:Listen '{SafeText.Clean(listen, 64)}' is not an ip:port address.");
            }
            else if (admin.DisableTls && !IPAddress.IsLoopback(endPoint.Address))
            {
                errors.Add("Relay:Admin:DisableTls is allowed on loopback only: admin keys must not cross a network in the clear.");
            }
            else if (admin.DisableTls is false && options.Tls.Disabled)
            {
                errors.Add("Relay:Admin serves HTTPS with the agent port's certificate, and Relay:Tls:Disabled leaves none: set Relay:Admin:DisableTls (loopback only) or give the agent port a certificate.");
            }
        }

        var names = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        for (var i = 0; i < admin.Keys.Count; i++)
        {
            var key = admin.Keys[i];
            var where = $"Relay:Admin:Keys:{i.ToString(CultureInfo.InvariantCulture)}";
            if (!ControlPlane.ResourceNames.IsValid(key.Name))
            {
                errors.Add($"{where}:Name must be 1 to 64 lower-case letters, digits, '-', '_' or '.'.");
            }
            else if (!names.Add(key.Name))
            {
                errors.Add($"{where}:Name '{key.Name}' is used by another key.");
            }

            if (string.IsNullOrEmpty(key.Key) == string.IsNullOrEmpty(key.Sha256))
            {
                errors.Add($"{where}: needs exactly one of Key or Sha256.");
            }
            else if (key.Key is { Length: < 32 })
            {
                errors.Add($"{where}:Key is too short (at least 32 characters; e.g. 'openssl rand -base64 32').");
            }
            else if (key.Sha256 is { } sha && AuthTokenStore.TryParseSha256(sha) is null)
            {
                errors.Add($"{where}:Sha256 must be 64 hexadecimal digits.");
            }

            if (key.Scope is not ("read" or "full"))
            {
                errors.Add($"{where}:Scope must be 'read' or 'full'.");
            }
        }

        if (admin.Listen is not null && admin.Keys.Count == 0 && admin.Jwt is null)
        {
            errors.Add("Relay:Admin:Listen is set but nothing can call the admin API: add Relay:Admin:Keys (or Relay:Admin:Jwt).");
        }

        var store = options.Store;
        if (store.Provider is not ("sqlite" or "postgres"))
        {
            errors.Add($"Relay:Store:Provider '{SafeText.Clean(store.Provider, 32)}' must be 'sqlite' or 'postgres'.");
        }
        else if (store.Provider == "postgres" && string.IsNullOrWhiteSpace(store.ConnectionString))
        {
            errors.Add("Relay:Store:ConnectionString is required with the postgres provider.");
        }

        if (store.PollInterval < TimeSpan.FromMilliseconds(50) || store.PollInterval > TimeSpan.FromMinutes(1))
        {
            errors.Add("Relay:Store:PollInterval must be from 50 ms to 1 minute.");
        }
    }

    private static void ValidateCloudEndpoints(RelayOptions options, List<string> errors)
    {
        var claims = new ListenerClaims();
        var tenants = new HashSet<string>(options.Tokens.Select(t => t.Tenant), StringComparer.OrdinalIgnoreCase);
        for (var i = 0; i < options.CloudEndpoints.Count; i++)
        {
            var endpoint = options.CloudEndpoints[i];
            var where = $"Relay:CloudEndpoints:{i.ToString(CultureInfo.InvariantCulture)}";
            claims.Take(endpoint, where, errors);
            // With a control plane, the tenant's tokens may come from the admin API.
            ValidateCloudEndpoint(endpoint, where, options.HasControlPlane ? null : tenants, errors);
        }
    }

    /// <summary>
    /// Checks a cloud endpoint to be added or changed while the relay runs (before it is stored, and again when it is
    /// applied): the rules of a configured endpoint, and its conflicts with <paramref name="others"/> (the configured
    /// endpoints and the other runtime ones) — its name, a tcp address, another protocol on a shared address, a host
    /// name already routed on that listener. Compiles its policy into <see cref="CloudEndpointOptions.CompiledPolicy"/>
    /// as the configuration's validation does (disposing one compiled before). Unlike the configuration's, its tenant
    /// need not have a token yet (tokens change while the relay runs); oidc rules are refused, being sign-in schemes
    /// registered when a listener starts. Problems are added to <paramref name="errors"/>, each starting with
    /// <c>CloudEndpoint:</c>.
    /// </summary>
    public static void ValidateRuntimeEndpoint(CloudEndpointOptions candidate, IEnumerable<CloudEndpointOptions> others, List<string> errors)
    {
        ArgumentNullException.ThrowIfNull(candidate);
        ArgumentNullException.ThrowIfNull(others);
        ArgumentNullException.ThrowIfNull(errors);
        const string where = "CloudEndpoint";
        var claims = new ListenerClaims();
        foreach (var other in others)
        {
            // Conflicts among the others are not the candidate's.
            claims.Take(other, where, errors: null);
        }

        claims.Take(candidate, where, errors);
        ValidateCloudEndpoint(candidate, where, tenants: null, errors);
        foreach (var (_, index) in Policy.TrafficPolicy.OidcRules(candidate.Policy))
        {
            errors.Add($"{where}:Policy:OnHttpRequest[{index.ToString(CultureInfo.InvariantCulture)}]: oidc rules are set in the relay's configuration file (their sign-in schemes are registered when the relay starts), not on endpoints added while it runs.");
        }
    }

    /// <summary>
    /// Which listener an endpoint is served on: endpoints of the same key share one (http, https, tls). The address
    /// (<c>ip:port</c> as parsed), or with port 0 the protocol and the address as written (each protocol its own listener).
    /// </summary>
    internal static string ListenerKey(CloudEndpointOptions endpoint)
    {
        var protocol = endpoint.Protocol?.ToLowerInvariant() ?? "";
        return TryParseEndPoint(endpoint.Listen, out var listen) && listen.Port != 0 ? listen.ToString() : $"{protocol}|{endpoint.Listen}";
    }

    /// <summary>
    /// The longest finite timeout of a cloud endpoint: its connections' timers take at most about 24.8 days (int.MaxValue
    /// milliseconds) in some of the APIs they use, and a longer one made every connection of the endpoint fail (or hang).
    /// </summary>
    private static readonly TimeSpan MaxEndpointTimeout = TimeSpan.FromDays(24);

    /// <summary>The rules one cloud endpoint follows by itself. <paramref name="tenants"/>: those with a token, or null not to check.</summary>
    private static void ValidateCloudEndpoint(CloudEndpointOptions endpoint, string where, HashSet<string>? tenants, List<string> errors)
    {
        if (string.IsNullOrWhiteSpace(endpoint.Name))
        {
            errors.Add($"{where}:Name is required.");
        }

        endpoint.CompiledPolicy?.Dispose();
        endpoint.CompiledPolicy = Policy.TrafficPolicy.Compile(endpoint, where, errors);
        endpoint.PolicyFingerprint = Policy.TrafficPolicy.Fingerprint(endpoint.Policy);
        var protocol = endpoint.Protocol?.ToLowerInvariant() ?? "";
        if (protocol is not ("tcp" or "http" or "https" or "tls"))
        {
            errors.Add($"{where}:Protocol '{endpoint.Protocol}' is not supported (tcp, http, https or tls).");
        }

        if (endpoint.ClientCertificateAuthorities is { } authorities)
        {
            if (protocol != "https")
            {
                errors.Add($"{where}:ClientCertificateAuthorities applies to https endpoints (TLS ends at the relay).");
            }
            else if (CloudEndpoints.ClientCertificates.TryLoad(authorities, out _) is { } problem)
            {
                errors.Add($"{where}:ClientCertificateAuthorities '{authorities}' {problem}");
            }
        }

        if (!TryParseEndPoint(endpoint.Listen, out _))
        {
            errors.Add($"{where}:Listen '{endpoint.Listen}' is not an ip:port address.");
        }
        else if (protocol != "tcp")
        {
            if (endpoint.Hostnames.Count == 0)
            {
                errors.Add($"{where}:Hostnames is required for a {protocol} endpoint (the names it answers to, e.g. acme-api.relay.example or *.acme.relay.example).");
            }

            foreach (var hostname in endpoint.Hostnames)
            {
                if (!CloudEndpoints.HostRouter<object>.IsValidPattern(hostname))
                {
                    errors.Add($"{where}:Hostnames '{SafeText.Clean(hostname, SafeText.MaxIdLength)}' is not a host name (letters, digits, '-' and dots, optionally starting with '*.').");
                }
            }

            if (protocol == "https" && string.IsNullOrWhiteSpace(endpoint.CertificatePath))
            {
                errors.Add($"{where}:CertificatePath is required for an https endpoint (a .pfx, or a PEM certificate with KeyPath, for its host names).");
            }
        }

        if (protocol == "tcp" && endpoint.Hostnames.Count > 0)
        {
            errors.Add($"{where}:Hostnames applies to http, https and tls endpoints; a tcp endpoint has a port of its own.");
        }

        if (string.IsNullOrWhiteSpace(endpoint.Tenant))
        {
            errors.Add($"{where}:Tenant is required.");
        }
        else if (tenants is not null && !tenants.Contains(endpoint.Tenant))
        {
            errors.Add($"{where}:Tenant '{endpoint.Tenant}' has no token, so no agent could serve it.");
        }

        if (!EndpointAcl.IsValidName(endpoint.Endpoint))
        {
            errors.Add($"{where}:Endpoint '{endpoint.Endpoint}' is not a valid internal endpoint name.");
        }

        if (endpoint.MaxConnections < 1)
        {
            errors.Add($"{where}:MaxConnections must be at least 1 (was {endpoint.MaxConnections.ToString(CultureInfo.InvariantCulture)}).");
        }

        if (endpoint.MaxConnectionsPerClientIp < 1)
        {
            errors.Add($"{where}:MaxConnectionsPerClientIp must be at least 1 (was {endpoint.MaxConnectionsPerClientIp.ToString(CultureInfo.InvariantCulture)}).");
        }

        if (endpoint.KeepAliveTimeout <= TimeSpan.Zero || endpoint.KeepAliveTimeout > MaxEndpointTimeout)
        {
            errors.Add($"{where}:KeepAliveTimeout must be positive and at most 24 days.");
        }

        if ((endpoint.IdleTimeout <= TimeSpan.Zero && endpoint.IdleTimeout != Timeout.InfiniteTimeSpan) || endpoint.IdleTimeout > MaxEndpointTimeout)
        {
            errors.Add($"{where}:IdleTimeout must be positive and at most 24 days, or -00:00:00.001 (infinite) to turn it off.");
        }
    }

    /// <summary>
    /// What the cloud endpoints checked so far take — names, tcp addresses, one protocol per shared address, host names
    /// per listener — and the conflicts of the next one with them.
    /// </summary>
    private sealed class ListenerClaims
    {
        private readonly HashSet<string> _names = new(StringComparer.OrdinalIgnoreCase);
        private readonly HashSet<string> _listens = new(StringComparer.OrdinalIgnoreCase);
        private readonly Dictionary<string, string> _shared = new(StringComparer.OrdinalIgnoreCase);
        private readonly HashSet<(string, string)> _hostnames = [];

        /// <summary>Records what <paramref name="endpoint"/> takes; a conflict goes to <paramref name="errors"/>, when given.</summary>
        public void Take(CloudEndpointOptions endpoint, string where, List<string>? errors)
        {
            errors ??= [];
            if (!string.IsNullOrWhiteSpace(endpoint.Name) && !_names.Add(endpoint.Name))
            {
                errors.Add($"{where}:Name '{endpoint.Name}' is used by another cloud endpoint.");
            }

            if (!TryParseEndPoint(endpoint.Listen, out var listen))
            {
                return;
            }

            var protocol = endpoint.Protocol?.ToLowerInvariant() ?? "";
            if (protocol == "tcp")
            {
                if (listen.Port != 0 && !_listens.Add(listen.ToString()))
                {
                    errors.Add($"{where}:Listen '{endpoint.Listen}' is used by another cloud endpoint.");
                }

                return;
            }

            // http, https and tls endpoints share a listener per address: one protocol per address, one endpoint per host name.
            // Port 0: a listener per protocol on that address (each picks its own port).
            var key = ListenerKey(endpoint);
            if (_shared.TryGetValue(key, out var other) && other != protocol)
            {
                errors.Add($"{where}:Listen '{endpoint.Listen}' is already a {other} listener; one address serves one protocol.");
            }
            else if (listen.Port != 0 && _listens.Contains(listen.ToString()) && other is null)
            {
                errors.Add($"{where}:Listen '{endpoint.Listen}' is used by a tcp cloud endpoint.");
            }
            else
            {
                _shared[key] = protocol;
                if (listen.Port != 0)
                {
                    _listens.Add(listen.ToString());
                }
            }

            foreach (var hostname in endpoint.Hostnames)
            {
                if (CloudEndpoints.HostRouter<object>.IsValidPattern(hostname) && !_hostnames.Add((key, CloudEndpoints.HostRouter<object>.Normalize(hostname))))
                {
                    errors.Add($"{where}:Hostnames '{hostname}' is served by another cloud endpoint on {endpoint.Listen}.");
                }
            }
        }
    }

    /// <summary>The delivery settings and the configured webhooks (never quoting a secret).</summary>
    private static void ValidateEvents(RelayEventOptions events, IList<WebhookOptions> webhooks, List<string> errors)
    {
        if (events.MaxQueuedPerSubscription is < 1 or > 100_000)
        {
            errors.Add($"Relay:Events:MaxQueuedPerSubscription must be between 1 and 100000 (was {events.MaxQueuedPerSubscription.ToString(CultureInfo.InvariantCulture)}).");
        }

        if (events.MaxAttempts is < 1 or > 100)
        {
            errors.Add($"Relay:Events:MaxAttempts must be between 1 and 100 (was {events.MaxAttempts.ToString(CultureInfo.InvariantCulture)}).");
        }

        if (!(events.TenantEventsPerSecond >= 0.1 && events.TenantEventsPerSecond <= 1_000_000) || events.TenantEventBurst is < 1 or > 1_000_000)
        {
            errors.Add("Relay:Events:TenantEventsPerSecond must be from 0.1 to 1,000,000 and TenantEventBurst from 1 to 1,000,000.");
        }

        if (events.MaxSubscriptions is < 1 or > 10_000)
        {
            errors.Add($"Relay:Events:MaxSubscriptions must be between 1 and 10000 (was {events.MaxSubscriptions.ToString(CultureInfo.InvariantCulture)}).");
        }

        if (events.RetryBaseDelay <= TimeSpan.Zero || events.RetryBaseDelay > events.RetryMaxDelay || events.RetryMaxDelay > TimeSpan.FromDays(1))
        {
            errors.Add("Relay:Events: RetryBaseDelay must be positive and at most RetryMaxDelay, which must be at most a day.");
        }

        if (events.AttemptTimeout <= TimeSpan.Zero || events.AttemptTimeout > TimeSpan.FromMinutes(5))
        {
            errors.Add("Relay:Events:AttemptTimeout must be positive and at most 5 minutes.");
        }

        if (webhooks.Count > events.MaxSubscriptions)
        {
            errors.Add($"Relay:Webhooks has {webhooks.Count.ToString(CultureInfo.InvariantCulture)} entries; Relay:Events:MaxSubscriptions allows {events.MaxSubscriptions.ToString(CultureInfo.InvariantCulture)}.");
        }

        var ids = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        for (var i = 0; i < webhooks.Count; i++)
        {
            var webhook = webhooks[i];
            var where = $"Relay:Webhooks:{i.ToString(CultureInfo.InvariantCulture)}";
            foreach (var problem in Events.WebhookRules.Problems(webhook.Id, webhook.Tenant, webhook.Url, webhook.Secret, webhook.Events))
            {
                errors.Add($"{where}:{problem}");
            }

            if (!string.IsNullOrEmpty(webhook.Id) && !ids.Add(webhook.Id))
            {
                errors.Add($"{where}:Id '{SafeText.Clean(webhook.Id, SafeText.MaxIdLength)}' is used by another webhook.");
            }
        }
    }

    private static void ValidateLimits(RelayLimits limits, List<string> errors)
    {
        if (limits.ClientHelloTimeout <= TimeSpan.Zero)
        {
            errors.Add("Relay:Limits:ClientHelloTimeout must be positive.");
        }

        if (limits.MaxPendingClientHellos < 1)
        {
            errors.Add($"Relay:Limits:MaxPendingClientHellos must be at least 1 (was {limits.MaxPendingClientHellos.ToString(CultureInfo.InvariantCulture)}).");
        }

        void Positive(string name, int value)
        {
            if (value < 1)
            {
                errors.Add($"Relay:Limits:{name} must be at least 1 (was {value.ToString(CultureInfo.InvariantCulture)}).");
            }
        }

        Positive(nameof(limits.MaxSessionsPerToken), limits.MaxSessionsPerToken);
        Positive(nameof(limits.MaxBindsPerSession), limits.MaxBindsPerSession);
        Positive(nameof(limits.MaxConcurrentStreamsPerSession), limits.MaxConcurrentStreamsPerSession);
        Positive(nameof(limits.MaxPendingStreamsPerSession), limits.MaxPendingStreamsPerSession);
        Positive(nameof(limits.MaxControlQueueMessages), limits.MaxControlQueueMessages);
        Positive(nameof(limits.MaxAgentConnections), limits.MaxAgentConnections);
        Positive(nameof(limits.MaxAgentConnectionsPerIp), limits.MaxAgentConnectionsPerIp);
        Positive(nameof(limits.MaxPendingHellosPerIp), limits.MaxPendingHellosPerIp);
        Positive(nameof(limits.MaxFailedCallsPerConnection), limits.MaxFailedCallsPerConnection);
        if (limits.MaxControlQueueBytes < 64 * 1024)
        {
            errors.Add($"Relay:Limits:MaxControlQueueBytes must be at least 65536 (was {limits.MaxControlQueueBytes.ToString(CultureInfo.InvariantCulture)}).");
        }

        if (limits.AgentStreamWindow is < 65_535 or > 16 * 1024 * 1024)
        {
            errors.Add($"Relay:Limits:AgentStreamWindow must be between 65535 and 16777216 bytes (was {limits.AgentStreamWindow.ToString(CultureInfo.InvariantCulture)}).");
        }

        if (limits.AgentConnectionWindow < limits.AgentStreamWindow || limits.AgentConnectionWindow > 256 * 1024 * 1024)
        {
            errors.Add($"Relay:Limits:AgentConnectionWindow must be at least AgentStreamWindow and at most 268435456 bytes (was {limits.AgentConnectionWindow.ToString(CultureInfo.InvariantCulture)}).");
        }

        if (limits.ParkedStreamLifetime <= TimeSpan.Zero)
        {
            errors.Add("Relay:Limits:ParkedStreamLifetime must be positive.");
        }

        if (limits.AbusiveAddressCooldown < TimeSpan.Zero)
        {
            errors.Add("Relay:Limits:AbusiveAddressCooldown must not be negative.");
        }

        if (limits.PreAuthenticationTimeout <= TimeSpan.Zero)
        {
            errors.Add("Relay:Limits:PreAuthenticationTimeout must be positive.");
        }

        if ((long)limits.MaxConcurrentStreamsPerSession + limits.MaxPendingStreamsPerSession + limits.MaxParkedStreamsPerSession > 100_000)
        {
            errors.Add("Relay:Limits: MaxConcurrentStreamsPerSession + MaxPendingStreamsPerSession + MaxParkedStreamsPerSession must not exceed 100000 (the HTTP/2 streams one agent connection may open).");
        }
        if (limits.MaxParkedStreamsPerSession < 0)
        {
            errors.Add("Relay:Limits:MaxParkedStreamsPerSession must not be negative.");
        }

        if (limits.MaxFrameSize is < 1024 or > 1024 * 1024)
        {
            errors.Add($"Relay:Limits:MaxFrameSize must be between 1024 and 1048576 bytes (was {limits.MaxFrameSize.ToString(CultureInfo.InvariantCulture)}).");
        }

        if (limits.MuxWindow is < SiteLink.Internal.MuxSettings.MinWindow or > SiteLink.Internal.MuxSettings.MaxWindow)
        {
            errors.Add($"Relay:Limits:MuxWindow must be between {SiteLink.Internal.MuxSettings.MinWindow.ToString(CultureInfo.InvariantCulture)} and {SiteLink.Internal.MuxSettings.MaxWindow.ToString(CultureInfo.InvariantCulture)} bytes (was {limits.MuxWindow.ToString(CultureInfo.InvariantCulture)}).");
        }

        if (limits.PendingStreamTimeout <= TimeSpan.Zero)
        {
            errors.Add("Relay:Limits:PendingStreamTimeout must be positive.");
        }

        if (limits.SessionSilenceTimeout <= TimeSpan.Zero)
        {
            errors.Add("Relay:Limits:SessionSilenceTimeout must be positive.");
        }

        if (limits.HelloTimeout <= TimeSpan.Zero)
        {
            errors.Add("Relay:Limits:HelloTimeout must be positive.");
        }
    }
}

/// <summary>The relay's configuration is invalid. The message lists every problem.</summary>
public sealed class RelayConfigurationException : Exception
{
    /// <summary>Creates the exception from the list of problems.</summary>
    public RelayConfigurationException(IReadOnlyList<string> errors)
        : base("Invalid SiteLink relay configuration:" + Environment.NewLine + "- " + string.Join(Environment.NewLine + "- ", errors))
    {
        Errors = errors;
    }

    /// <summary>Every problem found.</summary>
    public IReadOnlyList<string> Errors { get; }
}
