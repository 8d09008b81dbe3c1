using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace SiteLink.Bench;

/// <summary>
/// `aspnet-app`: one minimal API served two ways by one agent session, for the SiteLink.AspNetCore rows of the bench:
/// Kestrel over the session's tunnelled connections (endpoint <c>aspnet-transport</c>, no port) and Kestrel on a
/// loopback port that the same session forwards to (endpoint <c>aspnet-forward</c>). Same app, same session, same relay:
/// the difference is the transport.
/// </summary>
internal static class AspNetCoreApp
{
    public static async Task<int> RunAsync(Uri relayUrl, string pin, string token, int localPort)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSiteLink(o =>
            {
                o.RelayUrl = relayUrl;
                o.PinnedCertificateSha256 = pin;
                o.AuthToken = token;
                o.Proxy.UseEnvironment = false;
                o.MaxConcurrentConnections = 20000;
                o.MaxConcurrentConnectionsPerEndpoint = 20000;
            })
            .AddForward("aspnet-forward", new Uri($"tcp://127.0.0.1:{localPort}"));
        builder.WebHost.UseSiteLink();
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.ListenSiteLink("aspnet-transport");
            kestrel.Listen(System.Net.IPAddress.Loopback, localPort);
        });
        var app = builder.Build();
        app.MapGet("/", () => "hello from the ASP.NET Core app\n");
        await app.RunAsync();
        return 0;
    }
}
