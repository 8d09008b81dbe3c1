using SiteLink.Internal;

namespace SiteLink.Relay.Diagnostics;

/// <summary>
/// One sampler per kind of warning a peer can cause at will (refused handshakes and sessions, unknown streams, protocol
/// errors, refused binds): the first of each kind per second is logged, with how many were held back since. A flood of
/// bad calls costs a line a second, not a line a call.
/// </summary>
internal sealed class PeerEventLog
{
    public PeerEventLog(TimeProvider timeProvider)
    {
        var second = TimeSpan.FromSeconds(1);
        Handshakes = new LogSampler(timeProvider, second);
        Sessions = new LogSampler(timeProvider, second);
        UnknownStreams = new LogSampler(timeProvider, second);
        ProtocolErrors = new LogSampler(timeProvider, second);
        Binds = new LogSampler(timeProvider, second);
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
}
