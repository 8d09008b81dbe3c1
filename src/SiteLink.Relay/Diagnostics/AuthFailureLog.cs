using Microsoft.Extensions.Logging;
using SiteLink.Internal;

namespace SiteLink.Relay.Diagnostics;

/// <summary>
/// Failed authentications: every one counted, one per 10 seconds logged with how many were held back, so token
/// guessing or a misconfigured fleet cannot flood the log. The secret is never logged.
/// </summary>
internal sealed class AuthFailureLog : IDisposable
{
    private readonly RelayCounters _counters;
    private readonly ILogger _logger;
    private readonly LogSampler _sampler;

    public AuthFailureLog(RelayCounters counters, TimeProvider timeProvider, ILogger<AuthFailureLog> logger)
    {
        _counters = counters;
        _logger = logger;
        _sampler = new LogSampler(timeProvider, TimeSpan.FromSeconds(10), (count, interval) => RelayLog.HeldBackSummary(_logger, count, "failed authentication(s)", interval));
    }

    public void Dispose() => _sampler.Dispose();

    public void Record(string peer, string reason)
    {
        _counters.OnAuthenticationFailed();
        if (_sampler.ShouldLog(out var suppressed))
        {
            RelayLog.AuthenticationFailed(_logger, peer, reason, suppressed);
        }
    }
}
