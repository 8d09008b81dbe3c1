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

}
