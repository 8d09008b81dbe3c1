using System.Text;
using SiteLink;

namespace SiteLink.HostedAgent;

/// <summary>A scoped service: one per tunnelled connection, disposed when it ends.</summary>
internal sealed class StatusReport(TimeProvider time, ITunnelSession session)
{
    public string Render(TunnelConnectionInfo connection) =>
        $"site agent ok at {time.GetUtcNow():O}; session {session.SessionId} on relay {session.Relay.RelayId}; you are {connection.ClientAddress}\n";
}

/// <summary>Answers each connection to the "status" endpoint with a one-line report, then closes it.</summary>
internal sealed class StatusHandler(StatusReport report) : ITunnelConnectionHandler
{
    public async Task HandleAsync(TunnelConnection connection, CancellationToken cancellationToken)
    {
        var text = report.Render(connection.Info);
        await connection.Stream.WriteAsync(Encoding.UTF8.GetBytes(text), cancellationToken);
    }
}
