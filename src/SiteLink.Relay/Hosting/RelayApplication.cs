using System.Net;
using System.Security.Cryptography.X509Certificates;
using Grpc.AspNetCore.Server.Model;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using SiteLink.Relay.Agents;
using SiteLink.Relay.CloudEndpoints;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Security;
using SiteLink.Relay.Sessions;

namespace SiteLink.Relay.Hosting;

/// <summary>Wires a relay into an ASP.NET Core application: services, Kestrel's agent port, and the gRPC endpoint.</summary>
public static class RelayApplication
{
    /// <summary>
    /// Adds the relay to <paramref name="builder"/> with <paramref name="options"/> (validated here: an invalid
    /// configuration throws <see cref="RelayConfigurationException"/> listing every problem). Returns the TLS
    /// certificate of the agent port, or null when TLS is disabled.
    /// </summary>
    public static X509Certificate2? AddRelay(WebApplicationBuilder builder, RelayOptions options)
    {
        ArgumentNullException.ThrowIfNull(builder);
        RelayOptionsValidator.ThrowIfInvalid(options);
        var certificate = RelayCertificate.Load(options.Tls);
        var chain = RelayCertificate.LoadChain(options.Tls, certificate);
        var agentEndPoint = RelayOptionsValidator.ParseEndPoint(options.AgentListen);
        var weakTokens = RelayOptionsValidator.WeakTokens(options.Tokens).ToArray();
        var limits = options.Limits;

        // Secrets are used here, once: the relay keeps hashes only (and the https endpoints' loaded certificates).
        var tokens = new AuthTokenStore(options.Tokens);
        var cloudCertificates = new CloudCertificates();
        for (var i = 0; i < options.CloudEndpoints.Count; i++)
        {
            var endpoint = options.CloudEndpoints[i];
            if (endpoint.IsHttps)
            {
                cloudCertificates[endpoint.Name] = RelayCertificate.LoadFile(endpoint.CertificatePath!, endpoint.KeyPath, endpoint.CertificatePassword,
                    $"Relay:CloudEndpoints:{i.ToString(System.Globalization.CultureInfo.InvariantCulture)}");
            }
        }

        builder.Services.AddSingleton(cloudCertificates);
        // The webhooks' secrets stay with the event hub, which signs with them.
        var webhooks = options.Webhooks.Select(Events.WebhookSubscription.From).ToArray();
        options = options.WithoutSecrets();
        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton(new RelayStartupFacts(certificate, weakTokens));
        builder.Services.AddHostedService<RelayStartupReport>();
        builder.Services.TryAddSingleton(TimeProvider.System);
        builder.Services.AddSingleton<Events.EventCounters>();
        // A persistent store registered before the relay is added takes the place of the in-memory one.
        if (options.HasControlPlane)
        {
            builder.Services.TryAddSingleton<Events.IDeadLetterStore>(sp => new ControlPlane.StoreDeadLetters(sp));
        }

        builder.Services.TryAddSingleton<Events.IDeadLetterStore>(_ => new Events.InMemoryDeadLetterStore());
        var relayId = options.RelayId;
        var eventOptions = options.Events;
        builder.Services.AddSingleton(sp => new Events.EventHub(eventOptions, relayId, webhooks, sp.GetRequiredService<Events.IDeadLetterStore>(),
            sp.GetRequiredService<Events.EventCounters>(), sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILogger<Events.EventHub>>()));
        builder.Services.TryAddSingleton<Events.IRelayEventSink>(sp => sp.GetRequiredService<Events.EventHub>());
        builder.Services.AddSingleton<Events.SessionEvents>();
        // Hosting's per-request diagnostics mean an Activity and a log scope for every data stream (one per tunnelled
        // connection, for its whole life) to log a "request started/finished" pair no relay operator reads; the relay
        // logs connections itself. Listeners of the Microsoft.AspNetCore activity source still get their activities.
        builder.Logging.AddFilter("Microsoft.AspNetCore.Hosting.Diagnostics", LogLevel.None);
        builder.Services.AddSingleton(tokens);
        builder.Services.AddSingleton(sp => new ControlPlane.TokenSources(tokens, sp.GetRequiredService<SessionRegistry>(), [.. options.Tokens],
            sp.GetRequiredService<Events.IRelayEventSink>(), sp.GetRequiredService<TimeProvider>()));
        builder.Services.AddHostedService<TokenReloader>();
        // Stops after the drain (RelayShutdown runs before every hosted service stops), so the disconnects it causes are delivered.
        builder.Services.AddHostedService(sp => sp.GetRequiredService<Events.EventHub>());
        builder.Services.AddSingleton<RelayCounters>();
        builder.Services.AddSingleton<AgentConnections>();
        builder.Services.AddSingleton<AuthFailureLog>();
        builder.Services.AddSingleton<PeerEventLog>();
        builder.Services.AddSingleton<AgentVersionPolicy>();
        builder.Services.AddSingleton<SessionRegistry>();
        builder.Services.AddSingleton<ConnectionRouter>();
        builder.Services.AddSingleton<CloudEndpointHost>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<CloudEndpointHost>());
        // After the cloud endpoints (it starts the store's), then the admin API on what it applied.
        builder.Services.AddSingleton<ControlPlane.ControlPlane>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<ControlPlane.ControlPlane>());
        builder.Services.AddSingleton<Admin.AdminApi>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<Admin.AdminApi>());
        // Drains before anything stops: cloud endpoints first, then agents, then (the host) Kestrel.
        builder.Services.AddHostedService<RelayShutdown>();
        builder.Services.TryAddEnumerable(ServiceDescriptor.Singleton<IServiceMethodProvider<TunnelService>, TunnelServiceMethods>());
        builder.Services.AddGrpc(grpc =>
        {
            // A frame plus protobuf overhead; a larger message fails only the call that sent it.
            grpc.MaxReceiveMessageSize = options.Limits.MaxFrameSize + 1024;
            grpc.EnableDetailedErrors = false;
        });

        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            var http2 = kestrel.Limits.Http2;
            // Every tunnelled connection of a session is a stream on the agent's one HTTP/2 connection (the relay
            // refuses a session's streams on any other): the control stream, the parked streams, the connections being
            // opened and those being carried, and a margin. A client that opens more gets REFUSED_STREAM.
            http2.MaxStreamsPerConnection = StreamsPerConnection(limits);
            // Kestrel's receive windows do not grow: they cap what one agent can send per round trip (8 MiB per stream,
            // 32 MiB per connection by default is ~3 Gbit/s per stream at a 20 ms round trip). They also cap what an
            // agent can make the relay hold unread: at most the connection window per agent connection
            // (docs/architecture.md, "Limits and worst cases").
            http2.InitialStreamWindowSize = limits.AgentStreamWindow;
            http2.InitialConnectionWindowSize = limits.AgentConnectionWindow;
            // Larger frames from the agent: fewer frame headers and reads per byte.
            http2.MaxFrameSize = 64 * 1024;
            // Pings find connections whose peer vanished without a FIN (a dead NAT, a pulled cable) even when no stream
            // is open to notice it.
            http2.KeepAlivePingDelay = TimeSpan.FromSeconds(30);
            http2.KeepAlivePingTimeout = TimeSpan.FromSeconds(20);
            // Headers of agent calls are small; a peer has no reason to send large ones.
            kestrel.Limits.MaxRequestHeadersTotalSize = 8 * 1024;
            http2.MaxRequestHeaderFieldSize = 8 * 1024;
            // A connection with no stream open closes after this (an agent always has its control stream).
            kestrel.Limits.KeepAliveTimeout = TimeSpan.FromSeconds(30);
            kestrel.Listen(agentEndPoint, listen =>
            {
                listen.Protocols = HttpProtocols.Http2;
                // First, before TLS: connection caps, and the pre-authentication deadline covers the handshake too.
                var connections = listen.ApplicationServices.GetRequiredService<AgentConnections>();
                listen.Use(next => context => connections.OnConnectionAsync(context, next));
                if (certificate is not null)
                {
                    listen.UseHttps(https =>
                    {
                        https.ServerCertificate = certificate;
                        // The intermediates of the configured file go with it: agents may trust only the root.
                        https.ServerCertificateChain = chain;
                        https.HandshakeTimeout = limits.PreAuthenticationTimeout;
                    });
                    // OpenSSL frees an idle connection's record buffers (34 KiB per agent session on Linux).
                    listen.Use(TlsBufferRelease.Middleware);
                }
            });
        });

        return certificate;
    }

    /// <summary>
    /// Checks that the agent port and every cloud endpoint with a fixed port can be bound, so a busy address is reported
    /// in one line (<see cref="RelayStartException"/>) instead of failing the host's start with a stack trace.
    /// </summary>
    public static void CheckAddressesAvailable(RelayOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var addresses = new List<(string What, string Address)> { ("The agent port", options.AgentListen) };
        addresses.AddRange(options.CloudEndpoints.Select(e => ($"Cloud endpoint '{e.Name}'", e.Listen)));
        foreach (var (what, text) in addresses)
        {
            if (!RelayOptionsValidator.TryParseEndPoint(text, out var endPoint) || endPoint.Port == 0)
            {
                continue;
            }

            using var probe = new System.Net.Sockets.Socket(endPoint.AddressFamily, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
            try
            {
                probe.Bind(endPoint);
            }
            catch (System.Net.Sockets.SocketException ex)
            {
                throw new RelayStartException($"{what} cannot listen on {endPoint}: {ex.Message}", ex);
            }
        }
    }

    /// <summary>The HTTP/2 streams one agent connection may have open at once.</summary>
    internal static int StreamsPerConnection(RelayLimits limits) =>
        1 + limits.MaxConcurrentStreamsPerSession + limits.MaxPendingStreamsPerSession + limits.MaxParkedStreamsPerSession + 16;

    /// <summary>Maps the agent service onto the built application.</summary>
    public static void MapRelay(WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        var connections = app.Services.GetRequiredService<AgentConnections>();
        app.Use((context, next) => connections.OnRequestAsync(context, next));
        app.MapGrpcService<TunnelService>();
    }

    /// <summary>Each cloud endpoint of a started application and the address it is bound to (the real port when configured with 0).</summary>
    public static IReadOnlyDictionary<string, IPEndPoint> CloudEndpoints(WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        return app.Services.GetRequiredService<CloudEndpointHost>().BoundEndpoints;
    }

    /// <summary>The agent URL of a started application: its bound address with the right scheme.</summary>
    public static Uri AgentUrl(WebApplication app, bool tls)
    {
        ArgumentNullException.ThrowIfNull(app);
        var address = app.Urls.First();
        var uri = new Uri(address);
        var host = uri.Host is "0.0.0.0" or "[::]" ? IPAddress.Loopback.ToString() : uri.Host;
        return new UriBuilder(tls ? Uri.UriSchemeHttps : Uri.UriSchemeHttp, host, uri.Port).Uri;
    }
}
