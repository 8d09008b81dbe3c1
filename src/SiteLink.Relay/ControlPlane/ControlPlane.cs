using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.ControlPlane.Store;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Events;

namespace SiteLink.Relay.ControlPlane;

/// <summary>What the relay applied from its store, read by the admin API (an immutable snapshot, replaced whole).</summary>
/// <param name="Revision">The store revision it reflects.</param>
/// <param name="Resources">Each kind's resources by name.</param>
internal sealed record AppliedState(long Revision, IReadOnlyDictionary<string, IReadOnlyDictionary<string, StoredResource>> Resources)
{
    public static readonly AppliedState Empty = new(0, new Dictionary<string, IReadOnlyDictionary<string, StoredResource>>());

    public IReadOnlyDictionary<string, StoredResource> Of(string kind) =>
        Resources.TryGetValue(kind, out var resources) ? resources : EmptyKind;

    /// <summary>
    /// A kind's resources with their bodies parsed, in name order (ordinal): listed once per applied state, on first use,
    /// each body parsed once for as long as its resource is unchanged (<see cref="BodyOf"/>), so reads of the admin API
    /// and applying a state cost no JSON parsing but for what changed. A body that does not parse is left out.
    /// </summary>
    public IReadOnlyList<(StoredResource Resource, T Body)> Parsed<T>(string kind)
        where T : class =>
        Cached($"parsed:{kind}:{typeof(T).Name}", () => (IReadOnlyList<(StoredResource, T)>)[.. Of(kind).Values
            .Select(r => (Resource: r, Body: BodyOf<T>(r)))
            .Where(x => x.Body is not null)
            .Select(x => (x.Resource, x.Body!))
            .OrderBy(x => x.Resource.Name, StringComparer.Ordinal)]);

    /// <summary>
    /// A resource's body, parsed once per resource row (a state built from changes keeps the rows that did not change,
    /// so their parsed bodies carry over; a row no state holds any more is collected with its body).
    /// </summary>
    public static T? BodyOf<T>(StoredResource resource)
        where T : class =>
        Bodies.GetValue(resource, static r => new ParsedBody(r)).Get<T>();

    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<StoredResource, ParsedBody> Bodies = new();

    /// <summary>A resource's body parsed as one type (a kind has one body type; asked as another, it is parsed again).</summary>
    private sealed class ParsedBody(StoredResource resource)
    {
        private object? _body;

        public T? Get<T>()
            where T : class
        {
            if (Volatile.Read(ref _body) is T parsed)
            {
                return parsed;
            }

            var body = StoreJson.Read<T>(resource.Body);
            Volatile.Write(ref _body, body);
            return body;
        }
    }

    /// <summary>This state with <paramref name="changes"/> applied: only the kinds that changed are copied.</summary>
    public AppliedState With(StoreChanges changes)
    {
        var kinds = Resources.ToDictionary(k => k.Key, k => k.Value, StringComparer.Ordinal);
        foreach (var kind in changes.Written.Select(r => r.Kind).Concat(changes.Deleted.Select(d => d.Kind)).Distinct(StringComparer.Ordinal))
        {
            var copy = new Dictionary<string, StoredResource>(Of(kind), StringComparer.OrdinalIgnoreCase);
            foreach (var (_, name) in changes.Deleted.Where(d => d.Kind == kind))
            {
                copy.Remove(name);
            }

            foreach (var written in changes.Written.Where(r => r.Kind == kind))
            {
                copy[written.Name] = written;
            }

            kinds[kind] = copy;
        }

        return new AppliedState(changes.Revision, kinds);
    }

    /// <summary>Something derived from this state, computed once (e.g. an index of admin keys by hash).</summary>
    public T Cached<T>(string key, Func<T> create)
        where T : class => (T)_cache.GetOrAdd(key, _ => create());

    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, object> _cache = new(StringComparer.Ordinal);

    private static readonly IReadOnlyDictionary<string, StoredResource> EmptyKind = new Dictionary<string, StoredResource>();
}

/// <summary>
/// The relay's side of the control plane: opens the store at start (migrating it), applies what it holds — authtokens
/// (with <see cref="TokenSources"/>), cloud endpoints, webhook subscriptions, admin keys — and keeps applying it: at
/// once after this relay's own writes (<see cref="RefreshAsync"/>), and within <see cref="StoreOptions.PollInterval"/>
/// after another replica's (it polls the store's revision). Tokens reaching their expiry are withdrawn within a second.
/// A store that cannot be read leaves the relay running on what it applied last, and is retried.
/// </summary>
internal sealed partial class ControlPlane : IHostedService, IAsyncDisposable
{
    private readonly RelayOptions _options;
    private readonly TokenSources _tokens;
    private readonly IRelayEventSink _events;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly SemaphoreSlim _applying = new(1, 1);
    private readonly CancellationTokenSource _stopping = new();
    private Task _poll = Task.CompletedTask;
    private volatile AppliedState _state = AppliedState.Empty;
    private HashSet<string> _activeTokens = new(StringComparer.OrdinalIgnoreCase);
    private DateTimeOffset? _nextExpiry;
    private int _pollFailures;
    private bool _loaded;
    private int _disposed;

    public ControlPlane(RelayOptions options, TokenSources tokens, IRelayEventSink events, CloudEndpoints.CloudEndpointHost endpoints, TimeProvider time, ILogger<ControlPlane> logger)
    {
        _options = options;
        _tokens = tokens;
        _events = events;
        _endpoints = endpoints;
        _time = time;
        _logger = logger;
    }

    private readonly CloudEndpoints.CloudEndpointHost _endpoints;
    private volatile IReadOnlyDictionary<string, string> _endpointProblems = new Dictionary<string, string>();

    /// <summary>The stored cloud endpoints that could not start on this relay, and why.</summary>
    public IReadOnlyDictionary<string, string> EndpointProblems => _endpointProblems;

    /// <summary>Whether this relay has a store (the admin API is on, or a store is configured).</summary>
    public bool IsEnabled => _options.Admin.Listen is not null || _options.Store.IsConfigured;

    /// <summary>The store, once started (null when disabled).</summary>
    public ControlStore? Store { get; private set; }

    /// <summary>What was applied last.</summary>
    public AppliedState State => _state;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (!IsEnabled)
        {
            return;
        }

        var store = _options.Store;
        var connectionString = string.Equals(store.Provider, "sqlite", StringComparison.OrdinalIgnoreCase)
            ? store.Path is { } path ? $"Data Source={path}" : $"Data Source=sitelink-relay-{Guid.NewGuid():N};Mode=Memory;Cache=Shared"
            : store.ConnectionString!;
        try
        {
            Store = await ControlStore.OpenAsync(store.Provider, connectionString, _time, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is System.Data.Common.DbException or InvalidOperationException or IOException or ArgumentException or TimeoutException)
        {
            // One line naming the store (never its connection string: it may hold a password).
            throw new Hosting.RelayStartException($"The control plane's store ({store.Provider}{(store.Path is null ? "" : $" at {store.Path}")}) cannot be opened: {Internal.SafeText.Clean(ex.Message, 512)}", ex);
        }

        LogStoreOpened(_logger, Store.Provider, store.Path ?? (store.ConnectionString is null ? "memory" : "the configured server"));
        await RefreshAsync(cancellationToken).ConfigureAwait(false);
        _poll = PollAsync(_stopping.Token);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (Volatile.Read(ref _disposed) == 0)
        {
            await _stopping.CancelAsync().ConfigureAwait(false);
        }

        await _poll.ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        // Registered once and resolved as a hosted service too: the container may dispose it twice.
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _stopping.CancelAsync().ConfigureAwait(false);
        await _poll.ConfigureAwait(false);
        if (Store is not null)
        {
            await Store.DisposeAsync().ConfigureAwait(false);
        }

        _stopping.Dispose();
        _applying.Dispose();
    }

    /// <summary>
    /// Applies this relay's own writes: returns once the applied state includes every write this relay committed so far.
    /// Writers that come together share one load (the first to get the lock loads what all of them wrote).
    /// </summary>
    public async Task ApplyOwnWritesAsync(CancellationToken cancellationToken)
    {
        if (Store is { } store)
        {
            await RefreshAsync(cancellationToken, force: true, atLeast: store.LastWrittenRevision).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Reads the store and applies it, when its revision moved since the last time (or always, with <paramref name="force"/>,
    /// unless what is applied is already at <paramref name="atLeast"/>).
    /// </summary>
    public async Task RefreshAsync(CancellationToken cancellationToken, bool force = true, long atLeast = long.MaxValue)
    {
        if (Store is null)
        {
            return;
        }

        await _applying.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_state.Revision >= atLeast)
            {
                return;
            }

            if (!force && await Store.RevisionAsync(cancellationToken).ConfigureAwait(false) == _state.Revision)
            {
                if (_nextExpiry is { } expiry && expiry <= _time.GetUtcNow())
                {
                    await ApplyAsync(_state, cancellationToken).ConfigureAwait(false);
                }

                return;
            }

            // What changed since the applied revision (or everything, the first time and after a long absence).
            var changes = _loaded ? await Store.LoadChangesAsync(_state.Revision, cancellationToken).ConfigureAwait(false) : null;
            AppliedState next;
            if (changes is null)
            {
                var snapshot = await Store.LoadAsync(cancellationToken).ConfigureAwait(false);
                next = new AppliedState(snapshot.Revision, snapshot.Resources
                    .GroupBy(r => r.Kind, StringComparer.Ordinal)
                    .ToDictionary(g => g.Key, g => (IReadOnlyDictionary<string, StoredResource>)g.ToDictionary(r => r.Name, StringComparer.OrdinalIgnoreCase), StringComparer.Ordinal));
                _loaded = true;
            }
            else
            {
                next = _state.With(changes);
            }

            await ApplyAsync(next, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _applying.Release();
        }
    }

    private async Task ApplyAsync(AppliedState state, CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        var active = new List<AuthTokenOptions>();
        DateTimeOffset? nextExpiry = null;
        foreach (var resource in state.Of(ResourceKinds.Token).Values)
        {
            if (AppliedState.BodyOf<TokenBody>(resource) is not { } body || !body.IsActiveAt(now))
            {
                continue;
            }

            if (body.ExpiresAt is { } expires)
            {
                nextExpiry = nextExpiry is null || expires < nextExpiry ? expires : nextExpiry;
            }

            var token = new AuthTokenOptions { Name = resource.Name, Sha256 = body.Sha256, Tenant = resource.Tenant };
            foreach (var pattern in body.Allow)
            {
                token.Allow.Add(pattern);
            }

            active.Add(token);
        }

        // Tokens that were in force and are no longer (revoked, expired, deleted): their sessions end now.
        var nowActive = new HashSet<string>(active.Select(t => t.Name), StringComparer.OrdinalIgnoreCase);
        _tokens.SetStored(active);
        foreach (var name in _activeTokens.Where(n => !nowActive.Contains(n)))
        {
            var why = state.Of(ResourceKinds.Token).TryGetValue(name, out var resource) && AppliedState.BodyOf<TokenBody>(resource) is { } body
                ? body.RevokedAt is not null ? "revoked" : "expired"
                : "deleted";
            var tenant = resource?.Tenant ?? _state.Of(ResourceKinds.Token).GetValueOrDefault(name)?.Tenant ?? "";
            _events.Publish(new RelayEvent(RelayEventTypes.TokenRevoked, tenant, name, now, new Dictionary<string, object?> { ["token"] = name, ["reason"] = why }));
            LogTokenWithdrawn(_logger, name, why);
        }

        _activeTokens = nowActive;
        _nextExpiry = nextExpiry;
        _state = state;

        // Cloud endpoints: the stored ones are the relay's runtime endpoints (the configured ones stay as started).
        var endpoints = state.Of(ResourceKinds.Endpoint).Values
            .Select(r => AppliedState.BodyOf<Admin.EndpointSpec>(r)?.ToOptions())
            .OfType<CloudEndpointOptions>()
            .Where(e => !_options.CloudEndpoints.Any(c => string.Equals(c.Name, e.Name, StringComparison.OrdinalIgnoreCase)))
            .ToList();
        var problems = await _endpoints.ApplyRuntimeAsync(endpoints, cancellationToken).ConfigureAwait(false);
        _endpointProblems = problems.ToDictionary(p => p.Endpoint, p => p.Message, StringComparer.OrdinalIgnoreCase);

        // Webhook subscriptions (the configured ones stay as they are).
        if (_events is EventHub hub)
        {
            var subscriptions = state.Of(ResourceKinds.Subscription).Values
                .Select(r => AppliedState.BodyOf<SubscriptionBody>(r) is { } body && Uri.TryCreate(body.Url, UriKind.Absolute, out var url)
                    ? new WebhookSubscription(r.Name, r.Tenant, url, body.Secret, body.Events, r.Version)
                    : null)
                .OfType<WebhookSubscription>();
            try
            {
                hub.SetSubscriptions(subscriptions);
            }
            catch (ArgumentException ex)
            {
                LogSubscriptionsRefused(_logger, Internal.SafeText.Clean(ex.Message, 1024));
            }
            catch (InvalidOperationException)
            {
                // The relay is stopping.
            }
        }
    }

    private async Task PollAsync(CancellationToken cancellationToken)
    {
        // Every poll interval: has another replica written? At least once a second: has a token reached its expiry?
        var interval = _options.Store.PollInterval < TimeSpan.FromSeconds(1) ? _options.Store.PollInterval : TimeSpan.FromSeconds(1);
        using var timer = new PeriodicTimer(interval, _time);
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
            {
                try
                {
                    await RefreshAsync(cancellationToken, force: false).ConfigureAwait(false);
                    if (_pollFailures > 0)
                    {
                        LogStoreRecovered(_logger, _pollFailures);
                        _pollFailures = 0;
                    }
                }
                catch (Exception ex) when (ex is System.Data.Common.DbException or InvalidOperationException or IOException or TimeoutException)
                {
                    // The relay keeps serving what it applied last; said once, then once a minute's worth of polls.
                    if (_pollFailures++ % Math.Max(1, (int)(TimeSpan.FromMinutes(1) / interval)) == 0)
                    {
                        LogStoreUnavailable(_logger, Internal.SafeText.Clean(ex.Message, 512));
                    }
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
    }

    [LoggerMessage(EventId = 904, Level = LogLevel.Error, Message = "The stored webhook subscriptions were not applied: {Problem}")]
    private static partial void LogSubscriptionsRefused(ILogger logger, string problem);

    [LoggerMessage(EventId = 900, Level = LogLevel.Information, Message = "Control plane store: {Provider} ({Where})")]
    private static partial void LogStoreOpened(ILogger logger, string provider, string where);

    [LoggerMessage(EventId = 901, Level = LogLevel.Information, Message = "Authtoken '{Token}' is no longer in force ({Why}); its sessions were ended")]
    private static partial void LogTokenWithdrawn(ILogger logger, string token, string why);

    [LoggerMessage(EventId = 902, Level = LogLevel.Warning, Message = "The control plane's store cannot be read; the relay keeps what it applied last and tries again: {Problem}")]
    private static partial void LogStoreUnavailable(ILogger logger, string problem);

    [LoggerMessage(EventId = 903, Level = LogLevel.Information, Message = "The control plane's store answers again (after {Failures} failed polls)")]
    private static partial void LogStoreRecovered(ILogger logger, int failures);
}
