using Microsoft.Extensions.Logging;
using SiteLink.Internal;

namespace SiteLink.Relay.Diagnostics;

/// <summary>
/// One sampler per kind of warning a peer can cause at will (refused handshakes and sessions, unknown streams, protocol
/// errors, refused binds, agents refused for their version): the first of each kind per second is logged, with how many were held back since. A flood of
/// bad calls costs a line a second, not a line a call. With a logger, a burst that stops is summarised at the end of its
/// second (event 39).
/// </summary>
internal sealed class PeerEventLog : IDisposable
{
    public PeerEventLog(TimeProvider timeProvider, ILogger<PeerEventLog>? logger = null)
    {
        var second = TimeSpan.FromSeconds(1);
        LogSampler Sampler(string what) => new(timeProvider, second, logger is null ? null : (count, interval) => RelayLog.HeldBackSummary(logger, count, what, interval));
        Handshakes = Sampler("refused control stream(s)");
        Sessions = Sampler("refused session(s)");
        UnknownStreams = Sampler("request(s) for unknown streams");
        ProtocolErrors = Sampler("protocol error(s)");
        Binds = Sampler("refused bind(s)");
        PolicyDenials = Sampler("policy denial(s)");
        AgentVersions = Sampler("agent(s) refused for their SDK version");
    }

    /// <summary>Control streams refused before their session started (no or bad Hello, timeouts).</summary>
    public LogSampler Handshakes { get; }

    /// <summary>Sessions refused (token limits, handshakes in progress).</summary>
    public LogSampler Sessions { get; }

    /// <summary>Stream calls for unknown, used, foreign or misplaced streams.</summary>
    public LogSampler UnknownStreams { get; }

    /// <summary>Malformed or out-of-place messages of live sessions.</summary>
    public LogSampler ProtocolErrors { get; }

    /// <summary>Refused binds.</summary>
    public LogSampler Binds { get; }

    /// <summary>Connections and requests denied by a cloud endpoint's traffic policy.</summary>
    public LogSampler PolicyDenials { get; }

    /// <summary>Agents refused at Hello for an SDK older than the relay's minimum.</summary>
    public LogSampler AgentVersions { get; }

    public void Dispose()
    {
        Handshakes.Dispose();
        Sessions.Dispose();
        UnknownStreams.Dispose();
        ProtocolErrors.Dispose();
        Binds.Dispose();
        PolicyDenials.Dispose();
        AgentVersions.Dispose();
    }
}
