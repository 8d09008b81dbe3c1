using Microsoft.Extensions.Hosting;

namespace SiteLink.Hosting;

/// <summary>
/// Starts the session with the host without blocking it (the session connects, and keeps trying, in the background)
/// and closes it when the host stops: new connections stop at once, those in flight may finish until the session's
/// DrainTimeout or the host's shutdown timeout, whichever comes first.
/// </summary>
internal sealed class SiteLinkHostedService : IHostedService
{
    private readonly TunnelSession _session;

    public SiteLinkHostedService(TunnelSession session) => _session = session;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _session.StartInBackground();
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => _session.CloseAsync(cancellationToken);
}
