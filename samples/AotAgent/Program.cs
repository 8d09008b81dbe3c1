// A SiteLink agent compiled ahead of time to a native executable: options from configuration ("SiteLink" section:
// appsettings.json, SiteLink__* environment variables, --SiteLink:RelayUrl=... arguments), one in-process endpoint
// "status". `AotAgent diagnose [--json]` prints the connectivity diagnosis instead (so the native build compiles it too).
// See AotAgent.csproj for why it exists.
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using SiteLink;

var diagnose = args is ["diagnose", ..];
var builder = Host.CreateApplicationBuilder(diagnose ? [.. args.Skip(1).Where(a => a != "--json")] : args);
builder.Services.AddSiteLink()
    .AddConnectionHandler<StatusHandler>("status", endpoint => endpoint.Description = "native agent status")
    .StopHostOnFault();

using var host = builder.Build();
if (diagnose)
{
    var report = await TunnelDiagnostics.RunAsync(host.Services.GetRequiredService<IOptions<TunnelSessionOptions>>().Value);
    Console.WriteLine(args.Contains("--json") ? report.ToJson() : report.ToString());
    return report.Succeeded ? 0 : 1;
}

// Resolved before running: RunAsync disposes the host, and its services with it, when it returns.
var session = host.Services.GetRequiredService<ITunnelSession>();
await host.RunAsync();
return session.Fault is null ? 0 : 1;

/// <summary>Answers every connection with one line about the agent.</summary>
internal sealed class StatusHandler(ITunnelSession session) : ITunnelConnectionHandler
{
    public async Task HandleAsync(TunnelConnection connection, CancellationToken cancellationToken)
    {
        var line = $"native SiteLink agent, session {session.SessionId}, {session.ActiveConnections} connection(s), client {connection.Info.ClientAddress}\n";
        await connection.Stream.WriteAsync(Encoding.UTF8.GetBytes(line), cancellationToken);
    }
}
