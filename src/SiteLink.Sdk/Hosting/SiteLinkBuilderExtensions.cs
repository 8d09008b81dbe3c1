using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using SiteLink;
using SiteLink.Hosting;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Endpoints and host behaviours of the session <c>AddSiteLink</c> registered.</summary>
public static class SiteLinkBuilderExtensions
{
    /// <summary>
    /// Forwards connections to <paramref name="name"/> to the service at <paramref name="upstream"/>
    /// (<c>tcp://host:port</c>), as <see cref="ITunnelSession.ForwardAsync(string, Uri, EndpointOptions?, CancellationToken)"/>
    /// does; the same as an entry of the <c>SiteLink:Endpoints</c> configuration section, and validated with them when
    /// the host starts.
    /// </summary>
    /// <param name="builder">The SiteLink builder.</param>
    /// <param name="name">The internal endpoint name.</param>
    /// <param name="upstream">Where connections go, e.g. <c>new Uri("tcp://10.0.0.12:5432")</c>.</param>
    /// <param name="configure">Sets the endpoint's options (description, metadata); null for the defaults.</param>
    public static ISiteLinkBuilder AddForward(this ISiteLinkBuilder builder, string name, Uri upstream, Action<EndpointOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(upstream);
        var options = new EndpointOptions();
        configure?.Invoke(options);
        var endpoint = ForwardEndpointOptions.From(name, upstream.OriginalString, options);

        // Goes through the options, so code and configuration endpoints are validated together.
        builder.Services.Configure<TunnelSessionOptions>(o => o.Endpoints.Add(endpoint.Snapshot()));
        return builder;
    }

    /// <summary>
    /// Serves connections to <paramref name="name"/> with <typeparamref name="THandler"/>, resolved from dependency
    /// injection per connection in its own scope. <typeparamref name="THandler"/> is registered as scoped unless it
    /// already is registered.
    /// </summary>
    /// <param name="builder">The SiteLink builder.</param>
    /// <param name="name">The internal endpoint name.</param>
    /// <param name="configure">Sets the endpoint's options (description, metadata); null for the defaults.</param>
    public static ISiteLinkBuilder AddConnectionHandler<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] THandler>(
        this ISiteLinkBuilder builder, string name, Action<EndpointOptions>? configure = null)
        where THandler : class, ITunnelConnectionHandler
    {
        ArgumentNullException.ThrowIfNull(builder);
        var options = new EndpointOptions();
        configure?.Invoke(options);
        builder.Services.TryAddScoped<THandler>();
        builder.Services.AddSingleton(new HandlerEndpointRegistration(name, typeof(THandler), options.Snapshot()));
        return builder;
    }

    /// <summary>
    /// Stops the host when the session faults permanently (<see cref="TunnelSessionState.Faulted"/>: a rejected
    /// authtoken, an untrusted relay certificate, an unsupported version, a refused session), after logging it at
    /// Critical, so a service manager sees the process end instead of a host that stays up serving nothing. Without
    /// it a faulted session leaves the host running (the fault is logged at Error and reported by
    /// <see cref="ITunnelSession.State"/> and <see cref="ITunnelSession.Fault"/>). After the host stops,
    /// <see cref="ITunnelSession.Fault"/> and its <see cref="TunnelException.TunnelError"/> say why, e.g. to choose the
    /// process's exit code.
    /// </summary>
    public static ISiteLinkBuilder StopHostOnFault(this ISiteLinkBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, StopHostOnFaultService>());
        return builder;
    }

    /// <summary>
    /// Registers a health check of the session (<c>services.AddHealthChecks()</c> included): Healthy while connected,
    /// Degraded while connecting or reconnecting, <paramref name="failureStatus"/> (default Unhealthy) when faulted or
    /// closed; its data carries the state, the relay, the endpoints bound and the last heartbeat round trip.
    /// </summary>
    /// <param name="builder">The SiteLink builder.</param>
    /// <param name="name">The check's name. Default: <c>sitelink</c>.</param>
    /// <param name="failureStatus">The status reported when the session faulted or closed. Default: Unhealthy.</param>
    /// <param name="tags">Tags to filter checks by (e.g. <c>ready</c>).</param>
    public static ISiteLinkBuilder AddHealthCheck(this ISiteLinkBuilder builder, string name = "sitelink", HealthStatus? failureStatus = null, IEnumerable<string>? tags = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        builder.Services.AddHealthChecks().Add(new HealthCheckRegistration(
            name, services => new TunnelSessionHealthCheck(services.GetRequiredService<ITunnelSession>()), failureStatus, tags));
        return builder;
    }
}
