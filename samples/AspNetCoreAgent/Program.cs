// A minimal API served only through SiteLink: Kestrel listens on the endpoint "web" of the session and on nothing else,
// so the application has no local port. With the sample relay (samples/relay/relay.json) running:
//   SiteLink__PinnedCertificateSha256=<sha the relay printed> dotnet run --project samples/AspNetCoreAgent
//   curl http://127.0.0.1:18080/          # the relay's cloud endpoint 'acme-web' -> this application
using SiteLink.AspNetCore;

var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
builder.Services.AddSiteLink().StopHostOnFault();        // relay, token and pin from appsettings.json / SiteLink__*
builder.WebHost.UseSiteLink();
builder.WebHost.ConfigureKestrel(kestrel => kestrel.ListenSiteLink("web"));

var app = builder.Build();
app.MapGet("/", (HttpContext context) =>
{
    var tunnel = context.Features.Get<ISiteLinkConnectionFeature>()?.Info;
    return $"Hello from behind the customer's firewall, {context.Connection.RemoteIpAddress}:{context.Connection.RemotePort} " +
        $"(endpoint '{tunnel?.EndpointName}', relay stream {tunnel?.StreamId}).\n";
});
app.MapGet("/time", () => TimeProvider.System.GetUtcNow());

await app.RunAsync();
