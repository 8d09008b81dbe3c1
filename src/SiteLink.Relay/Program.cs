using Microsoft.AspNetCore.Connections;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Hosting;
using SiteLink.Relay.Security;

// The standalone relay: configuration from appsettings.json, an optional --config file, environment variables
// (SITELINK_ prefix, e.g. SITELINK_Relay__AgentListen) and the command line. The JSON files are watched: a change to
// Relay:Tokens applies at once (sessions of removed or changed tokens end); other settings need a restart.
var builder = WebApplication.CreateBuilder(args);
var configFile = builder.Configuration["config"];
if (configFile is not null)
{
    builder.Configuration.AddJsonFile(Path.GetFullPath(configFile), optional: false, reloadOnChange: true);
}

builder.Configuration.AddEnvironmentVariables("SITELINK_");
builder.Configuration.AddCommandLine(args);

var options = RelayConfiguration.Load(builder.Configuration);

System.Security.Cryptography.X509Certificates.X509Certificate2? certificate;
try
{
    certificate = RelayApplication.AddRelay(builder, options);
    RelayApplication.CheckAddressesAvailable(options);
}
catch (RelayConfigurationException ex)
{
    Console.Error.WriteLine(ex.Message);
    return 2;
}
catch (RelayStartException ex)
{
    Console.Error.WriteLine($"SiteLink relay cannot start: {ex.Message}");
    return 3;
}

var app = builder.Build();
RelayApplication.MapRelay(app);
try
{
    await app.StartAsync();
}
catch (Exception ex) when (ex is RelayStartException or IOException or AddressInUseException)
{
    // One line naming what could not start and where (e.g. "address already in use"). (Should the address be taken
    // between the check above and here, the host also logs its own error.)
    Console.Error.WriteLine($"SiteLink relay cannot start: {ex.Message}");
    await app.DisposeAsync();
    return 3;
}

var agentUrl = RelayApplication.AgentUrl(app, certificate is not null);
Console.WriteLine($"SiteLink relay '{options.RelayId}' listening for agents on {agentUrl}");
if (certificate is not null)
{
    Console.WriteLine($"TLS certificate SHA-256 (pin it in agents): {RelayCertificate.Sha256Of(certificate)}");
}

foreach (var (name, address) in RelayApplication.CloudEndpoints(app))
{
    Console.WriteLine($"Cloud endpoint '{name}' on tcp://{address}");
}

await app.WaitForShutdownAsync();
return 0;
