using System.Globalization;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace SiteLink.Hosting;

/// <summary>
/// The session's health for <c>/healthz</c>-style probes (<c>AddSiteLink().AddHealthCheck()</c>): Healthy while
/// connected, Degraded while connecting or reconnecting (it is trying and may recover), Unhealthy when faulted (it will
/// not retry: a token, a certificate, a version) or closed.
/// </summary>
internal sealed class TunnelSessionHealthCheck(ITunnelSession session) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var data = new Dictionary<string, object>
        {
            ["state"] = session.State.ToString(),
            ["endpoints"] = session.Endpoints.Count,
        };
        if (!string.IsNullOrEmpty(session.Relay.RelayId))
        {
            data["relay"] = session.Relay.RelayId;
        }

        if (session.LastHeartbeatRoundTrip is { } rtt)
        {
            data["heartbeat_rtt_ms"] = Math.Round(rtt.TotalMilliseconds, 1);
        }

        // Several relays: each one's state, and Degraded while any is down (the session serves through the others).
        var relays = session.Relays;
        var down = relays.Count(r => r.State != TunnelSessionState.Connected);
        if (relays.Count > 1)
        {
            foreach (var relay in relays)
            {
                var rttText = relay.LastHeartbeatRoundTrip is { } r ? string.Create(CultureInfo.InvariantCulture, $", rtt {r.TotalMilliseconds:0.0} ms") : "";
                data[$"relay:{relay.Url}"] = $"{relay.State}{(relay.RelayId.Length > 0 ? $" ({relay.RelayId}{(relay.Region.Length > 0 ? $", {relay.Region}" : "")})" : "")}{rttText}";
            }
        }

        var result = session.State switch
        {
            TunnelSessionState.Connected when relays.Count > 1 && down > 0 => new HealthCheckResult(HealthStatus.Degraded,
                string.Create(CultureInfo.InvariantCulture, $"connected to {relays.Count - down} of {relays.Count} relays, {session.Endpoints.Count} endpoint(s) bound"), null, data),
            TunnelSessionState.Connected when relays.Count > 1 => HealthCheckResult.Healthy(
                string.Create(CultureInfo.InvariantCulture, $"connected to all {relays.Count} relays, {session.Endpoints.Count} endpoint(s) bound"), data),
            TunnelSessionState.Connected => HealthCheckResult.Healthy(
                string.Create(CultureInfo.InvariantCulture, $"connected to relay {session.Relay.RelayId}, {session.Endpoints.Count} endpoint(s) bound"), data),
            TunnelSessionState.Connecting => new HealthCheckResult(HealthStatus.Degraded, "connecting to the relay", null, data),
            TunnelSessionState.Reconnecting => new HealthCheckResult(HealthStatus.Degraded, "the connection to the relay was lost; reconnecting", null, data),
            TunnelSessionState.Faulted => new HealthCheckResult(context.Registration.FailureStatus,
                $"faulted, will not retry ({session.Fault?.TunnelError}): {session.Fault?.Message}", session.Fault, data),
            _ => new HealthCheckResult(context.Registration.FailureStatus, "the session is closed", null, data),
        };
        return Task.FromResult(result);
    }
}
