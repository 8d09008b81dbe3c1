using Microsoft.Extensions.Logging;
using SiteLink.Internal;

namespace SiteLink.Diagnostics;

/// <summary>The warnings the relay (or the public clients behind it) can cause once per offer.</summary>
internal enum OfferEvent
{
    UnknownBind,
    UpstreamConnectFailed,
    HandlerFailed,
    ListenerBacklogFull,
    StreamOpenFailed,
    ConnectionLimitReached,
    MalformedOffer,
    RelayError,
}

/// <summary>
/// One log line per second for each <see cref="OfferEvent"/>, with the count held back since: a flood of offers (a
/// misbehaving relay, or public clients against a dead upstream) cannot flood the application's log. Every occurrence is
/// still counted in the <c>sitelink.connections</c> metric. A burst that stops is summarised at the end of its second
/// (event 36).
/// </summary>
internal sealed class OfferLog : IDisposable
{
    private readonly LogSampler[] _samplers;

    public OfferLog(TimeProvider timeProvider, ILogger logger)
    {
        _samplers = Enum.GetValues<OfferEvent>()
            .Select(kind => new LogSampler(timeProvider, TimeSpan.FromSeconds(1), (count, interval) => SessionLog.HeldBackSummary(logger, count, kind, interval)))
            .ToArray();
    }

    public void Dispose()
    {
        foreach (var sampler in _samplers)
        {
            sampler.Dispose();
        }
    }

    /// <summary>Whether to log this occurrence of <paramref name="kind"/>; <paramref name="suppressed"/> says how many were held back.</summary>
    public bool ShouldLog(OfferEvent kind, out long suppressed) => _samplers[(int)kind].ShouldLog(out suppressed);
}
