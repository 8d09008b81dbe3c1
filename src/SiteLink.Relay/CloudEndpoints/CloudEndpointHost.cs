using System.Net;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Security;
using SiteLink.Relay.Sessions;

namespace SiteLink.Relay.CloudEndpoints;

/// <summary>
/// Runs the cloud endpoints: the configured ones, started and stopped with the host, and the runtime ones, which
/// <see cref="ApplyRuntimeAsync"/> starts, changes and stops while the relay runs. Every endpoint is a route on a
/// listener (<see cref="ICloudListener"/>): a tcp endpoint's own port, or a tls, http or https listener shared by the
/// endpoints of its address, each with a <see cref="RouteTable{T}"/> that changes without disturbing its readers.
/// </summary>
internal sealed class CloudEndpointHost : IHostedService, IAsyncDisposable
{
    /// <summary>How long http(s) requests in flight may take to finish when the relay stops (Kestrel's default stop time).</summary>
    private static readonly TimeSpan StopGrace = TimeSpan.FromSeconds(30);

    /// <summary>What, of an endpoint's settings, needs a new route even on the same listener.</summary>
    private static readonly string[] RouteChanges = [nameof(CloudEndpointOptions.Hostnames), nameof(CloudEndpointOptions.CertificatePath),
        nameof(CloudEndpointOptions.KeyPath), nameof(CloudEndpointOptions.ClientCertificateAuthorities), CertificateFiles];

    private const string CertificateFiles = "certificate files";

    private readonly RelayOptions _options;
    private readonly ConnectionRouter _router;
    private readonly RelayCounters _counters;
    private readonly CloudCertificates _certificates;
    private readonly HttpCloudEndpoints _http;
    private readonly ILogger _logger;

    /// <summary>One start, stop or apply at a time; everything below is changed under it.</summary>
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly List<ICloudListener> _listeners = [];
    private readonly Dictionary<string, Applied> _runtime = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>Listeners stopped at runtime, finishing their requests in flight.</summary>
    private readonly List<Task> _retiring = [];

    /// <summary>Cancelled when the relay stops (after <see cref="StopGrace"/>): what is still finishing is closed.</summary>
    private readonly CancellationTokenSource _abort = new();

    /// <summary>The listeners as readers (introspection) see them, replaced whole.</summary>
    private ICloudListener[] _published = [];
    private State _state;

    public CloudEndpointHost(RelayOptions options, ConnectionRouter router, CloudCertificates certificates, RelayCounters counters, ILoggerFactory loggerFactory)
    {
        _options = options;
        _router = router;
        _counters = counters;
        _certificates = certificates;
        _logger = loggerFactory.CreateLogger<CloudEndpointHost>();
        _http = new HttpCloudEndpoints(router, counters, loggerFactory);
    }

    private enum State
    {
        Created,
        Running,
        Stopped,
    }

    /// <summary>Each cloud endpoint's name (configured and runtime) and the address it is bound to (http, https and tls endpoints share their listener's).</summary>
    public IReadOnlyDictionary<string, IPEndPoint> BoundEndpoints
    {
        get
        {
            var bound = new Dictionary<string, IPEndPoint>(StringComparer.OrdinalIgnoreCase);
            foreach (var (listener, route) in PublishedRoutes())
            {
                bound[route.Endpoint.Name] = listener.LocalEndPoint;
            }

            return bound;
        }
    }

    /// <summary>
    /// Each cloud endpoint's public connections open now: for tcp and tls endpoints the connections admitted (from accept
    /// to close), for http and https endpoints the requests in flight (a WebSocket or other upgraded request counts until
    /// it closes). Counters read as they are, no lock. Connections of an endpoint that was removed or replaced, still
    /// finishing, are not counted.
    /// </summary>
    public IReadOnlyDictionary<string, int> ActiveConnections
    {
        get
        {
            var active = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
            foreach (var (_, route) in PublishedRoutes())
            {
                // An endpoint moving to another address is on both for a moment: its connections are on either.
                active[route.Endpoint.Name] = active.GetValueOrDefault(route.Endpoint.Name) + route.ActiveConnections;
            }

            return active;
        }
    }

    private IEnumerable<(ICloudListener Listener, IEndpointRoute Route)> PublishedRoutes() =>
        Volatile.Read(ref _published).SelectMany(l => l.Routes.Routes.Select(r => (l, r)));

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var configured = _options.CloudEndpoints;
            try
            {
                foreach (var options in configured.Where(e => !e.IsHttp && !e.IsTls))
                {
                    _listeners.Add(NewSocketListener([options]));
                }

                // tls endpoints with the same address share one listener, routed by server name; http and https ones too.
                foreach (var group in configured.Where(e => e.IsTls).GroupBy(RelayOptionsValidator.ListenerKey, StringComparer.OrdinalIgnoreCase))
                {
                    _listeners.Add(NewSocketListener([.. group]));
                }

                foreach (var group in configured.Where(e => e.IsHttp).GroupBy(RelayOptionsValidator.ListenerKey, StringComparer.OrdinalIgnoreCase))
                {
                    var routes = group.Select(e => _http.CreateRoute(e, e.IsHttps ? _certificates[e.Name] : null)).ToArray();
                    var first = group.First();
                    _listeners.Add(await _http.StartListenerAsync(group.Key, RelayOptionsValidator.ParseEndPoint(first.Listen), first.IsHttps, routes, cancellationToken).ConfigureAwait(false));
                }
            }
            catch
            {
                await _abort.CancelAsync().ConfigureAwait(false);
                await Task.WhenAll(_listeners.Select(l => l.StopAsync(_abort.Token))).ConfigureAwait(false);
                _listeners.Clear();
                throw;
            }

            foreach (var listener in _listeners)
            {
                (listener as TcpCloudEndpoint)?.Start();
                foreach (var route in listener.Routes.Routes)
                {
                    RelayLog.CloudEndpointListening(_logger, route.Endpoint.Name, Where(listener, route.Endpoint), route.Endpoint.Tenant, route.Endpoint.Endpoint);
                }
            }

            Publish();
            _state = State.Running;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// Stops accepting on every listener; established tcp and tls connections go on (the relay's drain ends them), http
    /// and https requests in flight get <see cref="StopGrace"/> to finish. Safe to call more than once.
    /// </summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            if (_state == State.Stopped)
            {
                return;
            }

            _state = State.Stopped;
            _abort.CancelAfter(StopGrace);
            await Task.WhenAll(_listeners.Select(l => l.StopAsync(_abort.Token)).Concat(_retiring)).ConfigureAwait(false);
        }
        finally
        {
            _gate.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(CancellationToken.None).ConfigureAwait(false);
        _abort.Dispose();
    }

    /// <summary>
    /// Makes the runtime cloud endpoints <paramref name="endpoints"/>: their complete set, beside the configured ones
    /// (which stay as they are; a runtime endpoint may not take a configured one's name). Compared by name with what
    /// runs: one no longer listed is stopped (a tcp endpoint's listener closed; another's host names removed from its
    /// shared listener, which stops when nothing is left on it); one new is started (its own tcp listener, a new listener
    /// for an address not yet listening, or routes on the shared listener of its address); one changed is updated in
    /// place when only its policy, target or per-connection settings changed (new connections and requests follow them),
    /// and otherwise replaced — by a new route on the same listener in one swap, or on its new address before the old
    /// one is stopped. Each endpoint is checked with <see cref="RelayOptionsValidator.ValidateRuntimeEndpoint"/> against
    /// the configured and the other runtime endpoints, and one that is invalid or cannot start (its address in use, its
    /// certificate unreadable, a host name taken on its listener) is not applied and is returned as a problem, the others
    /// applied all the same: a new one is not started, a changed one keeps running as it was. Removals are applied first,
    /// then the list in order (a host name moving from one endpoint to another in one call must be given up first in the
    /// list). Applying the list that runs changes nothing: no listener or route is touched. https certificates are read
    /// (with <see cref="CloudEndpointOptions.CertificatePassword"/>, never kept) when an endpoint is added or its
    /// certificate settings or files changed. Established connections of an endpoint removed or replaced are not
    /// aborted: they go on, as they started, until they close (http, https: requests in flight finish, on a stopped
    /// listener too, and a keep-alive connection's next request is routed afresh); those of other endpoints, on the same
    /// listener or elsewhere, are not touched. One call at a time; <paramref name="cancellationToken"/> cancels only the
    /// wait for an earlier call.
    /// </summary>
    /// <exception cref="InvalidOperationException">The cloud endpoints are not running (before the host started them, or after it stopped them).</exception>
    public async Task<IReadOnlyList<RuntimeEndpointProblem>> ApplyRuntimeAsync(IReadOnlyList<CloudEndpointOptions> endpoints, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_state != State.Running)
            {
                throw new InvalidOperationException(_state == State.Created ? "The cloud endpoints have not started yet." : "The cloud endpoints are stopped.");
            }

            _retiring.RemoveAll(t => t.IsCompleted);
            var problems = new List<RuntimeEndpointProblem>();
            var desired = new List<CloudEndpointOptions>();
            var names = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
            foreach (var endpoint in endpoints)
            {
                ArgumentNullException.ThrowIfNull(endpoint, nameof(endpoints));
                var name = endpoint.Name ?? "";
                if (string.IsNullOrWhiteSpace(name))
                {
                    Refuse(problems, name, "CloudEndpoint:Name is required.");
                }
                else if (_options.CloudEndpoints.Any(c => string.Equals(c.Name, name, StringComparison.OrdinalIgnoreCase)))
                {
                    Refuse(problems, name, "the relay's configuration has a cloud endpoint of this name; an endpoint added at runtime needs a name of its own.");
                }
                else if (!names.Add(name))
                {
                    Refuse(problems, name, "the list has more than one endpoint of this name; the first is applied.");
                }
                else
                {
                    desired.Add(endpoint);
                }
            }

            // Removals first: what they held (addresses, host names) is free for the endpoints after them.
            foreach (var name in _runtime.Keys.Where(n => !names.Contains(n)).ToArray())
            {
                await RemoveAsync(name).ConfigureAwait(false);
            }

            foreach (var endpoint in desired)
            {
                if (await ApplyAsync(endpoint).ConfigureAwait(false) is { } problem)
                {
                    Refuse(problems, endpoint.Name ?? "", problem);
                }
            }

            return problems;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>What of <paramref name="candidate"/> differs from <paramref name="running"/> (setting names); empty when nothing does.</summary>
    internal static List<string> Changes(CloudEndpointOptions running, string runningFiles, CloudEndpointOptions candidate, string candidateFiles)
    {
        var changes = new List<string>();
        void Compare(string setting, bool same)
        {
            if (!same)
            {
                changes.Add(setting);
            }
        }

        Compare(nameof(running.Protocol), string.Equals(running.Protocol, candidate.Protocol, StringComparison.OrdinalIgnoreCase));
        Compare(nameof(running.Listen), string.Equals(running.Listen, candidate.Listen, StringComparison.OrdinalIgnoreCase)
            || (RelayOptionsValidator.TryParseEndPoint(running.Listen, out var before) && RelayOptionsValidator.TryParseEndPoint(candidate.Listen, out var after) && before.Equals(after)));
        Compare(nameof(running.Hostnames), HostnamesOf(running).SetEquals(HostnamesOf(candidate)));
        Compare(nameof(running.CertificatePath), running.CertificatePath == candidate.CertificatePath);
        Compare(nameof(running.KeyPath), running.KeyPath == candidate.KeyPath);
        Compare(nameof(running.ClientCertificateAuthorities), running.ClientCertificateAuthorities == candidate.ClientCertificateAuthorities);
        Compare(CertificateFiles, runningFiles == candidateFiles);
        Compare(nameof(running.TrustForwardedHeaders), running.TrustForwardedHeaders == candidate.TrustForwardedHeaders);
        Compare(nameof(running.Tenant), running.Tenant == candidate.Tenant);
        Compare(nameof(running.Endpoint), running.Endpoint == candidate.Endpoint);
        Compare(nameof(running.MaxConnections), running.MaxConnections == candidate.MaxConnections);
        Compare(nameof(running.MaxConnectionsPerClientIp), running.MaxConnectionsPerClientIp == candidate.MaxConnectionsPerClientIp);
        Compare(nameof(running.IdleTimeout), running.IdleTimeout == candidate.IdleTimeout);
        Compare(nameof(running.KeepAliveTimeout), running.KeepAliveTimeout == candidate.KeepAliveTimeout);
        Compare(nameof(running.Policy), running.PolicyFingerprint == Policy.TrafficPolicy.Fingerprint(candidate.Policy));
        return changes;
    }

    /// <summary>
    /// The size and time of the files an https endpoint's TLS is read from, so a certificate replaced under the same
    /// path is read again; empty for other protocols.
    /// </summary>
    internal static string FilesOf(CloudEndpointOptions endpoint) =>
        endpoint.IsHttps ? string.Join("|", new[] { endpoint.CertificatePath, endpoint.KeyPath, endpoint.ClientCertificateAuthorities }.Select(Stamp)) : "";

    private static string Stamp(string? path)
    {
        if (path is null)
        {
            return "";
        }

        try
        {
            var file = new FileInfo(path);
            return file.Exists ? $"{file.Length}@{file.LastWriteTimeUtc.Ticks}" : "missing";
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            return "unreadable";
        }
    }

    private static HashSet<string> HostnamesOf(CloudEndpointOptions endpoint) => [.. endpoint.Hostnames.Select(HostRouter<object>.Normalize)];

    /// <summary>Adds or changes one runtime endpoint; null when it runs as asked, else why not.</summary>
    private async Task<string?> ApplyAsync(CloudEndpointOptions requested)
    {
        var candidate = requested.RuntimeCopy();
        var files = FilesOf(candidate);
        _runtime.TryGetValue(candidate.Name, out var running);
        var changes = running is null ? null : Changes(running.Options, running.Files, candidate, files);
        if (changes is { Count: 0 })
        {
            return null;
        }

        var keeps = running is null ? "" : " It keeps running as it was.";
        var errors = new List<string>();
        RelayOptionsValidator.ValidateRuntimeEndpoint(candidate, _options.CloudEndpoints.Concat(_runtime.Values.Where(r => r != running).Select(r => r.Options)), errors);
        if (errors.Count > 0)
        {
            candidate.CompiledPolicy?.Dispose();
            return string.Join(" ", errors) + keeps;
        }

        if (running is not null && !changes!.Contains(nameof(candidate.Policy)))
        {
            // The same policy: the running one goes on, and with it its state (rate limits' buckets).
            candidate.CompiledPolicy?.Dispose();
            candidate.CompiledPolicy = running.Options.CompiledPolicy;
        }

        var problem = running is null
            ? await AddAsync(candidate, requested.CertificatePassword).ConfigureAwait(false)
            : await ChangeAsync(running, candidate, changes!, requested.CertificatePassword).ConfigureAwait(false);
        if (problem is not null)
        {
            if (candidate.CompiledPolicy != running?.Options.CompiledPolicy)
            {
                candidate.CompiledPolicy?.Dispose();
            }

            return problem;
        }

        if (running is not null && running.Options.CompiledPolicy != candidate.CompiledPolicy)
        {
            Policy.TrafficPolicy.DisposeLater(running.Options.CompiledPolicy);
        }

        _runtime[candidate.Name] = new Applied(candidate, files);
        return null;
    }

    private async Task<string?> AddAsync(CloudEndpointOptions endpoint, string? password)
    {
        var (route, problem) = CreateRoute(endpoint, password);
        if (route is null)
        {
            return problem;
        }

        if (await AttachAsync(endpoint, route).ConfigureAwait(false) is { } refused)
        {
            route.Retire();
            return refused;
        }

        RelayLog.CloudEndpointStarted(_logger, endpoint.Name, Where(ListenerOf(endpoint.Name)!, endpoint), endpoint.Tenant, endpoint.Endpoint);
        return null;
    }

    /// <summary>Applies a changed endpoint: in place, by a new route on its listener, or on its new address.</summary>
    private async Task<string?> ChangeAsync(Applied running, CloudEndpointOptions candidate, List<string> changes, string? password)
    {
        var name = candidate.Name;
        var listener = ListenerOf(name)!;
        var route = listener.Routes.Find(name)!;
        var described = string.Join(", ", changes);
        // Where it is to be served: where it is, unless its address or protocol changed (a tcp port 0 is its own).
        var target = changes.Contains(nameof(candidate.Listen)) || changes.Contains(nameof(candidate.Protocol)) ? ListenerAt(candidate) : listener;
        var here = target == listener && string.Equals(listener.Protocol, candidate.Protocol, StringComparison.OrdinalIgnoreCase);
        // A tcp endpoint has no host names or TLS of its own (settings for those are ignored there): always in place.
        var inPlace = here && (listener.Protocol == "tcp" || !changes.Intersect(RouteChanges).Any());
        if (inPlace && route.TryUpdate(candidate))
        {
            RelayLog.CloudEndpointUpdated(_logger, name, described);
            return null;
        }

        // A new route. Refused in place, only an http route (another target or pool: a new client) — its TLS settings
        // need no reading again.
        var (fresh, problem) = inPlace ? (_http.WithNewClient(route, candidate), null) : CreateRoute(candidate, password);
        if (fresh is null)
        {
            return problem + " It keeps running as it was.";
        }

        var connections = route.ActiveConnections;
        if (here)
        {
            // One swap on the same listener: the old route's host names go, the new one's come.
            if (listener.Routes.Conflict(candidate) is var (hostname, other))
            {
                fresh.Retire();
                return $"Hostnames '{hostname}' is served by cloud endpoint '{other}' on {candidate.Listen}. It keeps running as it was.";
            }

            listener.Routes.Set(fresh);
            route.Retire();
        }
        else if (target == listener)
        {
            // Another protocol on the address its listener holds: that listener must go before the new one can listen.
            if (listener.Routes.Routes.Count > 1)
            {
                fresh.Retire();
                return $"{candidate.Listen} is a {listener.Protocol} listener of other endpoints too; one address serves one protocol. It keeps running as it was.";
            }

            await DetachAsync(listener, name, retire: false).ConfigureAwait(false);
            if (await AttachAsync(candidate, fresh, retryWhileInUse: true).ConfigureAwait(false) is { } refused)
            {
                fresh.Retire();
                if (await AttachAsync(running.Options, route, retryWhileInUse: true).ConfigureAwait(false) is { } lost)
                {
                    route.Retire();
                    _runtime.Remove(name);
                    Policy.TrafficPolicy.DisposeLater(running.Options.CompiledPolicy);
                    RelayLog.CloudEndpointStopped(_logger, name, connections);
                    return $"{refused} Its previous settings could not be restored either ({lost}): it is stopped.";
                }

                return refused + " It keeps running as it was.";
            }

            route.Retire();
        }
        else
        {
            // Elsewhere: the new address first, so the endpoint is never without one; then the old one goes.
            if (await AttachAsync(candidate, fresh).ConfigureAwait(false) is { } refused)
            {
                fresh.Retire();
                return refused + " It keeps running as it was.";
            }

            await DetachAsync(listener, name, retire: true).ConfigureAwait(false);
        }

        RelayLog.CloudEndpointReplaced(_logger, name, described, Where(ListenerOf(name)!, candidate), candidate.Tenant, candidate.Endpoint, connections);
        return null;
    }

    private async Task RemoveAsync(string name)
    {
        var applied = _runtime[name];
        _runtime.Remove(name);
        var listener = ListenerOf(name);
        var connections = listener?.Routes.Find(name)?.ActiveConnections ?? 0;
        if (listener is not null)
        {
            await DetachAsync(listener, name, retire: true).ConfigureAwait(false);
        }

        Policy.TrafficPolicy.DisposeLater(applied.Options.CompiledPolicy);
        RelayLog.CloudEndpointStopped(_logger, name, connections);
    }

    /// <summary>
    /// Routes <paramref name="endpoint"/> on the listener of its address (one of its protocol, sharing it by host name),
    /// or starts a listener for it; null when done, else why not.
    /// </summary>
    private async Task<string?> AttachAsync(CloudEndpointOptions endpoint, IEndpointRoute route, bool retryWhileInUse = false)
    {
        if (ListenerAt(endpoint) is { } shared)
        {
            if (shared.Protocol == "tcp" || !string.Equals(shared.Protocol, endpoint.Protocol, StringComparison.OrdinalIgnoreCase))
            {
                var holder = shared.Protocol == "tcp" ? $"the port of tcp cloud endpoint '{shared.Routes.Routes[0].Endpoint.Name}'" : $"a {shared.Protocol} listener";
                return $"{endpoint.Listen} is already {holder}; one address serves one protocol.";
            }

            if (shared.Routes.Conflict(endpoint) is var (hostname, other))
            {
                return $"Hostnames '{hostname}' is served by cloud endpoint '{other}' on {endpoint.Listen}.";
            }

            shared.Routes.Set(route);
            return null;
        }

        // A listener stopped just before (another protocol on this address) closes its socket as its stop begins; a
        // moment may pass before the address is free.
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                ICloudListener listener;
                if (endpoint.IsHttp)
                {
                    listener = await _http.StartListenerAsync(RelayOptionsValidator.ListenerKey(endpoint), RelayOptionsValidator.ParseEndPoint(endpoint.Listen), endpoint.IsHttps, [route], CancellationToken.None).ConfigureAwait(false);
                }
                else
                {
                    var socket = new TcpCloudEndpoint([route], _router, _counters, _options.Limits, _logger);
                    socket.Start();
                    listener = socket;
                }

                _listeners.Add(listener);
                Publish();
                return null;
            }
#pragma warning disable CA1031 // Whatever keeps one endpoint from listening is that endpoint's problem, never the others'.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                if (retryWhileInUse && attempt < 40)
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(50)).ConfigureAwait(false);
                    continue;
                }

                return ex is Hosting.RelayStartException ? ex.Message : $"Cloud endpoint '{endpoint.Name}' cannot listen on {endpoint.Listen}: {ex.Message}";
            }
        }
    }

    /// <summary>
    /// Stops routing to <paramref name="name"/> on <paramref name="listener"/>, and stops the listener when nothing is
    /// left on it (an http(s) one in the background, its requests in flight finishing); retires the route if asked.
    /// </summary>
    private async Task DetachAsync(ICloudListener listener, string name, bool retire)
    {
        var route = listener.Routes.Remove(name);
        if (listener.Routes.Routes.Count == 0)
        {
            _listeners.Remove(listener);
            Publish();
            var stopping = listener.StopAsync(_abort.Token);
            if (listener is TcpCloudEndpoint)
            {
                // Closing the listening socket is all there is: its connections are the router's and bridges' already.
                await stopping.ConfigureAwait(false);
            }
            else
            {
                _retiring.Add(stopping);
            }

            RelayLog.CloudListenerStopped(_logger, listener.Protocol, listener.LocalEndPoint.ToString());
        }

        if (retire)
        {
            route?.Retire();
        }
    }

    /// <summary>A route for <paramref name="endpoint"/> (for https its certificate read now, with <paramref name="password"/>); or why not.</summary>
    private (IEndpointRoute? Route, string? Problem) CreateRoute(CloudEndpointOptions endpoint, string? password)
    {
        if (!endpoint.IsHttp)
        {
            return (TcpCloudEndpoint.CreateRoute(endpoint), null);
        }

        System.Security.Cryptography.X509Certificates.X509Certificate2? certificate = null;
        try
        {
            certificate = endpoint.IsHttps ? RelayCertificate.LoadFile(endpoint.CertificatePath!, endpoint.KeyPath, password, "CloudEndpoint") : null;
            return (_http.CreateRoute(endpoint, certificate), null);
        }
        catch (RelayConfigurationException ex)
        {
            return (null, string.Join(" ", ex.Errors));
        }
        catch (InvalidOperationException ex)
        {
            certificate?.Dispose();
            return (null, ex.Message);
        }
    }

    /// <summary>The listener on <paramref name="endpoint"/>'s address, whatever its protocol: bound there, or (port 0) shared under the same key.</summary>
    private ICloudListener? ListenerAt(CloudEndpointOptions endpoint)
    {
        var address = RelayOptionsValidator.ParseEndPoint(endpoint.Listen);
        if (address.Port != 0)
        {
            return _listeners.FirstOrDefault(l => l.LocalEndPoint.Equals(address));
        }

        var key = RelayOptionsValidator.ListenerKey(endpoint);
        return endpoint.IsHttp || endpoint.IsTls
            ? _listeners.FirstOrDefault(l => l.Protocol != "tcp" && string.Equals(l.Key, key, StringComparison.OrdinalIgnoreCase))
            : null;
    }

    private ICloudListener? ListenerOf(string name) => _listeners.FirstOrDefault(l => l.Routes.Find(name) is not null);

    private TcpCloudEndpoint NewSocketListener(IReadOnlyList<CloudEndpointOptions> endpoints) =>
        new([.. endpoints.Select(TcpCloudEndpoint.CreateRoute)], _router, _counters, _options.Limits, _logger);

    private static string Where(ICloudListener listener, CloudEndpointOptions endpoint) => listener.Protocol == "tcp"
        ? listener.LocalEndPoint.ToString()
        : $"{listener.Protocol}://{listener.LocalEndPoint} ({string.Join(", ", endpoint.Hostnames)})";

    private void Publish() => Volatile.Write(ref _published, [.. _listeners]);

    private void Refuse(List<RuntimeEndpointProblem> problems, string name, string problem)
    {
        problems.Add(new RuntimeEndpointProblem(name, problem));
        RelayLog.CloudEndpointNotApplied(_logger, Internal.SafeText.Clean(name, Internal.SafeText.MaxIdLength), problem);
    }

    /// <summary>A runtime endpoint as applied: its settings (no password; its compiled policy) and its TLS files' stamps.</summary>
    private sealed record Applied(CloudEndpointOptions Options, string Files);
}

/// <summary>A runtime cloud endpoint that was not applied, and why (one or more sentences).</summary>
/// <param name="Endpoint">The endpoint's name as given.</param>
/// <param name="Message">What is wrong, and whether it keeps running as it was.</param>
public sealed record RuntimeEndpointProblem(string Endpoint, string Message);

/// <summary>The certificates of the configured https cloud endpoints, by endpoint name, loaded at start.</summary>
internal sealed class CloudCertificates : Dictionary<string, System.Security.Cryptography.X509Certificates.X509Certificate2>
{
    public CloudCertificates()
        : base(StringComparer.OrdinalIgnoreCase)
    {
    }
}
