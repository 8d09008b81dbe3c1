using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace SiteLink.Hosting;

internal sealed class SiteLinkBuilder : ISiteLinkBuilder
{
    public SiteLinkBuilder(IServiceCollection services) => Services = services;

    public IServiceCollection Services { get; }

    public ISiteLinkBuilder AddTcpEndpoint(string name, string upstream)
    {
        // Goes through the options, so code and configuration endpoints are validated together.
        Services.Configure<TunnelSessionOptions>(o => o.Endpoints.Add(new TunnelEndpointOptions { Name = name, Upstream = upstream }));
        return this;
    }

    public ISiteLinkBuilder AddHandlerEndpoint<THandler>(string name)
        where THandler : class, ITunnelConnectionHandler
    {
        Services.TryAddScoped<THandler>();
        Services.AddSingleton(new HandlerEndpointRegistration(name, typeof(THandler)));
        return this;
    }
}

/// <summary>An in-process endpoint declared in code, whose handler is resolved from DI per connection.</summary>
internal sealed record HandlerEndpointRegistration(string Name, Type HandlerType)
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
