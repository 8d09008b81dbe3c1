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
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Sessions;
using Yarp.ReverseProxy.Forwarder;
using Yarp.ReverseProxy.Transforms;
using Yarp.ReverseProxy.Transforms.Builder;

namespace SiteLink.Relay.CloudEndpoints;

/// <summary>
/// The http and https cloud endpoints: a Kestrel server (apart from the agent port's) per listening address, so each
/// starts and stops alone, each request routed by its Host header (and for https, first by the TLS server name, which
/// picks the certificate) through the listener's <see cref="RouteTable{T}"/> to a cloud endpoint, and forwarded by
/// YARP's <see cref="IHttpForwarder"/> over tunnelled connections opened straight to the agent (a
/// <see cref="SocketsHttpHandler"/> per endpoint whose ConnectCallback returns an <see cref="HttpTunnelConnection"/>),
/// pooled and reused across requests like any upstream connection.
/// </summary>
internal sealed class HttpCloudEndpoints
{
    /// <summary>The public client's address, handed from the request to the connection it opens.</summary>
    private static readonly HttpRequestOptionsKey<string> ClientAddressKey = new("sitelink.client_address");

    private readonly ConnectionRouter _router;
    private readonly RelayCounters _counters;
    private readonly ILoggerFactory _loggerFactory;

    public HttpCloudEndpoints(ConnectionRouter router, RelayCounters counters, ILoggerFactory loggerFactory)
    {
        _router = router;
        _counters = counters;
        _loggerFactory = loggerFactory;
    }

    /// <summary>
    /// A route for <paramref name="endpoint"/>: for https its TLS settings (<paramref name="certificate"/>, and with
    /// ClientCertificateAuthorities the client certificate check), and the client its requests are forwarded with.
    /// </summary>
    /// <exception cref="InvalidOperationException">ClientCertificateAuthorities cannot be read.</exception>
    public IEndpointRoute CreateRoute(CloudEndpointOptions endpoint, X509Certificate2? certificate)
    {
        ClientCertificates? clients = null;
        if (endpoint.ClientCertificateAuthorities is { } authorities && ClientCertificates.TryLoad(authorities, out clients) is { } problem)
        {
            // Checked by the validator; a file changed since is an error, not a silent open door.
            throw new InvalidOperationException($"Cloud endpoint '{endpoint.Name}': ClientCertificateAuthorities {problem}");
        }

        return new Route(endpoint, certificate is null ? null : new SslServerAuthenticationOptions
        {
            ServerCertificateContext = SslStreamCertificateContext.Create(certificate, additionalCertificates: null),
            EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
            ApplicationProtocols = [SslApplicationProtocol.Http2, SslApplicationProtocol.Http11],
            ClientCertificateRequired = clients is not null,
            RemoteCertificateValidationCallback = clients?.Callback,
        }, new ForwarderClient(this, endpoint));
    }

    /// <summary>
    /// A route for <paramref name="endpoint"/> with <paramref name="route"/>'s TLS settings (nothing to read again) and
    /// a client of its own: for a changed target or pool, which the route cannot take in place.
    /// </summary>
    public IEndpointRoute WithNewClient(IEndpointRoute route, CloudEndpointOptions endpoint) =>
        new Route(endpoint, ((Route)route).Tls, new ForwarderClient(this, endpoint));

    /// <summary>
    /// Starts a Kestrel server on <paramref name="endPoint"/> routing to <paramref name="routes"/> (made by
    /// <see cref="CreateRoute"/>), with the OpenID Connect schemes of their oidc rules.
    /// </summary>
    /// <exception cref="IOException">The address cannot be bound.</exception>
    public async Task<ICloudListener> StartListenerAsync(string key, IPEndPoint endPoint, bool https, IReadOnlyList<IEndpointRoute> routes, CancellationToken cancellationToken)
    {
        var listener = new Listener(key, https, routes.Cast<Route>());
        // An empty builder: none of the process's configuration or environment applies to this server but what is set here.
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore().UseKestrelHttpsConfiguration();
        // A request runs on the thread that received it, rather than being queued to another: the forwarder never blocks
        // (all its I/O is asynchronous), and each handoff saved is a thread wake-up per request. Measured with the
        // bench's keep-alive row: ~0.81x -> ~0.90x of the tcp endpoint's rate, p99 ~19 -> ~9 ms (docs/architecture.md).
        builder.WebHost.UseSockets(sockets => sockets.UnsafePreferInlineScheduling = true);
        builder.Services.Replace(ServiceDescriptor.Singleton(_loggerFactory));
        // Stopping waits for the requests in flight for as long as the caller's token lets it: a listener whose last
        // endpoint was removed lets them finish; the relay's own stop bounds the wait.
        builder.Services.Configure<HostOptions>(host => host.ShutdownTimeout = Timeout.InfiniteTimeSpan);
        builder.Services.AddHttpForwarder();
        builder.Services.AddReverseProxy();
        ListenOptions? bound = null;
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            // Bodies stream through as they come, whatever their size, as a TCP endpoint's bytes do.
            kestrel.Limits.MaxRequestBodySize = null;
            kestrel.Listen(endPoint, options =>
            {
                bound = options;
                options.Use(next => connection =>
                {
                    // Written here, before any request: HTTP/2 streams of one connection run at once and must not
                    // write the connection's (unsynchronised) items themselves.
                    connection.Items[typeof(ConnectDecisions)] = new ConnectDecisions();
                    return next(connection);
                });
                if (https)
                {
                    options.Protocols = HttpProtocols.Http1AndHttp2;
                    // Per connection, by the TLS server name: that endpoint's certificate, and for an endpoint with
                    // mutual TLS, its client certificate check (a client without a good one fails the handshake).
                    options.UseHttps(new TlsHandshakeCallbackOptions
                    {
                        OnConnection = context => ValueTask.FromResult(listener.Routes.Current.Match(context.ClientHelloInfo.ServerName)?.Tls
                            ?? throw new AuthenticationException($"No https endpoint is served for the server name '{Clean(context.ClientHelloInfo.ServerName)}' here.")),
                    });
                }
                else
                {
                    options.Protocols = HttpProtocols.Http1;
                }
            });
        });

        var logins = AddLogins(builder, routes.Select(r => r.Endpoint));
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
        // Each server serves one listener: the request's listener is known without a look-up.
        app.Run(context => ForwardAsync(context, listener, forwarder, untrusted, trusted));
        await Hosting.RelayServer.StartOrDisposeAsync(app, cancellationToken).ConfigureAwait(false);

        listener.Started(app, bound!.IPEndPoint!);
        return listener;
    }

    /// <summary>Registers a cookie and an OpenID Connect scheme for every oidc rule of the endpoints; false when there is none.</summary>
    private static bool AddLogins(WebApplicationBuilder builder, IEnumerable<CloudEndpointOptions> endpoints)
    {
        var rules = endpoints
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

    private async Task ForwardAsync(HttpContext context, Listener listener, IHttpForwarder forwarder, HttpTransformer untrusted, HttpTransformer trusted)
    {
        Route? route;
        do
        {
            // One snapshot of the listener's routes per attempt: both names are matched against the same routes.
            var routes = listener.Routes.Current;
            route = routes.Match(context.Request.Host.Host);
            if (route is null)
            {
                await ErrorAsync(context, StatusCodes.Status404NotFound, "unknown_host", $"No endpoint is served at '{Clean(context.Request.Host.Host)}' here.").ConfigureAwait(false);
                return;
            }

            if (listener.Https && routes.Match(context.Features.Get<ITlsHandshakeFeature>()?.HostName) != route)
            {
                // The TLS session was set up for another name (and maybe another tenant): no domain fronting.
                await ErrorAsync(context, StatusCodes.Status421MisdirectedRequest, "misdirected", $"This connection was set up for another host than '{Clean(context.Request.Host.Host)}'.").ConfigureAwait(false);
                return;
            }
        }
        // Only a route removed since that snapshot, whose last request has ended, refuses: its client is disposed, and
        // the next snapshot says where the host goes now.
        while (!route.Client.TryEnter());

        // Every way out of here, the request is counted out of the client it entered (in flight, it keeps the client of
        // a route removed meanwhile from being disposed under it).
        try
        {
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
            var error = await forwarder.SendAsync(context, $"http://{endpoint.Endpoint}/", route.Client.Invoker, config, endpoint.TrustForwardedHeaders ? trusted : untrusted).ConfigureAwait(false);
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
        finally
        {
            route.Client.Exit();
        }
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

    private HttpMessageInvoker CreateClient(ForwarderClient client) => new(new SocketsHttpHandler
    {
        UseProxy = false,
        AllowAutoRedirect = false,
        AutomaticDecompression = DecompressionMethods.None,
        UseCookies = false,
        ActivityHeadersPropagator = null,
        // Tunnelled connections are kept and reused across requests, as keep-alive connections to any upstream.
        PooledConnectionIdleTimeout = client.Endpoint.KeepAliveTimeout,
        MaxConnectionsPerServer = client.Endpoint.MaxConnections,
        ConnectTimeout = Timeout.InfiniteTimeSpan,
        // The endpoint's settings now (an update may have changed its idle timeout since the client was made).
        ConnectCallback = (context, cancellationToken) => OpenAsync(client.Endpoint, context, cancellationToken),
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

    /// <summary>
    /// One endpoint on a listener: its settings (replaced whole by an update, read once per request), its TLS settings
    /// (https), and the client its requests go through.
    /// </summary>
    private sealed class Route(CloudEndpointOptions endpoint, SslServerAuthenticationOptions? tls, ForwarderClient client) : IEndpointRoute
    {
        private CloudEndpointOptions _endpoint = endpoint;

        public CloudEndpointOptions Endpoint => Volatile.Read(ref _endpoint);

        public SslServerAuthenticationOptions? Tls => tls;

        public ForwarderClient Client => client;

        public int ActiveConnections => client.Requests;

        public bool TryUpdate(CloudEndpointOptions endpoint)
        {
            // The pooled tunnelled connections were opened to one target, with one pool size and idle timeout: another
            // target or pool needs a new client, so a new route (pooled connections must not carry new requests to the old target).
            if (!client.Fits(endpoint))
            {
                return false;
            }

            client.Endpoint = endpoint;
            Volatile.Write(ref _endpoint, endpoint);
            return true;
        }

        public void Retire() => client.Exit();
    }

    /// <summary>
    /// An endpoint's forwarding client, disposed when the route that holds it is retired and the last request that went
    /// through it has ended: a removed endpoint's requests in flight finish on it.
    /// </summary>
    private sealed class ForwarderClient
    {
        private CloudEndpointOptions _endpoint;

        /// <summary>The route holding it (1 until retired) plus the requests in flight; 0 once disposed.</summary>
        private int _users = 1;

        public ForwarderClient(HttpCloudEndpoints owner, CloudEndpointOptions endpoint)
        {
            _endpoint = endpoint;
            Invoker = owner.CreateClient(this);
        }

        public HttpMessageInvoker Invoker { get; }

        /// <summary>The settings new tunnelled connections are opened with.</summary>
        public CloudEndpointOptions Endpoint
        {
            get => Volatile.Read(ref _endpoint);
            set => Volatile.Write(ref _endpoint, value);
        }

        /// <summary>Requests in flight (while routed to).</summary>
        public int Requests => Math.Max(0, Volatile.Read(ref _users) - 1);

        /// <summary>Whether this client serves <paramref name="endpoint"/> as well: same target and pool settings.</summary>
        public bool Fits(CloudEndpointOptions endpoint)
        {
            var current = Endpoint;
            return string.Equals(current.Tenant, endpoint.Tenant, StringComparison.Ordinal)
                && string.Equals(current.Endpoint, endpoint.Endpoint, StringComparison.Ordinal)
                && current.KeepAliveTimeout == endpoint.KeepAliveTimeout
                && current.MaxConnections == endpoint.MaxConnections;
        }

        /// <summary>Counts a request in; false when the client is already disposed (its route was retired and idle).</summary>
        public bool TryEnter()
        {
            var users = Volatile.Read(ref _users);
            while (users > 0)
            {
                var seen = Interlocked.CompareExchange(ref _users, users + 1, users);
                if (seen == users)
                {
                    return true;
                }

                users = seen;
            }

            return false;
        }

        /// <summary>A request ended, or the route let go: the last one out disposes the client.</summary>
        public void Exit()
        {
            if (Interlocked.Decrement(ref _users) == 0)
            {
                Invoker.Dispose();
            }
        }
    }

    /// <summary>A client connection's on-connect decisions, one per policy it met (a policy replaced by a reload is a new one).</summary>
    private sealed class ConnectDecisions : System.Collections.Concurrent.ConcurrentDictionary<Policy.TrafficPolicy, Lazy<Policy.PolicyDenial?>>;

    /// <summary>One listening address and its Kestrel server.</summary>
    private sealed class Listener(string key, bool https, IEnumerable<Route> routes) : ICloudListener
    {
        private WebApplication? _app;

        public string Protocol => https ? "https" : "http";

        public string Key => key;

        public bool Https => https;

        public IPEndPoint LocalEndPoint { get; private set; } = new(IPAddress.None, 0);

        public RouteTable<Route> Routes { get; } = new(routes);

        IRouteTable ICloudListener.Routes => Routes;

        public void Started(WebApplication app, IPEndPoint bound)
        {
            _app = app;
            LocalEndPoint = bound;
        }

        public async Task StopAsync(CancellationToken abort)
        {
            if (Interlocked.Exchange(ref _app, null) is not { } app)
            {
                return;
            }

            try
            {
                // Kestrel closes the listening socket first, then waits for the requests in flight (until abort).
                await app.StopAsync(abort).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // Aborted: what was left is closed.
            }
            finally
            {
                await app.DisposeAsync().ConfigureAwait(false);
                foreach (var route in Routes.Current.Routes)
                {
                    route.Retire();
                }
            }
        }
    }
}
