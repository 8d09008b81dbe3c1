using Microsoft.Extensions.DependencyInjection;

namespace SiteLink.Hosting;

internal sealed class SiteLinkBuilder : ISiteLinkBuilder
{
    public SiteLinkBuilder(IServiceCollection services) => Services = services;

    public IServiceCollection Services { get; }
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
