namespace SiteLink.Internal;

/// <summary>
/// Lets through one log message per interval for an event a peer can cause at will (failed authentication, refused
/// connections), and counts the ones it held back, so a flood costs a line per interval, not a line per attempt.
/// The held-back count is reported by the next message let through or, when a summary callback is given, at the end
/// of the interval (so a burst that stops is still summarised): at most one detailed line and one summary per
/// interval. Every occurrence is still counted by the caller (the relay's counters, the agent's metrics). Compiled into
/// both assemblies.
/// </summary>
internal sealed class LogSampler : IDisposable
{
    private readonly TimeProvider _timeProvider;
    private readonly long _interval;
    private readonly Action<long, TimeSpan>? _summary;
    private readonly ITimer? _flush;
    private long _next;
    private long _suppressed;
    private int _armed;

    /// <param name="timeProvider">The clock.</param>
    /// <param name="interval">At most one message (or summary) per interval.</param>
    /// <param name="summary">Called with the number held back and the interval when an interval ends with some held back.</param>
    public LogSampler(TimeProvider timeProvider, TimeSpan interval, Action<long, TimeSpan>? summary = null)
    {
        _timeProvider = timeProvider;
        _interval = (long)(interval.TotalSeconds * timeProvider.TimestampFrequency);
        _next = long.MinValue;
        _summary = summary;
        if (summary is not null)
        {
            _flush = timeProvider.CreateTimer(static state => ((LogSampler)state!).Flush(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>
    /// True when this occurrence should be logged; <paramref name="suppressed"/> then says how many were held back
    /// since the last one that was.
    /// </summary>
    public bool ShouldLog(out long suppressed)
    {
        if (TryOpenInterval())
        {
            suppressed = Interlocked.Exchange(ref _suppressed, 0);
            return true;
        }

        if (Interlocked.Increment(ref _suppressed) == 1)
        {
            Arm();
        }

        suppressed = 0;
        return false;
    }

    private bool TryOpenInterval()
    {
        var now = _timeProvider.GetTimestamp();
        var next = Volatile.Read(ref _next);
        return now >= next && Interlocked.CompareExchange(ref _next, now + _interval, next) == next;
    }

    private void Arm()
    {
        if (_flush is null || Interlocked.Exchange(ref _armed, 1) == 1)
        {
            return;
        }

        var remaining = Volatile.Read(ref _next) - _timeProvider.GetTimestamp();
        var due = remaining <= 0 ? TimeSpan.Zero : TimeSpan.FromSeconds((double)remaining / _timeProvider.TimestampFrequency) + TimeSpan.FromMilliseconds(1);
        _flush.Change(due, Timeout.InfiniteTimeSpan);
    }

    private void Flush()
    {
        // Interlocked: a full fence, so the read of _suppressed below cannot move before it. Otherwise a ShouldLog
        // that counts the first held-back occurrence (and sees _armed still 1) and this read (seeing 0) could both
        // skip arming, and that count would never be summarised.
        Interlocked.Exchange(ref _armed, 0);
        if (Volatile.Read(ref _suppressed) == 0)
        {
            return;
        }

        if (_timeProvider.GetTimestamp() < Volatile.Read(ref _next))
        {
            // The interval is not over (a message was let through meanwhile and opened a new one): summarise at its end.
            Arm();
            return;
        }

        // The summary does not open an interval: the next occurrence is still logged in full, with its details.
        var held = Interlocked.Exchange(ref _suppressed, 0);
        if (held <= 0)
        {
            return;
        }

        try
        {
            _summary!(held, TimeSpan.FromSeconds((double)_interval / _timeProvider.TimestampFrequency));
        }
#pragma warning disable CA1031 // On a timer thread: a failing log provider must not take the process down.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    public void Dispose() => _flush?.Dispose();
}
