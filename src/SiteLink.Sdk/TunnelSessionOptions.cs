using System.Diagnostics.Metrics;
using System.Globalization;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging;
using SiteLink.Internal;

namespace SiteLink;

/// <summary>Settings of a <see cref="ITunnelSession"/>. Validated by <see cref="TunnelSession.ConnectAsync"/>.</summary>
public sealed class TunnelSessionOptions
{
    private Dictionary<string, string> _metadata = new(StringComparer.Ordinal);
    private TunnelReconnectOptions _reconnect = new();
    private List<ForwardEndpointOptions> _endpoints = [];
    private List<Uri> _relayUrls = [];
    private TunnelProxyOptions _proxy = new();
    private List<X509Certificate2> _trustedAuthorities = [];
    private X509Certificate2Collection? _trustRoots;

    /// <summary>The most relays one session connects to (<see cref="RelayUrls"/>).</summary>
    public const int MaxRelays = 16;

    /// <summary>
    /// The relay's agent address, e.g. <c>https://connect.vendor.example</c>. Required.
    /// <c>http://</c> (HTTP/2 without TLS) is accepted only when <see cref="AllowInsecureTransport"/> is set.
    /// </summary>
    public Uri? RelayUrl { get; set; }

    /// <summary>
    /// Several relays at once (points of presence, or replicas of one relay behind a balancer), in addition to
    /// <see cref="RelayUrl"/> when that is set too: the session keeps one connection to each, binds every endpoint on
    /// each, heartbeats and reconnects each on its own (its own backoff), and is <see cref="TunnelSessionState.Connected"/>
    /// while at least one is. Losing one relay loses only the connections that went through it; <see cref="TunnelSession.Relays"/>
    /// tells each one's state. At most <see cref="MaxRelays"/>, no duplicates. Default: empty (<see cref="RelayUrl"/> alone).
    /// </summary>
    public IList<Uri> RelayUrls => _relayUrls;

    /// <summary>Every relay this session connects to: <see cref="RelayUrl"/> first (when set), then <see cref="RelayUrls"/>.</summary>
    internal IReadOnlyList<Uri> AllRelayUrls => RelayUrl is null ? _relayUrls : [RelayUrl, .. _relayUrls];

    /// <summary>The authtoken the relay issued to this agent. Required. Sent on every call; never logged.</summary>
    public string? AuthToken { get; set; }

    /// <summary>
    /// A stable identifier of this agent process, reported to the relay and kept across reconnects.
    /// Default: <see langword="null"/>, meaning a random identifier chosen when the session is created.
    /// </summary>
    public string? ClientId { get; set; }

    /// <summary>Free-form labels reported to the relay (host name, product version, ...). Never put secrets here. Default: empty.</summary>
    public IDictionary<string, string> Metadata => _metadata;

    /// <summary>
    /// SHA-256 fingerprint of the relay's TLS certificate (64 hex digits, colons allowed). When set, the relay
    /// is trusted if and only if its certificate has this fingerprint, so a self-signed relay can be used safely.
    /// Default: <see langword="null"/>, meaning the certificate is verified against the system's trust store.
    /// </summary>
    public string? PinnedCertificateSha256 { get; set; }

    /// <summary>
    /// Trust the relay's certificate only if its chain ends at one of these certificate authorities, instead of the
    /// system's trust store (<c>X509ChainTrustMode.CustomRootTrust</c>; the host name is still checked): for a vendor
    /// running a private CA, or a customer whose proxy inspects TLS with the company's own CA. A PEM bundle: the PEM text
    /// itself, or the path of a PEM file (read when the session starts; at most 1 MiB and 256 certificates). Set it from
    /// configuration (<c>SiteLink:TrustedCertificateAuthorities</c>); in code, certificates you already hold can be added
    /// with <see cref="AddTrustedCertificateAuthorities"/>. Not together with <see cref="PinnedCertificateSha256"/>.
    /// Default: <see langword="null"/>, meaning the system trust store.
    /// </summary>
    public string? TrustedCertificateAuthorities { get; set; }

    /// <summary>
    /// Adds certificate authorities to trust as <see cref="TrustedCertificateAuthorities"/> does (both count when both
    /// are given). Only the certificates' public parts are used.
    /// </summary>
    /// <returns>These options, for chaining.</returns>
    public TunnelSessionOptions AddTrustedCertificateAuthorities(IEnumerable<X509Certificate2> certificates)
    {
        ArgumentNullException.ThrowIfNull(certificates);
        foreach (var certificate in certificates)
        {
            ArgumentNullException.ThrowIfNull(certificate, nameof(certificates));
            _trustedAuthorities.Add(certificate);
        }

        _trustRoots = null;
        return this;
    }

    /// <summary>
    /// The HTTP proxy the agent reaches its relays through: an explicit <see cref="TunnelProxyOptions.Address"/>, or by
    /// default the environment's <c>HTTPS_PROXY</c>/<c>NO_PROXY</c> (<see cref="TunnelProxyOptions.UseEnvironment"/>).
    /// TLS to the relay is verified end to end through it.
    /// </summary>
    public TunnelProxyOptions Proxy => _proxy;

    /// <summary>
    /// Allows <c>http://</c> relay URLs (HTTP/2 without TLS) to a loopback relay (<c>localhost</c>, 127.0.0.0/8, ::1)
    /// only: for development on one machine. The session logs a warning. Default: <see langword="false"/>.
    /// </summary>
    public bool AllowInsecureTransport { get; set; }

    /// <summary>How long connecting to the relay and the handshake may take. Default: 10 seconds.</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How long the relay may take to answer a bind or unbind. Default: 10 seconds.</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How long connecting to a TCP upstream may take before the tunnelled connection is refused. Default: 10 seconds.</summary>
    public TimeSpan UpstreamConnectTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// After the agent side finished a tunnelled connection, how long to wait for the relay to finish its side
    /// before the connection is aborted. Default: 10 seconds.
    /// </summary>
    public TimeSpan StreamCloseTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// How often the agent sends a heartbeat on the control stream. Default: 10 seconds.
    /// </summary>
    public TimeSpan HeartbeatInterval { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// How long after a heartbeat is sent the agent waits for anything from the relay before it declares the connection
    /// dead, closes it (the TCP connection too) and reconnects. Must be longer than <see cref="HeartbeatInterval"/>.
    /// The relay drops a session that sent nothing for interval + tolerance. Default: 15 seconds.
    /// </summary>
    public TimeSpan HeartbeatTolerance { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>How the session reconnects after losing the relay.</summary>
    public TunnelReconnectOptions Reconnect => _reconnect;

    /// <summary>
    /// When the session closes (or the relay asks it to drain), how long tunnelled connections still running may take
    /// to finish before they are closed. New connections stop at once. Default: 30 seconds.
    /// </summary>
    public TimeSpan DrainTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// The most idle data streams the agent keeps parked at the relay so that a new connection is paired at once,
    /// without the OpenStream round trip (the relay may allow fewer; the reference relay allows 32). The agent parks 2
    /// at first and doubles that, up to this number, whenever a connection arrives with none parked. 0 turns parking
    /// off. Default: 32.
    /// </summary>
    public int ParkedStreams { get; set; } = 32;

    /// <summary>How many accepted connections a listener endpoint holds before new ones are refused. Default: 128.</summary>
    public int ListenerBacklog { get; set; } = 128;

    /// <summary>
    /// Tunnelled connections the session serves at once, upstream connections being opened included. Beyond it the
    /// agent refuses new ones (<c>Overloaded</c>, counted in <c>sitelink.connections</c>), so neither a flood of public
    /// clients nor a misbehaving relay can make it open unlimited connections inside the network. Default: 2048.
    /// </summary>
    public int MaxConcurrentConnections { get; set; } = 2048;

    /// <summary>The same limit for each endpoint of the session. Default: 1024.</summary>
    public int MaxConcurrentConnectionsPerEndpoint { get; set; } = 1024;

    /// <summary>
    /// Forward endpoints to bind as soon as the session connects (and again after every reconnect), e.g. from the
    /// <c>SiteLink:Endpoints</c> configuration section (<c>Name</c>, <c>Upstream</c>, <c>Description</c>,
    /// <c>Metadata</c>). Default: empty.
    /// </summary>
    public IList<ForwardEndpointOptions> Endpoints => _endpoints;

    /// <summary>
    /// Creates the <c>SiteLink.Sdk</c> meter. Default: <see langword="null"/>, meaning a process-wide meter
    /// (<c>services.AddSiteLink()</c> uses the host's factory).
    /// </summary>
    public IMeterFactory? MeterFactory { get; set; }

    /// <summary>Where the session logs. Default: <see langword="null"/>, meaning no logging.</summary>
    public ILoggerFactory? LoggerFactory { get; set; }

    /// <summary>The clock of every timer in the session. Default: <see cref="TimeProvider.System"/>.</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>
    /// Adjusts the <see cref="SocketsHttpHandler"/> the session reaches the relay with — socket options or a
    /// <see cref="SocketsHttpHandler.ConnectCallback"/>, a client certificate, timeouts — called once per connection
    /// attempt, after the SDK configured it. Some settings stay the SDK's: the relay's certificate validation
    /// (<see cref="PinnedCertificateSha256"/>, <see cref="TrustedCertificateAuthorities"/> or the system trust store:
    /// the validation callback, the name it is checked against, and the chain policy, which the SDK sets after this
    /// callback ran), the single HTTP/2 connection the protocol needs, and, when a proxy is used (<see cref="Proxy"/>),
    /// the <see cref="SocketsHttpHandler.ConnectCallback"/> that goes through it. A callback that changes one of them (or
    /// sets a chain policy or <c>SslOptions.TargetHost</c>) fails the attempt with a <see cref="TunnelConnectionException"/>
    /// that says so (not transient) instead of silently weakening trust or bypassing the proxy. Default:
    /// <see langword="null"/>.
    /// </summary>
    public Action<SocketsHttpHandler>? ConfigureHttpHandler { get; set; }

    /// <summary>
    /// A copy the session keeps, so changing the caller's object (or a shared <c>IOptions</c> value) later changes
    /// nothing in a running session.
    /// </summary>
    internal TunnelSessionOptions Snapshot()
    {
        var copy = (TunnelSessionOptions)MemberwiseClone();
        // MemberwiseClone shares the collections and the nested object: give the copy its own.
        copy._metadata = new Dictionary<string, string>(_metadata, StringComparer.Ordinal);
        copy._endpoints = [.. _endpoints.Select(e => e.Snapshot())];
        copy._relayUrls = [.. _relayUrls];
        copy._proxy = _proxy.Copy();
        copy._trustedAuthorities = [.. _trustedAuthorities];
        // Read once per session (the file may be large or gone later); every copy of the copy shares what was read.
        copy._trustRoots = _trustRoots ?? copy.LoadTrustRoots(out _);
        if (copy.RelayUrl is null && copy._relayUrls.Count == 1)
        {
            // One relay, named in the list: the same as naming it in RelayUrl.
            copy.RelayUrl = copy._relayUrls[0];
            copy._relayUrls.Clear();
        }
        copy._reconnect = new TunnelReconnectOptions
        {
            InitialDelay = _reconnect.InitialDelay,
            MaxDelay = _reconnect.MaxDelay,
            UseJitter = _reconnect.UseJitter,
            ShouldRetry = _reconnect.ShouldRetry,
        };
        return copy;
    }

    private string? CheckRelayUrl(Uri url) =>
        !url.IsAbsoluteUri ? "must be an absolute URL."
        : url.Scheme == Uri.UriSchemeHttp
            ? !AllowInsecureTransport ? "uses http:// (no TLS); use https:// or set AllowInsecureTransport for development."
            : !url.IsLoopback ? "uses http:// (no TLS) to a host that is not loopback: the authtoken would cross the network in clear text. AllowInsecureTransport permits http:// only to localhost, 127.0.0.0/8 or ::1; use https://."
            : null
        : url.Scheme != Uri.UriSchemeHttps ? "must use https:// (or http:// with AllowInsecureTransport)."
        : null;

    /// <summary>
    /// Lists every problem with these options (empty when they are valid). Secrets are never quoted.
    /// </summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (RelayUrl is null && _relayUrls.Count == 0)
        {
            errors.Add("RelayUrl is required (or RelayUrls, for several relays).");
        }

        if (AllRelayUrls.Count > MaxRelays)
        {
            errors.Add($"RelayUrl and RelayUrls name {AllRelayUrls.Count} relays; at most {MaxRelays}.");
        }

        var seen = new HashSet<Uri>();
        for (var i = 0; i < AllRelayUrls.Count; i++)
        {
            var url = AllRelayUrls[i];
            var what = RelayUrl is not null && i == 0 ? "RelayUrl" : $"RelayUrls[{(RelayUrl is null ? i : i - 1)}]";
            if (url is null)
            {
                errors.Add($"{what} is null.");
            }
            else if (CheckRelayUrl(url) is { } problem)
            {
                errors.Add($"{what} '{url}' {problem}");
            }
            else if (!seen.Add(url))
            {
                errors.Add($"{what} '{url}' is named twice: one connection per relay.");
            }
        }

        if (string.IsNullOrWhiteSpace(AuthToken))
        {
            errors.Add("AuthToken is required.");
        }

        if (PinnedCertificateSha256 is not null && CertificatePin.TryParse(PinnedCertificateSha256) is null)
        {
            errors.Add("PinnedCertificateSha256 must be 64 hexadecimal digits (colons allowed).");
        }

        if (LoadTrustRoots(out var trustProblem) is { Count: > 0 } && PinnedCertificateSha256 is not null)
        {
            errors.Add("PinnedCertificateSha256 and TrustedCertificateAuthorities are both set: a pinned relay is trusted by its fingerprint alone; set one.");
        }

        if (trustProblem is not null)
        {
            errors.Add("TrustedCertificateAuthorities " + trustProblem);
        }

        Proxy.Validate(errors);

        CheckPositive(errors, nameof(ConnectTimeout), ConnectTimeout);
        CheckPositive(errors, nameof(RequestTimeout), RequestTimeout);
        CheckPositive(errors, nameof(UpstreamConnectTimeout), UpstreamConnectTimeout);
        CheckPositive(errors, nameof(StreamCloseTimeout), StreamCloseTimeout);
        CheckPositive(errors, nameof(DrainTimeout), DrainTimeout);
        if (HeartbeatInterval <= TimeSpan.Zero || HeartbeatInterval == Timeout.InfiniteTimeSpan)
        {
            errors.Add($"HeartbeatInterval must be positive and finite (was {HeartbeatInterval}).");
        }
        else if (HeartbeatTolerance <= HeartbeatInterval || HeartbeatTolerance == Timeout.InfiniteTimeSpan)
        {
            errors.Add($"HeartbeatTolerance ({HeartbeatTolerance}) must be finite and longer than HeartbeatInterval ({HeartbeatInterval}).");
        }

        if (Reconnect.InitialDelay <= TimeSpan.Zero)
        {
            errors.Add($"Reconnect.InitialDelay must be positive (was {Reconnect.InitialDelay}).");
        }

        if (Reconnect.MaxDelay < Reconnect.InitialDelay)
        {
            errors.Add($"Reconnect.MaxDelay ({Reconnect.MaxDelay}) must not be shorter than Reconnect.InitialDelay ({Reconnect.InitialDelay}).");
        }

        if (ParkedStreams is < 0 or > 256)
        {
            errors.Add($"ParkedStreams must be from 0 to 256 (was {ParkedStreams.ToString(CultureInfo.InvariantCulture)}).");
        }

        if (ListenerBacklog < 1)
        {
            errors.Add($"ListenerBacklog must be at least 1 (was {ListenerBacklog.ToString(CultureInfo.InvariantCulture)}).");
        }

        if (MaxConcurrentConnections < 1)
        {
            errors.Add($"MaxConcurrentConnections must be at least 1 (was {MaxConcurrentConnections.ToString(CultureInfo.InvariantCulture)}).");
        }

        if (MaxConcurrentConnectionsPerEndpoint < 1)
        {
            errors.Add($"MaxConcurrentConnectionsPerEndpoint must be at least 1 (was {MaxConcurrentConnectionsPerEndpoint.ToString(CultureInfo.InvariantCulture)}).");
        }

        var names = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        for (var i = 0; i < Endpoints.Count; i++)
        {
            var endpoint = Endpoints[i];
            var where = $"Endpoints[{i.ToString(CultureInfo.InvariantCulture)}]";
            if (string.IsNullOrWhiteSpace(endpoint.Name))
            {
                errors.Add($"{where}.Name is required.");
            }
            else if (!names.Add(endpoint.Name))
            {
                errors.Add($"{where}.Name '{endpoint.Name}' is declared more than once.");
            }

            if (!ForwardEndpointOptions.TryParseUpstream(endpoint.Upstream, out _))
            {
                // A value with user information is not echoed: it may hold a password.
                var shown = endpoint.Upstream?.Contains('@', StringComparison.Ordinal) == true ? "(not shown: it has user information)" : $"'{endpoint.Upstream}'";
                errors.Add($"{where}.Upstream {shown} is not tcp://host:port or host:port with a port from 1 to 65535.");
            }

            if (endpoint.ToEndpointOptions().FindProblem() is { } problem)
            {
                errors.Add($"{where}: {problem}.");
            }
        }

        if (TimeProvider is null)
        {
            errors.Add("TimeProvider must not be null.");
        }

        return errors;
    }

    /// <summary>Whether the relay is to be trusted by CA (<see cref="TrustedCertificateAuthorities"/> or <see cref="AddTrustedCertificateAuthorities"/>).</summary>
    internal bool HasTrustedAuthorities => !string.IsNullOrWhiteSpace(TrustedCertificateAuthorities) || _trustedAuthorities.Count > 0;

    /// <summary>The most bytes of a PEM bundle in <see cref="TrustedCertificateAuthorities"/>.</summary>
    internal const int MaxTrustBundleBytes = 1024 * 1024;

    /// <summary>The most certificates the trust bundle may hold.</summary>
    internal const int MaxTrustedAuthorities = 256;

    /// <summary>
    /// The roots to build the relay's chain against: <see cref="TrustedCertificateAuthorities"/> (PEM text or a file)
    /// and <see cref="AddTrustedCertificateAuthorities"/>; null for the system store. <paramref name="problem"/> says why
    /// the bundle cannot be used (never quoting it: it is a path or certificates, but kept short).
    /// </summary>
    internal X509Certificate2Collection? LoadTrustRoots(out string? problem)
    {
        problem = null;
        if (_trustRoots is not null)
        {
            return _trustRoots;
        }

        var roots = new X509Certificate2Collection();
        foreach (var certificate in _trustedAuthorities)
        {
            roots.Add(certificate);
        }

        if (TrustedCertificateAuthorities is { } bundle && !string.IsNullOrWhiteSpace(bundle))
        {
            string pem;
            string what;
            if (bundle.Contains("-----BEGIN", StringComparison.Ordinal))
            {
                pem = bundle;
                what = "(PEM text)";
            }
            else
            {
                var path = bundle.Trim();
                what = $"file '{SafeText.Clean(path, 260)}'";
                try
                {
                    var info = new FileInfo(path);
                    if (!info.Exists)
                    {
                        problem = $"names {what}, which does not exist (give the path of a PEM file, or the PEM text itself).";
                        return null;
                    }

                    if (info.Length > MaxTrustBundleBytes)
                    {
                        problem = $"{what} is larger than {MaxTrustBundleBytes / 1024} KiB; a CA bundle for the relay needs only its roots.";
                        return null;
                    }

                    pem = File.ReadAllText(path);
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
                {
                    problem = $"{what} cannot be read: {SafeText.Clean(ex.Message)}";
                    return null;
                }
            }

            if (pem.Length > MaxTrustBundleBytes)
            {
                problem = $"{what} is larger than {MaxTrustBundleBytes / 1024} KiB.";
                return null;
            }

            var before = roots.Count;
            try
            {
                roots.ImportFromPem(pem);
            }
            catch (System.Security.Cryptography.CryptographicException ex)
            {
                problem = $"{what} holds a certificate that cannot be read: {SafeText.Clean(ex.Message)}";
                return null;
            }

            if (roots.Count == before)
            {
                problem = $"{what} holds no PEM certificate (-----BEGIN CERTIFICATE-----).";
                return null;
            }
        }

        if (roots.Count > MaxTrustedAuthorities)
        {
            problem = $"holds {roots.Count.ToString(CultureInfo.InvariantCulture)} certificates; at most {MaxTrustedAuthorities.ToString(CultureInfo.InvariantCulture)}.";
            return null;
        }

        return roots.Count == 0 ? null : roots;
    }

    private static void CheckPositive(List<string> errors, string name, TimeSpan value)
    {
        if (value <= TimeSpan.Zero && value != Timeout.InfiniteTimeSpan)
        {
            errors.Add($"{name} must be positive (was {value}).");
        }
    }
}

/// <summary>How a session reconnects: exponential backoff with jitter and a cap, forever, on transient failures only.</summary>
public sealed class TunnelReconnectOptions
{
    /// <summary>The delay before the second attempt; later delays double. Default: 1 second.</summary>
    public TimeSpan InitialDelay { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>The longest delay between attempts. Default: 30 seconds.</summary>
    public TimeSpan MaxDelay { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Randomise delays so that many agents cut off at once do not reconnect in lockstep. Default: <see langword="true"/>.
    /// </summary>
    public bool UseJitter { get; set; } = true;

    /// <summary>
    /// The application's say, for each failed connection attempt the session would retry (the relay unreachable, refused, timed out):
    /// return <see langword="false"/> to stop, and the session becomes <see cref="TunnelSessionState.Faulted"/> with that
    /// failure (e.g. <c>context =&gt; context.Attempt &lt;= 10</c> to give up after ten attempts). Failures that are never
    /// retried (a rejected token, an untrusted certificate, an unsupported version) fault the session whatever it says.
    /// Called on the session's threads; it must not block. An exception from it is treated as "retry". Default:
    /// <see langword="null"/>, retry for ever.
    /// </summary>
    public Func<TunnelRetryContext, bool>? ShouldRetry { get; set; }
}

/// <summary>A failure the session would retry, as <see cref="TunnelReconnectOptions.ShouldRetry"/> sees it.</summary>
/// <param name="Error">Why the attempt failed.</param>
/// <param name="Attempt">The failed attempt's number in this outage, from 1.</param>
public sealed record TunnelRetryContext(Exception Error, int Attempt);
