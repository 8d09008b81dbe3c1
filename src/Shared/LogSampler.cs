namespace SiteLink.Internal;

/// <summary>
/// Lets through one log message per interval for an event a peer can cause at will (failed authentication, refused
/// connections), and counts the ones it held back, so a flood costs a line per interval, not a line per attempt.
/// Every occurrence is still counted by the caller (the relay's counters, the agent's metrics). Compiled into both assemblies.
/// </summary>
internal sealed class LogSampler
{
    private readonly TimeProvider _timeProvider;
    private readonly long _interval;
    private long _next;
    private long _suppressed;

    public LogSampler(TimeProvider timeProvider, TimeSpan interval)
    {
        _timeProvider = timeProvider;
        _interval = (long)(interval.TotalSeconds * timeProvider.TimestampFrequency);
        _next = long.MinValue;
    }

    /// <summary>
    /// True when this occurrence should be logged; <paramref name="suppressed"/> then says how many were held back
    /// since the last one that was.
    /// </summary>
    public bool ShouldLog(out long suppressed)
    {
        var now = _timeProvider.GetTimestamp();
        var next = Volatile.Read(ref _next);
        if (now >= next && Interlocked.CompareExchange(ref _next, now + _interval, next) == next)
        {
            suppressed = Interlocked.Exchange(ref _suppressed, 0);
            return true;
        }

        Interlocked.Increment(ref _suppressed);
        suppressed = 0;
        return false;
    }
}
