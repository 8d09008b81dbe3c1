using Microsoft.Extensions.DependencyInjection.Extensions;
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
}
