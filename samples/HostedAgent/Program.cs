// A vendor's existing worker service that also serves its customer's network through SiteLink.
// The relay, token and TCP endpoints come from appsettings.json (section "SiteLink") or environment variables
// (SiteLink__AuthToken=...); the "status" endpoint is served in-process by StatusHandler, resolved from DI.
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using SiteLink;
using SiteLink.HostedAgent;

// The content root is the binary's folder: its appsettings.json applies wherever the service is started from.
var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = args, ContentRootPath = AppContext.BaseDirectory });
builder.Services.AddSingleton(TimeProvider.System);
builder.Services.AddScoped<StatusReport>();
builder.Services.AddSiteLink()
    .AddConnectionHandler<StatusHandler>("status", endpoint => endpoint.Description = "Agent status page")
    // A permanent fault (bad token, untrusted relay, unsupported version) stops the service instead of leaving it up
    // and silent; the exit code below tells the service manager.
    .StopHostOnFault();

using var host = builder.Build();
// Resolved before running: RunAsync disposes the host, and its services with it, when it returns.
var session = host.Services.GetRequiredService<ITunnelSession>();
await host.RunAsync();
return session.Fault is null ? 0 : 1;
