using System.Diagnostics.CodeAnalysis;
using SiteLink;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Declares the endpoints of the session <c>AddSiteLink</c> registered.</summary>
public interface ISiteLinkBuilder
{
    /// <summary>The service collection SiteLink was added to.</summary>
    IServiceCollection Services { get; }

    /// <summary>
    /// Forwards connections to <paramref name="name"/> to the service at <paramref name="upstream"/>
    /// (<c>tcp://host:port</c>), as <see cref="ITunnelSession.ForwardAsync(string, Uri, EndpointOptions?, CancellationToken)"/>
    /// does; the same as an entry of the <c>SiteLink:Endpoints</c> configuration section, and validated with them when
    /// the host starts.
    /// </summary>
    /// <param name="name">The internal endpoint name.</param>
    /// <param name="upstream">Where connections go, e.g. <c>new Uri("tcp://10.0.0.12:5432")</c>.</param>
    /// <param name="configure">Sets the endpoint's options (description, metadata); null for the defaults.</param>
    ISiteLinkBuilder AddForward(string name, Uri upstream, Action<EndpointOptions>? configure = null);

    /// <summary>
    /// Serves connections to <paramref name="name"/> with <typeparamref name="THandler"/>, resolved from dependency
    /// injection per connection in its own scope. <typeparamref name="THandler"/> is registered as scoped unless it
    /// already is registered.
    /// </summary>
    /// <param name="name">The internal endpoint name.</param>
    /// <param name="configure">Sets the endpoint's options (description, metadata); null for the defaults.</param>
    ISiteLinkBuilder AddConnectionHandler<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] THandler>(string name, Action<EndpointOptions>? configure = null)
        where THandler : class, ITunnelConnectionHandler;

}
