using SiteLink;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Declares the endpoints of the session <c>AddSiteLink</c> registered.</summary>
public interface ISiteLinkBuilder
{
    /// <summary>The service collection SiteLink was added to.</summary>
    IServiceCollection Services { get; }

    /// <summary>Forwards connections to <paramref name="name"/> to the TCP service at <paramref name="upstream"/> (<c>host:port</c>).</summary>
    ISiteLinkBuilder AddTcpEndpoint(string name, string upstream);

    /// <summary>
    /// Serves connections to <paramref name="name"/> with <typeparamref name="THandler"/>, resolved from dependency
    /// injection per connection in its own scope. <typeparamref name="THandler"/> is registered as scoped unless it
    /// already is registered.
    /// </summary>
    ISiteLinkBuilder AddHandlerEndpoint<THandler>(string name)
        where THandler : class, ITunnelConnectionHandler;

    /// <summary>
    /// Stops the host when the session faults permanently (<see cref="TunnelSessionState.Faulted"/>: a rejected
    /// authtoken, an untrusted relay certificate, an unsupported version, a refused session), after logging it at
    /// Critical, so a service manager sees the process end instead of a host that stays up serving nothing. Without
    /// it a faulted session leaves the host running (the fault is logged at Error and reported by
    /// <see cref="ITunnelSession.State"/> and <see cref="ITunnelSession.Fault"/>). After the host stops,
    /// <see cref="ITunnelSession.Fault"/> and its <see cref="TunnelException.TunnelError"/> say why, e.g. to choose the
    /// process's exit code.
    /// </summary>
    ISiteLinkBuilder StopHostOnFault();
}
