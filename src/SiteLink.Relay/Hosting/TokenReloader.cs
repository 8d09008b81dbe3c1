using System.Net;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Events;
using SiteLink.Relay.Security;
using SiteLink.Relay.Sessions;

namespace SiteLink.Relay.Hosting;

/// <summary>
/// Applies changes to <c>Relay:Tokens</c> and to cloud endpoints' <c>Policy</c> while the relay runs (the standalone
/// relay reloads its JSON files when they change): tokens added work at once; sessions of tokens removed or changed
/// (secret, tenant, allowed names) end at once; a changed policy applies to new connections and requests, never to
/// established ones. An invalid token list, or any invalid policy, is refused as a whole, every problem logged, and the
/// relay keeps what it had. Other settings need a restart.
/// </summary>
internal sealed class TokenReloader : IHostedService, IDisposable
{
    private readonly IConfiguration _configuration;
    private readonly RelayOptions _options;
    private readonly ControlPlane.TokenSources _tokens;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private readonly ITimer _settle;
    private IDisposable? _subscription;
    private string? _lastRejected;

    public TokenReloader(IConfiguration configuration, RelayOptions options, ControlPlane.TokenSources tokens, TimeProvider timeProvider, ILogger<TokenReloader> logger)
    {
        _configuration = configuration;
        _options = options;
        _tokens = tokens;
        _logger = logger;
        _settle = timeProvider.CreateTimer(static state => ((TokenReloader)state!).ReloadSafely(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    /// <summary>
    /// How long the configuration must stay unchanged before it is applied: editors save in steps (truncate, write),
    /// and a half-written file must not end sessions or be reported as broken.
    /// </summary>
    internal static readonly TimeSpan SettleTime = TimeSpan.FromMilliseconds(500);

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _subscription = ChangeToken.OnChange(_configuration.GetReloadToken, () => _settle.Change(SettleTime, Timeout.InfiniteTimeSpan));
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken)
    {
        Dispose();
        return Task.CompletedTask;
    }

    /// <summary>
    /// <see cref="Reload"/> on the timer's thread: whatever the edited file holds (a value of another setting that does
    /// not even convert), the relay keeps running and says what is wrong.
    /// </summary>
    private void ReloadSafely()
    {
        try
        {
            Reload();
        }
#pragma warning disable CA1031 // A bad edit of a file must never take down a relay that serves every tenant.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Reject($"the configuration could not be read: {(ex is RelayConfigurationException configuration ? string.Join(" ", configuration.Errors) : ex.Message)}");
        }
    }

    /// <summary>Reads the token list again and applies it if it changed and is valid.</summary>
    internal void Reload()
    {
        lock (_gate)
        {
            var loaded = RelayConfiguration.Load(_configuration);
            ReloadPolicies(loaded);
            if (_tokens.HoldsConfigured([.. loaded.Tokens]))
            {
                return;
            }

            var errors = new List<string>();
            var onLoopback = RelayOptionsValidator.TryParseEndPoint(_options.AgentListen, out var listen) && IPAddress.IsLoopback(listen.Address);
            RelayOptionsValidator.ValidateTokens(loaded.Tokens, onLoopback, errors, allowEmpty: _options.HasControlPlane);
            if (errors.Count > 0)
            {
                Reject(string.Join(" ", errors));
                return;
            }

            _lastRejected = null;

            // Sessions of tokens removed or changed end; each such token is evented as revoked.
            var ended = _tokens.SetConfigured([.. loaded.Tokens]).Count;
            RelayLog.TokensReloaded(_logger, loaded.Tokens.Count, ended);
            foreach (var (name, why) in RelayOptionsValidator.WeakTokens(loaded.Tokens))
            {
                RelayLog.WeakToken(_logger, name, why);
            }

            // Removing a tenant's last token is how it is revoked; its cloud endpoints then refuse connections (no agent).
            var tenants = new HashSet<string>(loaded.Tokens.Select(t => t.Tenant), StringComparer.OrdinalIgnoreCase);
            foreach (var endpoint in _options.CloudEndpoints.Where(e => !tenants.Contains(e.Tenant)))
            {
                RelayLog.CloudEndpointWithoutToken(_logger, endpoint.Name, endpoint.Tenant);
            }
        }
    }

    /// <summary>
    /// Compiles every cloud endpoint's policy whose text changed; applies them all when all compile, none otherwise. A
    /// replaced policy is disposed (its rate limiters' timers) a while later, once requests that read it are done.
    /// </summary>
    private void ReloadPolicies(RelayOptions loaded)
    {
        var errors = new List<string>();
        var changes = new List<(CloudEndpointOptions Running, Policy.TrafficPolicy? Policy, string Fingerprint)>();
        for (var i = 0; i < loaded.CloudEndpoints.Count; i++)
        {
            var fresh = loaded.CloudEndpoints[i];
            // A cloud endpoint added to the file, or renamed, starts with the next restart.
            var running = _options.CloudEndpoints.FirstOrDefault(e => string.Equals(e.Name, fresh.Name, StringComparison.OrdinalIgnoreCase));
            var fingerprint = Policy.TrafficPolicy.Fingerprint(fresh.Policy);
            if (running is null || fingerprint == running.PolicyFingerprint)
            {
                continue;
            }

            // An oidc rule is a pair of authentication schemes the http endpoints registered at start.
            if (OidcRules(fresh.Policy) != OidcRules(running.Policy))
            {
                errors.Add($"Relay:CloudEndpoints:{i.ToString(System.Globalization.CultureInfo.InvariantCulture)}:Policy: oidc rules (and their places in OnHttpRequest) change with a restart.");
                continue;
            }

            changes.Add((running, Policy.TrafficPolicy.Compile(fresh.Policy, running, $"Relay:CloudEndpoints:{i.ToString(System.Globalization.CultureInfo.InvariantCulture)}", errors), fingerprint));
        }

        if (errors.Count > 0)
        {
            foreach (var change in changes)
            {
                change.Policy?.Dispose();
            }

            var problems = string.Join(" ", errors);
            if (problems != _lastPoliciesRejected)
            {
                _lastPoliciesRejected = problems;
                RelayLog.PoliciesReloadRejected(_logger, problems);
            }

            return;
        }

        _lastPoliciesRejected = null;
        foreach (var (running, policy, fingerprint) in changes)
        {
            var replaced = running.CompiledPolicy;
            running.CompiledPolicy = policy;
            running.PolicyFingerprint = fingerprint;
            RelayLog.PolicyReloaded(_logger, running.Name);
            Policy.TrafficPolicy.DisposeLater(replaced);
        }
    }

    private string? _lastPoliciesRejected;

    private static string OidcRules(TrafficPolicyOptions policy) => System.Text.Json.JsonSerializer.Serialize(
        Policy.TrafficPolicy.OidcRules(policy).Select(x => new { x.Index, x.Rule.Authority, x.Rule.ClientId, x.Rule.ClientSecret, x.Rule.Scopes, x.Rule.SessionLifetime }));

    /// <summary>Reports a rejected edit, once per distinct problem (a saved file often raises several change events).</summary>
    private void Reject(string problems)
    {
        lock (_gate)
        {
            if (problems != _lastRejected)
            {
                _lastRejected = problems;
                RelayLog.TokensReloadRejected(_logger, problems);
            }
        }
    }

    public void Dispose()
    {
        _subscription?.Dispose();
        _subscription = null;
        _settle.Dispose();
    }
}
