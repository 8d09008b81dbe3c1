using System.Net;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SiteLink.Relay.CloudEndpoints;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Events;
using SiteLink.Relay.Security;

namespace SiteLink.Relay.Hosting;

/// <summary>
/// A relay running in this process: for tests, the quickstart, and applications that embed one.
/// Start it with <see cref="StartAsync(RelayOptions, Action{ILoggingBuilder}?, CancellationToken)"/>; dispose it to stop.
/// </summary>
public sealed class RelayServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly X509Certificate2? _certificate;

    private RelayServer(WebApplication app, X509Certificate2? certificate)
    {
        _app = app;
        _certificate = certificate;
        AgentUrl = RelayApplication.AgentUrl(app, certificate is not null);
        CertificateSha256 = certificate is null ? null : RelayCertificate.Sha256Of(certificate);
    }

    /// <summary>Where agents connect (<c>https://127.0.0.1:port</c>, or <c>http://</c> when TLS is disabled).</summary>
    public Uri AgentUrl { get; }

    /// <summary>The admin API's base URL (<c>https://127.0.0.1:port/</c>); null when <c>Relay:Admin:Listen</c> is not set.</summary>
    public Uri? AdminUrl => _app.Services.GetRequiredService<Admin.AdminApi>().Url;

    /// <summary>The SHA-256 of the agent port's certificate, for agents to pin; null when TLS is disabled.</summary>
    public string? CertificateSha256 { get; }

    /// <summary>What the relay has done so far.</summary>
    public RelayCounters Counters => _app.Services.GetRequiredService<RelayCounters>();

    /// <summary>The relay's services.</summary>
    public IServiceProvider Services => _app.Services;

    /// <summary>The number of agent sessions connected now.</summary>
    public int SessionCount => _app.Services.GetRequiredService<Sessions.SessionRegistry>().SessionCount;

    /// <summary>Data streams agents have parked at this relay, waiting for connections.</summary>
    public int ParkedStreams => _app.Services.GetRequiredService<Sessions.SessionRegistry>().Sessions.Sum(s => s.ParkedCount);

    /// <summary>Control streams that authenticated and wait for their Hello.</summary>
    public int PendingHandshakes => _app.Services.GetRequiredService<Sessions.SessionRegistry>().PendingHandshakes;

    /// <summary>Connections open on the agent port (authenticated or not).</summary>
    public int AgentConnections => _app.Services.GetRequiredService<Agents.AgentConnections>().Count;

    /// <summary>The address a cloud endpoint is bound to.</summary>
    /// <exception cref="KeyNotFoundException">No cloud endpoint has that name.</exception>
    public IPEndPoint GetCloudEndpoint(string name) => _app.Services.GetRequiredService<CloudEndpointHost>().BoundEndpoints[name];

    /// <summary>
    /// Each cloud endpoint's public connections open now: tcp and tls endpoints' connections, http and https endpoints'
    /// requests in flight.
    /// </summary>
    public IReadOnlyDictionary<string, int> CloudEndpointConnections => _app.Services.GetRequiredService<CloudEndpointHost>().ActiveConnections;

    /// <summary>
    /// Makes <paramref name="endpoints"/> the complete set of cloud endpoints managed while the relay runs, beside the
    /// configured ones: new ones start, changed ones are updated or replaced, missing ones stop, established
    /// connections go on until they close. Returns those that could not be applied, and why (the others are applied).
    /// </summary>
    /// <exception cref="InvalidOperationException">The relay is stopping.</exception>
    public Task<IReadOnlyList<RuntimeEndpointProblem>> ApplyRuntimeCloudEndpointsAsync(IReadOnlyList<CloudEndpointOptions> endpoints, CancellationToken cancellationToken = default) =>
        _app.Services.GetRequiredService<CloudEndpointHost>().ApplyRuntimeAsync(endpoints, cancellationToken);

    /// <summary>
    /// Who serves a tenant's internal endpoint right now and what the agent declared about it (its description and
    /// metadata); null when no session binds it.
    /// </summary>
    public BoundEndpointInfo? FindEndpoint(string tenant, string endpoint) =>
        _app.Services.GetRequiredService<Sessions.SessionRegistry>().Describe(tenant, endpoint) is var (session, bound)
            ? new BoundEndpointInfo(bound.Name, session.Token.Tenant, session.Id, session.ClientId, bound.Description.Length == 0 ? null : bound.Description, bound.Metadata)
            : null;

    /// <summary>The ids of the sessions serving a tenant's internal endpoint now: several for a pool, none when unbound.</summary>
    public IReadOnlyList<string> FindEndpointMembers(string tenant, string endpoint) =>
        [.. _app.Services.GetRequiredService<Sessions.SessionRegistry>().Members(tenant, endpoint).Select(s => s.Id)];

    /// <summary>Revokes a token by name: its new calls are refused, its sessions end, and <c>token.revoked</c> is published.</summary>
    public void RevokeToken(string name)
    {
        var tokens = _app.Services.GetRequiredService<AuthTokenStore>();
        tokens.Revoke(name);
        if (tokens.Find(name) is { } token)
        {
            _app.Services.GetRequiredService<Events.IRelayEventSink>().PublishTokenRevoked(
                token.Tenant, token.Name, "revoked by the operator", _app.Services.GetRequiredService<TimeProvider>().GetUtcNow());
        }

        foreach (var session in _app.Services.GetRequiredService<Sessions.SessionRegistry>().Sessions)
        {
            if (string.Equals(session.Token.Name, name, StringComparison.OrdinalIgnoreCase))
            {
                session.End(Sessions.SessionEnd.Revoked);
            }
        }
    }

    /// <summary>
    /// Starts a relay with <paramref name="options"/>, ignoring configuration files and environment variables.
    /// </summary>
    /// <param name="options">The relay's settings; <c>AgentListen</c> and cloud endpoints may use port 0.</param>
    /// <param name="configureLogging">Sets up logging; by default the relay logs nothing.</param>
    /// <param name="cancellationToken">Cancels the start.</param>
    /// <exception cref="RelayConfigurationException">The options are invalid; the message lists every problem.</exception>
    public static Task<RelayServer> StartAsync(RelayOptions options, Action<ILoggingBuilder>? configureLogging = null, CancellationToken cancellationToken = default) =>
        StartAsync(options, configureLogging, TimeProvider.System, cancellationToken);

    /// <summary>
    /// Starts a relay whose own timers (pairing expiry, silence, Hello and pre-authentication deadlines, parked-stream
    /// lifetime, idle timeouts) run on <paramref name="timeProvider"/>, e.g. a fake clock in tests.
    /// </summary>
    /// <inheritdoc cref="StartAsync(RelayOptions, Action{ILoggingBuilder}?, CancellationToken)"/>
    public static async Task<RelayServer> StartAsync(RelayOptions options, Action<ILoggingBuilder>? configureLogging, TimeProvider timeProvider, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(timeProvider);
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions
        {
            ApplicationName = typeof(RelayServer).Assembly.GetName().Name,
            ContentRootPath = AppContext.BaseDirectory,
        });
        builder.Configuration.Sources.Clear();
        builder.Configuration.AddInMemoryCollection();
        builder.Logging.ClearProviders();
        configureLogging?.Invoke(builder.Logging);
        builder.Services.AddSingleton(timeProvider);
        var certificate = RelayApplication.AddRelay(builder, options);
        var app = builder.Build();
        RelayApplication.MapRelay(app);
        await StartOrDisposeAsync(app, cancellationToken).ConfigureAwait(false);

        return new RelayServer(app, certificate);
    }

    /// <summary>Starts <paramref name="app"/>; one that fails to start is disposed before the exception goes on.</summary>
    internal static async Task StartOrDisposeAsync(WebApplication app, CancellationToken cancellationToken)
    {
        try
        {
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await app.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Stops the relay: agent sessions and public connections are closed.</summary>
    public async ValueTask DisposeAsync()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        try
        {
            await _app.StopAsync(timeout.Token).ConfigureAwait(false);
        }
        finally
        {
            await _app.DisposeAsync().ConfigureAwait(false);
            _certificate?.Dispose();
        }
    }
}

/// <summary>An internal endpoint bound on the relay, as <see cref="RelayServer.FindEndpoint"/> reports it.</summary>
/// <param name="Name">The endpoint's name (lower case).</param>
/// <param name="Tenant">The tenant whose agent bound it.</param>
/// <param name="SessionId">The agent session serving it.</param>
/// <param name="ClientId">The agent's client id, as it introduced itself.</param>
/// <param name="Description">What the agent said the endpoint is; null when nothing (as the SDK reports it).</param>
/// <param name="Metadata">The metadata the agent declared with the bind.</param>
public sealed record BoundEndpointInfo(string Name, string Tenant, string SessionId, string ClientId, string? Description, IReadOnlyDictionary<string, string> Metadata);
