using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace SiteLink.Hosting;

/// <summary>Stops the host when the session faults permanently (<c>AddSiteLink().StopHostOnFault()</c>).</summary>
internal sealed partial class StopHostOnFaultService : IHostedService
{
    private readonly TunnelSession _session;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly ILogger _logger;
    private int _stopped;

    public StopHostOnFaultService(TunnelSession session, IHostApplicationLifetime lifetime, ILoggerFactory? loggerFactory = null)
    {
        _session = session;
        _lifetime = lifetime;
        _logger = (ILogger?)loggerFactory?.CreateLogger("SiteLink.Hosting") ?? NullLogger.Instance;
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _session.StateChanged += OnStateChanged;
        // The session started before this service: it may have faulted already.
        if (_session.State == TunnelSessionState.Faulted)
        {
            Stop(_session.Fault);
        }

        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken)
    {
        _session.StateChanged -= OnStateChanged;
        return Task.CompletedTask;
    }

    private void OnStateChanged(object? sender, TunnelStateChangedEventArgs e)
    {
        if (e.State == TunnelSessionState.Faulted)
        {
            Stop(e.Exception as TunnelException);
        }
    }

    private void Stop(TunnelException? fault)
    {
        if (Interlocked.Exchange(ref _stopped, 1) == 1)
        {
            return;
        }

        StoppingHost(_logger, fault?.TunnelError ?? TunnelError.Unknown, fault?.Message ?? "the session faulted");
        _lifetime.StopApplication();
    }

    [LoggerMessage(1, LogLevel.Critical, "Stopping the application: the SiteLink session faulted and will not retry ({TunnelError}): {Message}")]
    private static partial void StoppingHost(ILogger logger, TunnelError tunnelError, string message);
}
