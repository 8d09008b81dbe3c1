using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SiteLink.Protocol.V1;
using SiteLink.Relay.CloudEndpoints;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Sessions;

namespace SiteLink.Relay.Hosting;

/// <summary>
/// Stops the relay gracefully: cloud endpoints stop accepting, every agent is told to drain (reconnect elsewhere),
/// tunnelled connections in flight may finish until <see cref="RelayOptions.DrainTimeout"/>, then the sessions end.
/// Runs in <see cref="StoppingAsync"/>, before any hosted service stops — Kestrel included, which would otherwise cut
/// the agents' control streams before they hear Drain.
/// </summary>
internal sealed class RelayShutdown : IHostedLifecycleService
{
    private readonly RelayOptions _options;
    private readonly SessionRegistry _registry;
    private readonly CloudEndpointHost _cloudEndpoints;
    private readonly RelayCounters _counters;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;

    public RelayShutdown(RelayOptions options, SessionRegistry registry, CloudEndpointHost cloudEndpoints, RelayCounters counters, TimeProvider timeProvider, ILogger<RelayShutdown> logger)
    {
        _options = options;
        _registry = registry;
        _cloudEndpoints = cloudEndpoints;
        _counters = counters;
        _timeProvider = timeProvider;
        _logger = logger;
    }

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StoppingAsync(CancellationToken cancellationToken)
    {
        await _cloudEndpoints.StopAsync(cancellationToken).ConfigureAwait(false);
        _registry.BeginDrain();
        var sessions = _registry.Sessions.ToArray();
        var drain = new RelayMessage
        {
            Drain = new Drain { Reason = "relay shutting down", DeadlineMs = (uint)Math.Min(_options.DrainTimeout.TotalMilliseconds, uint.MaxValue) },
        };
        foreach (var session in sessions)
        {
            session.Send(drain);
        }

        RelayLog.Draining(_logger, sessions.Length, _counters.ActiveConnections, _options.DrainTimeout);
        var deadline = _timeProvider.GetTimestamp();
        try
        {
            // Agents leave by themselves once their connections here are done (they reconnect elsewhere first).
            while ((_counters.ActiveConnections > 0 || _registry.SessionCount > 0) && _timeProvider.GetElapsedTime(deadline) < _options.DrainTimeout)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(20), _timeProvider, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
            // The host's own shutdown timeout is shorter than ours: close now.
        }

        if (_counters.ActiveConnections > 0)
        {
            RelayLog.DrainDeadlineReached(_logger, _counters.ActiveConnections);
        }

        foreach (var session in _registry.Sessions.ToArray())
        {
            session.End(SessionEnd.Draining);
        }
    }
}
