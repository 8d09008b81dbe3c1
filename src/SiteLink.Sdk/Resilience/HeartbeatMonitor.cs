namespace SiteLink.Resilience;

/// <summary>
/// Sends a heartbeat every interval and declares the connection dead when nothing at all arrives from the relay for
/// the tolerance after a send. Any message counts as a sign of life, so a busy connection is never declared dead.
/// All timing goes through <see cref="TimeProvider"/>.
/// </summary>
internal sealed class HeartbeatMonitor : IDisposable
{
    private readonly TimeSpan _interval;
    private readonly TimeSpan _tolerance;
    private readonly TimeProvider _time;
    private readonly Func<ulong, bool> _send;
    private readonly Action<TimeSpan> _onDead;
    private readonly Action<TimeSpan>? _onRoundTrip;
    private readonly object _gate = new();
    private ITimer? _ticker;
    private ITimer? _deadline;
    private ulong _sequence;
    private long _lastSentAt;
    private bool _awaiting;
    private bool _stopped;
    private long _lastRoundTripTicks = -1;

    /// <param name="interval">Time between heartbeats.</param>
    /// <param name="tolerance">Silence after a send that means the connection is dead.</param>
    /// <param name="time">The clock.</param>
    /// <param name="send">Sends heartbeat number n; false when the connection can no longer send.</param>
    /// <param name="onDead">Called once, with the silence observed, when the connection is declared dead.</param>
    /// <param name="onRoundTrip">Called with each answered heartbeat's round-trip time.</param>
    public HeartbeatMonitor(TimeSpan interval, TimeSpan tolerance, TimeProvider time, Func<ulong, bool> send, Action<TimeSpan> onDead, Action<TimeSpan>? onRoundTrip = null)
    {
        _onRoundTrip = onRoundTrip;
        _interval = interval;
        _tolerance = tolerance;
        _time = time;
        _send = send;
        _onDead = onDead;
    }

    /// <summary>The round-trip time of the last answered heartbeat; null before the first answer.</summary>
    public TimeSpan? LastRoundTrip
    {
        get
        {
            var ticks = Interlocked.Read(ref _lastRoundTripTicks);
            return ticks < 0 ? null : TimeSpan.FromTicks(ticks);
        }
    }

    public void Start()
    {
        lock (_gate)
        {
            _deadline = _time.CreateTimer(static s => ((HeartbeatMonitor)s!).OnDeadline(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            _ticker = _time.CreateTimer(static s => ((HeartbeatMonitor)s!).OnTick(), this, _interval, _interval);
        }
    }

    /// <summary>Anything arrived from the relay: the connection is alive.</summary>
    public void OnMessageReceived()
    {
        lock (_gate)
        {
            if (_awaiting)
            {
                _awaiting = false;
                _deadline?.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            }
        }
    }

    /// <summary>The relay answered heartbeat <paramref name="sequence"/>.</summary>
    public void OnAck(ulong sequence)
    {
        long sentAt;
        lock (_gate)
        {
            if (sequence != _sequence)
            {
                return;
            }

            sentAt = _lastSentAt;
        }

        var roundTrip = _time.GetElapsedTime(sentAt);
        Interlocked.Exchange(ref _lastRoundTripTicks, roundTrip.Ticks);
        _onRoundTrip?.Invoke(roundTrip);
    }

    private void OnTick()
    {
        ulong sequence;
        lock (_gate)
        {
            if (_stopped)
            {
                return;
            }

            sequence = ++_sequence;
            _lastSentAt = _time.GetTimestamp();
            if (!_awaiting)
            {
                // The tolerance runs from the first send that is not followed by any message.
                _awaiting = true;
                _deadline?.Change(_tolerance, Timeout.InfiniteTimeSpan);
            }
        }

        _send(sequence);
    }

    private void OnDeadline()
    {
        lock (_gate)
        {
            if (_stopped || !_awaiting)
            {
                return;
            }

            _stopped = true;
            _ticker?.Dispose();
        }

        _onDead(_tolerance);
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _stopped = true;
            _ticker?.Dispose();
            _deadline?.Dispose();
        }
    }
}
