namespace SiteLink.Relay.Security;

/// <summary>
/// A token bucket of failures one peer may cause: <c>capacity</c> at once, refilled at <c>capacity / 10</c> per second.
/// A well-behaved agent never comes close; a flood (HTTP/2 rapid reset, token guessing) empties it in milliseconds.
/// </summary>
internal sealed class FailureBudget
{
    private readonly TimeProvider _timeProvider;
    private readonly double _capacity;
    private readonly double _refillPerTick;
    private readonly Lock _gate = new();
    private double _tokens;
    private long _last;

    public FailureBudget(int capacity, TimeProvider timeProvider)
    {
        _timeProvider = timeProvider;
        _capacity = capacity;
        _tokens = capacity;
        _refillPerTick = capacity / 10.0 / timeProvider.TimestampFrequency;
        _last = timeProvider.GetTimestamp();
    }

    /// <summary>Spends one failure; false when the budget is exhausted.</summary>
    public bool TrySpend()
    {
        lock (_gate)
        {
            var now = _timeProvider.GetTimestamp();
            _tokens = Math.Min(_capacity, _tokens + ((now - _last) * _refillPerTick));
            _last = now;
            if (_tokens < 1)
            {
                return false;
            }

            _tokens--;
            return true;
        }
    }
}
