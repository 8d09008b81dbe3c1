using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace SiteLink.Hosting;

internal sealed class SiteLinkBuilder : ISiteLinkBuilder
{
    public SiteLinkBuilder(IServiceCollection services) => Services = services;

    public IServiceCollection Services { get; }

    public ISiteLinkBuilder AddForward(string name, Uri upstream, Action<EndpointOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(upstream);
        var endpoint = new ForwardEndpointOptions { Name = name, Upstream = upstream.OriginalString };
        configure?.Invoke(endpoint);
        // Goes through the options, so code and configuration endpoints are validated together.
        Services.Configure<TunnelSessionOptions>(o => o.Endpoints.Add(endpoint.CopyTo(new ForwardEndpointOptions { Name = endpoint.Name, Upstream = endpoint.Upstream })));
        return this;
    }

    public ISiteLinkBuilder AddConnectionHandler<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] THandler>(string name, Action<EndpointOptions>? configure = null)
        where THandler : class, ITunnelConnectionHandler
    {
        var options = new EndpointOptions();
        configure?.Invoke(options);
        Services.TryAddScoped<THandler>();
        Services.AddSingleton(new HandlerEndpointRegistration(name, typeof(THandler), options));
        return this;
    }
}

/// <summary>An in-process endpoint declared in code, whose handler is resolved from DI per connection.</summary>
internal sealed record HandlerEndpointRegistration(string Name, Type HandlerType, EndpointOptions Options)
{
    public TunnelConnectionHandler CreateHandler(IServiceProvider services) => async (connection, cancellationToken) =>
    {
        var scope = services.CreateAsyncScope();
        await using (scope.ConfigureAwait(false))
        {
            var handler = (ITunnelConnectionHandler)scope.ServiceProvider.GetRequiredService(HandlerType);
            await handler.HandleAsync(connection, cancellationToken).ConfigureAwait(false);
        }
    };
}
