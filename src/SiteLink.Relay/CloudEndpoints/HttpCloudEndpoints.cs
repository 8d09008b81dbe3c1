using System.Net;
using System.Net.Http;
using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Sessions;
using Yarp.ReverseProxy.Forwarder;
using Yarp.ReverseProxy.Transforms;
using Yarp.ReverseProxy.Transforms.Builder;

namespace SiteLink.Relay.CloudEndpoints;

/// <summary>
/// The http and https cloud endpoints: one Kestrel server (apart from the agent port's) with a listener per address,
/// each request routed by its Host header (and for https, first by the TLS server name, which picks the certificate)
/// to a cloud endpoint, and forwarded by YARP's <see cref="IHttpForwarder"/> over tunnelled connections opened straight
/// to the agent (a <see cref="SocketsHttpHandler"/> whose ConnectCallback returns an <see cref="HttpTunnelConnection"/>),
/// pooled and reused across requests like any upstream connection.
/// </summary>
internal sealed class HttpCloudEndpoints : IAsyncDisposable
{
    /// <summary>The public client's address, handed from the request to the connection it opens.</summary>
    private static readonly HttpRequestOptionsKey<string> ClientAddressKey = new("sitelink.client_address");

    private readonly ConnectionRouter _router;
    private readonly RelayCounters _counters;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly List<Listener> _listeners = [];
    private readonly Dictionary<CloudEndpointOptions, HttpMessageInvoker> _clients = [];
    private WebApplication? _app;

    public HttpCloudEndpoints(IEnumerable<CloudEndpointOptions> endpoints, IReadOnlyDictionary<string, X509Certificate2> certificates,
        ConnectionRouter router, RelayCounters counters, ILoggerFactory loggerFactory)
    {
        _router = router;
        _counters = counters;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger<HttpCloudEndpoints>();
        // One listener per address and protocol (the validator refuses http and https on one fixed address).
        foreach (var group in endpoints.GroupBy(e => (Listen: e.Listen.ToLowerInvariant(), e.IsHttps)))
        {
            var listener = new Listener(RelayOptionsValidator.ParseEndPoint(group.Key.Listen), group.Key.IsHttps);
            foreach (var endpoint in group)
            {
                var certificate = endpoint.IsHttps ? certificates[endpoint.Name] : null;
                ClientCertificates? clients = null;
                if (endpoint.ClientCertificateAuthorities is { } authorities && ClientCertificates.TryLoad(authorities, out clients) is { } problem)
                {
                    // Checked by the validator; a file changed since is an error at start, not a silent open door.
                    throw new InvalidOperationException($"Cloud endpoint '{endpoint.Name}': ClientCertificateAuthorities {problem}");
                }

                var route = new Route(endpoint, certificate, certificate is null ? null : new SslServerAuthenticationOptions
                {
                    ServerCertificateContext = SslStreamCertificateContext.Create(certificate, additionalCertificates: null),
                    EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                    ApplicationProtocols = [SslApplicationProtocol.Http2, SslApplicationProtocol.Http11],
                    ClientCertificateRequired = clients is not null,
                    RemoteCertificateValidationCallback = clients?.Callback,
                });
                foreach (var hostname in endpoint.Hostnames)
                {
                    listener.Routes.TryAdd(hostname, route);
                }

                _clients[endpoint] = CreateClient(endpoint);
            }

            _listeners.Add(listener);
        }
    }

    /// <summary>Each http(s) cloud endpoint's name and the address its listener is bound to (after start).</summary>
    public IEnumerable<KeyValuePair<string, IPEndPoint>> BoundEndpoints =>
        _listeners.SelectMany(l => l.Endpoints.Select(e => KeyValuePair.Create(e.Name, l.Bound ?? l.EndPoint)));

    public bool IsEmpty => _listeners.Count == 0;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        // An empty builder: none of the process's configuration or environment applies to this server but what is set here.
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore().UseKestrelHttpsConfiguration();
        // A request runs on the thread that received it, rather than being queued to another: the forwarder never blocks
        // (all its I/O is asynchronous), and each handoff saved is a thread wake-up per request. Measured with the
        // bench's keep-alive row: ~0.81x -> ~0.90x of the tcp endpoint's rate, p99 ~19 -> ~9 ms (docs/architecture.md).
        builder.WebHost.UseSockets(sockets => sockets.UnsafePreferInlineScheduling = true);
        builder.Services.Replace(ServiceDescriptor.Singleton(_loggerFactory));
        builder.Services.AddHttpForwarder();
        builder.Services.AddReverseProxy();
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            // Bodies stream through as they come, whatever their size, as a TCP endpoint's bytes do.
            kestrel.Limits.MaxRequestBodySize = null;
            foreach (var listener in _listeners)
            {
                kestrel.Listen(listener.EndPoint, options =>
                {
                    listener.Options = options;
                    // Each connection knows its listener from the start: no per-request search by local address.
                    options.Use(next => connection =>
                    {
                        connection.Items[typeof(Listener)] = listener;
                        // Written here, before any request: HTTP/2 streams of one connection run at once and must not
                        // write the connection's (unsynchronised) items themselves.
                        connection.Items[typeof(ConnectDecisions)] = new ConnectDecisions();
                        return next(connection);
                    });
                    if (listener.Https)
                    {
                        options.Protocols = HttpProtocols.Http1AndHttp2;
                        // Per connection, by the TLS server name: that endpoint's certificate, and for an endpoint with
                        // mutual TLS, its client certificate check (a client without a good one fails the handshake).
                        options.UseHttps(new TlsHandshakeCallbackOptions
                        {
                            OnConnection = context => ValueTask.FromResult(listener.Routes.Match(context.ClientHelloInfo.ServerName)?.Tls
                                ?? throw new AuthenticationException($"No https endpoint is served for the server name '{Clean(context.ClientHelloInfo.ServerName)}' here.")),
                        });
                    }
                    else
                    {
                        options.Protocols = HttpProtocols.Http1;
                    }
                });
            }
        });

        var logins = AddLogins(builder);
        var app = builder.Build();
        if (logins)
        {
            // Runs the OpenID Connect handlers on their callback paths (before any request is routed).
            app.UseAuthentication();
        }

        var forwarder = app.Services.GetRequiredService<IHttpForwarder>();
        var transforms = app.Services.GetRequiredService<ITransformBuilder>();
        var untrusted = CreateTransformer(transforms, trusted: false);
        var trusted = CreateTransformer(transforms, trusted: true);
        app.Run(context => ForwardAsync(context, forwarder, untrusted, trusted));
        await app.StartAsync(cancellationToken).ConfigureAwait(false);
        _app = app;
        foreach (var listener in _listeners)
        {
            listener.Bound = listener.Options?.IPEndPoint;
            foreach (var endpoint in listener.Endpoints)
            {
                RelayLog.CloudEndpointListening(_logger, endpoint.Name, $"{(listener.Https ? "https" : "http")}://{listener.Bound} ({string.Join(", ", endpoint.Hostnames)})", endpoint.Tenant, endpoint.Endpoint);
            }
        }
    }

    /// <summary>Registers a cookie and an OpenID Connect scheme for every oidc rule of the endpoints; false when there is none.</summary>
    private bool AddLogins(WebApplicationBuilder builder)
    {
        var rules = _listeners.SelectMany(l => l.Endpoints)
            .SelectMany(e => Policy.TrafficPolicy.OidcRules(e.Policy).Select(x => (Endpoint: e, x.Rule, x.Index)))
            .ToArray();
        if (rules.Length == 0)
        {
            return false;
        }

        var authentication = builder.Services.AddAuthentication();
        foreach (var (endpoint, rule, index) in rules)
        {
            var (cookie, oidc, callback) = Policy.TrafficPolicy.OidcSchemes(endpoint.Name, index);
            authentication.AddCookie(cookie, options =>
            {
                options.Cookie.Name = ".sitelink." + cookie;
                options.Cookie.HttpOnly = true;
                options.Cookie.SameSite = SameSiteMode.Lax;
                options.Cookie.SecurePolicy = Microsoft.AspNetCore.Http.CookieSecurePolicy.SameAsRequest;
                options.ExpireTimeSpan = rule.SessionLifetime;
                options.SlidingExpiration = false;
            });
            authentication.AddOpenIdConnect(oidc, options =>
            {
                options.Authority = rule.Authority;
                options.RequireHttpsMetadata = rule.Authority!.StartsWith("https:", StringComparison.OrdinalIgnoreCase);
                options.ClientId = rule.ClientId;
                options.ClientSecret = rule.ClientSecret;
                options.ResponseType = "code";
                // The code comes back in the redirect's query (no page with a self-submitting form to run).
                options.ResponseMode = "query";
                options.UsePkce = true;
                options.CallbackPath = callback;
                options.SignInScheme = cookie;
                options.MapInboundClaims = false;
                options.SaveTokens = false;
                options.GetClaimsFromUserInfoEndpoint = false;
                options.Scope.Clear();
                foreach (var scope in rule.Scopes.Count == 0 ? ["openid", "email"] : rule.Scopes)
                {
                    options.Scope.Add(scope);
                }

                // The endpoint may be plain http (behind TLS elsewhere, or a test): the login's own cookies follow the request.
                options.CorrelationCookie.SecurePolicy = Microsoft.AspNetCore.Http.CookieSecurePolicy.SameAsRequest;
                options.CorrelationCookie.SameSite = SameSiteMode.Lax;
                options.NonceCookie.SecurePolicy = Microsoft.AspNetCore.Http.CookieSecurePolicy.SameAsRequest;
                options.NonceCookie.SameSite = SameSiteMode.Lax;
            });
        }

        return true;
    }

    private static HttpTransformer CreateTransformer(ITransformBuilder transforms, bool trusted) => transforms.Create(context =>
    {
        // What the relay saw replaces what the client claims, unless the endpoint trusts a proxy in front of it.
        if (!trusted)
        {
            context.AddRequestHeaderRemove("Forwarded");
        }

        context.AddXForwarded(trusted ? ForwardedTransformActions.Append : ForwardedTransformActions.Set);
        context.AddRequestTransform(transform =>
        {
            var remote = transform.HttpContext.Connection;
            transform.ProxyRequest.Options.Set(ClientAddressKey, remote.RemoteIpAddress is null ? "unknown" : new IPEndPoint(remote.RemoteIpAddress, remote.RemotePort).ToString());
            return ValueTask.CompletedTask;
        });
    });

    private async Task ForwardAsync(HttpContext context, IHttpForwarder forwarder, HttpTransformer untrusted, HttpTransformer trusted)
    {
        var listener = (Listener)context.Features.GetRequiredFeature<IConnectionItemsFeature>().Items[typeof(Listener)]!;
        var route = listener.Routes.Match(context.Request.Host.Host);
        if (route is null)
        {
            await ErrorAsync(context, StatusCodes.Status404NotFound, "unknown_host", $"No endpoint is served at '{Clean(context.Request.Host.Host)}' here.").ConfigureAwait(false);
            return;
        }

        if (listener.Https && listener.Routes.Match(context.Features.Get<ITlsHandshakeFeature>()?.HostName) != route)
        {
            // The TLS session was set up for another name (and maybe another tenant): no domain fronting.
            await ErrorAsync(context, StatusCodes.Status421MisdirectedRequest, "misdirected", $"This connection was set up for another host than '{Clean(context.Request.Host.Host)}'.").ConfigureAwait(false);
            return;
        }

        var endpoint = route.Endpoint;
        if (endpoint.CompiledPolicy is { } policy && await EvaluateAsync(context, policy).ConfigureAwait(false) is { } denial)
        {
            await DenyAsync(context, endpoint, denial).ConfigureAwait(false);
            return;
        }

        var config = new ForwarderRequestConfig
        {
            ActivityTimeout = endpoint.IdleTimeout == Timeout.InfiniteTimeSpan ? TimeSpan.FromDays(1) : endpoint.IdleTimeout,
            Version = HttpVersion.Version11,
            VersionPolicy = HttpVersionPolicy.RequestVersionOrLower,
        };
        var error = await forwarder.SendAsync(context, $"http://{endpoint.Endpoint}/", _clients[endpoint], config, endpoint.TrustForwardedHeaders ? trusted : untrusted).ConfigureAwait(false);
        if (error == ForwarderError.None)
        {
            return;
        }

        var exception = context.GetForwarderErrorFeature()?.Exception;
        var open = Find<TunnelOpenException>(exception);
        var (status, reason, text) = open?.Reason switch
        {
            RefusalReason.NoAgent => (StatusCodes.Status502BadGateway, "no_agent", $"No agent is serving '{endpoint.Endpoint}' right now."),
            RefusalReason.AgentRefused => (StatusCodes.Status502BadGateway, "agent_refused", $"The agent serving '{endpoint.Endpoint}' could not reach its service: {Clean(open.Message)}"),
            RefusalReason.PairingTimeout => (StatusCodes.Status504GatewayTimeout, "agent_timeout", $"The agent serving '{endpoint.Endpoint}' did not answer in time."),
            RefusalReason.StreamLimit or RefusalReason.EndpointLimit or RefusalReason.ClientIpLimit => (StatusCodes.Status503ServiceUnavailable, "overloaded", $"'{endpoint.Endpoint}' is at its connection limit; try again."),
            RefusalReason.SessionEnded => (StatusCodes.Status502BadGateway, "no_agent", $"The agent serving '{endpoint.Endpoint}' went away."),
            _ when error is ForwarderError.RequestTimedOut => (StatusCodes.Status504GatewayTimeout, "upstream_timeout", $"The service behind '{endpoint.Endpoint}' did not answer in time."),
            _ when error is ForwarderError.RequestCanceled or ForwarderError.RequestBodyClient or ForwarderError.ResponseBodyClient or ForwarderError.UpgradeRequestClient or ForwarderError.UpgradeResponseClient
                => (499, "client_closed", "The client went away."),
            _ => (StatusCodes.Status502BadGateway, "upstream_error", $"The service behind '{endpoint.Endpoint}' failed ({error})."),
        };
        await ErrorAsync(context, status, reason, text).ConfigureAwait(false);
    }

    /// <summary>
    /// The endpoint's traffic policy for this request: its on-connect rules once per client connection (the first
    /// request of the connection to this endpoint), then its on-request rules (which may set request headers and
    /// arrange response headers).
    /// </summary>
    private static async ValueTask<Policy.PolicyDenial?> EvaluateAsync(HttpContext context, Policy.TrafficPolicy policy)
    {
        if (policy.HasConnectRules)
        {
            // Once per connection and policy, whichever of its streams asks first (a rate limit spends one token).
            var decisions = (ConnectDecisions)context.Features.GetRequiredFeature<IConnectionItemsFeature>().Items[typeof(ConnectDecisions)]!;
            var address = context.Connection.RemoteIpAddress ?? IPAddress.None;
            if (decisions.GetOrAdd(policy, p => new Lazy<Policy.PolicyDenial?>(() => p.OnConnect(address))).Value is { } refused)
            {
                return refused;
            }
        }

        return await policy.OnHttpRequestAsync(context).ConfigureAwait(false);
    }

    private async Task DenyAsync(HttpContext context, CloudEndpointOptions endpoint, Policy.PolicyDenial denial)
    {
        if (denial.Handled)
        {
            // Answered by the rule (sent to log in).
            return;
        }

        var remote = context.Connection;
        _router.OnPolicyDenied(endpoint, remote.RemoteIpAddress is null ? "unknown" : new IPEndPoint(remote.RemoteIpAddress, remote.RemotePort).ToString(), denial);
        if (context.Response.HasStarted)
        {
            return;
        }

        context.Response.Clear();
        context.Response.StatusCode = denial.Status;
        context.Response.ContentType = "text/plain; charset=utf-8";
        if (denial.Challenge is not null)
        {
            context.Response.Headers.WWWAuthenticate = denial.Challenge;
        }

        if (denial.Reason == "ip_denied")
        {
            // Nothing more from this connection will be let through either.
            context.Response.Headers.Connection = "close";
        }

        var body = denial.Body ?? $"{denial.Status} {ReasonPhrases.GetReasonPhrase(denial.Status)}: denied by the endpoint's policy (rule '{denial.Rule}').\n";
        await context.Response.WriteAsync(body, Encoding.UTF8).ConfigureAwait(false);
    }

    private async Task ErrorAsync(HttpContext context, int status, string reason, string text)
    {
        _counters.OnHttpError(reason);
        if (context.Response.HasStarted || status == 499)
        {
            return;
        }

        context.Response.Clear();
        context.Response.StatusCode = status;
        context.Response.ContentType = "text/plain; charset=utf-8";
        await context.Response.WriteAsync($"{status} {ReasonPhrases.GetReasonPhrase(status)}: {text}\n", Encoding.UTF8).ConfigureAwait(false);
    }

    private static string Clean(string? text) => Internal.SafeText.Clean(text, 128);

    private static T? Find<T>(Exception? exception)
        where T : Exception
    {
        for (var current = exception; current is not null; current = current.InnerException)
        {
            if (current is T found)
            {
                return found;
            }
        }

        return null;
    }

    private HttpMessageInvoker CreateClient(CloudEndpointOptions endpoint) => new(new SocketsHttpHandler
    {
        UseProxy = false,
        AllowAutoRedirect = false,
        AutomaticDecompression = DecompressionMethods.None,
        UseCookies = false,
        ActivityHeadersPropagator = null,
        // Tunnelled connections are kept and reused across requests, as keep-alive connections to any upstream.
        PooledConnectionIdleTimeout = endpoint.KeepAliveTimeout,
        MaxConnectionsPerServer = endpoint.MaxConnections,
        ConnectTimeout = Timeout.InfiniteTimeSpan,
        ConnectCallback = (context, cancellationToken) => OpenAsync(endpoint, context, cancellationToken),
    }, disposeHandler: true);

    /// <summary>Offers a new tunnelled connection to the agent serving <paramref name="endpoint"/> and waits until it is opened or refused.</summary>
    private async ValueTask<Stream> OpenAsync(CloudEndpointOptions endpoint, SocketsHttpConnectionContext context, CancellationToken cancellationToken)
    {
        var address = context.InitialRequestMessage.Options.TryGetValue(ClientAddressKey, out var client) ? client : "unknown";
        var tunnel = new HttpTunnelConnection();
        var connection = new PublicConnection(tunnel, address, endpoint);
        _router.Offer(connection);
        try
        {
            await tunnel.Opened.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            connection.Reset();
            throw;
        }

        return tunnel.Stream;
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _app, null) is { } app)
        {
            await app.StopAsync(CancellationToken.None).ConfigureAwait(false);
            await app.DisposeAsync().ConfigureAwait(false);
        }

        foreach (var client in _clients.Values)
        {
            client.Dispose();
        }
    }

    private sealed record Route(CloudEndpointOptions Endpoint, X509Certificate2? Certificate, SslServerAuthenticationOptions? Tls);

    /// <summary>A client connection's on-connect decisions, one per policy it met (a policy replaced by a reload is a new one).</summary>
    private sealed class ConnectDecisions : System.Collections.Concurrent.ConcurrentDictionary<Policy.TrafficPolicy, Lazy<Policy.PolicyDenial?>>;

    private sealed class Listener(IPEndPoint endPoint, bool https)
    {
        public IPEndPoint EndPoint { get; } = endPoint;

        public bool Https { get; } = https;

        public HostRouter<Route> Routes { get; } = new();

        public IEnumerable<CloudEndpointOptions> Endpoints => Routes.Values.Select(r => r.Endpoint).Distinct();

        public ListenOptions? Options { get; set; }

        public IPEndPoint? Bound { get; set; }
    }
}
