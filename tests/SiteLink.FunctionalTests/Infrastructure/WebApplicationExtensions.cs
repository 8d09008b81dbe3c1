using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;

namespace SiteLink.FunctionalTests.Infrastructure;

internal static class WebApplicationExtensions
{
    /// <summary>Starts a test's Kestrel server and returns the one address it listens on (with the real port when it asked for 0).</summary>
    public static async Task<Uri> StartAndGetAddressAsync(this WebApplication app)
    {
        await app.StartAsync().DefaultTimeout();
        return new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single());
    }
}
