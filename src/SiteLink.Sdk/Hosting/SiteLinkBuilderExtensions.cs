using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using SiteLink;
using SiteLink.Hosting;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Host behaviours of the session <c>AddSiteLink</c> registered.</summary>
public static class SiteLinkBuilderExtensions
{
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
