namespace SiteLink.Relay.Sessions;

/// <summary>
/// Calls <c>onIdle</c> once when nothing was <see cref="Touch"/>ed for <c>timeout</c>. One timer, re-armed only when it
/// fires early (about once per timeout while the connection is busy), and a timestamp write per touch.
/// </summary>
internal sealed class IdleWatch : IDisposable
{
    private readonly TimeProvider _timeProvider;
    private readonly TimeSpan _timeout;
    private readonly Action _onIdle;
    private readonly ITimer? _timer;
    private long _lastActivity;
    private int _fired;

    public IdleWatch(TimeSpan timeout, TimeProvider timeProvider, Action onIdle)
    {
        _timeProvider = timeProvider;
        _timeout = timeout;
        _onIdle = onIdle;
        _lastActivity = timeProvider.GetTimestamp();
        if (timeout != Timeout.InfiniteTimeSpan)
        {
            _timer = timeProvider.CreateTimer(static state => ((IdleWatch)state!).Check(), this, timeout, Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>Whether the connection was found idle.</summary>
    public bool HasFired => Volatile.Read(ref _fired) != 0;

    /// <summary>Something moved: the idle time starts again.</summary>
    public void Touch() => Volatile.Write(ref _lastActivity, _timeProvider.GetTimestamp());

    private void Check()
    {
        var idle = _timeProvider.GetElapsedTime(Volatile.Read(ref _lastActivity));
        if (idle < _timeout)
        {
            try
            {
                _timer!.Change(_timeout - idle, Timeout.InfiniteTimeSpan);
            }
            catch (ObjectDisposedException)
            {
                // The connection ended meanwhile.
            }

            return;
        }

        if (Interlocked.Exchange(ref _fired, 1) == 0)
        {
            _onIdle();
        }
    }

    public void Dispose() => _timer?.Dispose();
}
