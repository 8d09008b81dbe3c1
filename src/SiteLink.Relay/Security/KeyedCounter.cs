namespace SiteLink.Relay.Security;

/// <summary>
/// Counts things per key (connections per client address, handshakes per token) for limits, dropping a key when its
/// count returns to zero so the table holds only keys in use. Not thread-safe: callers hold their own lock.
/// </summary>
internal sealed class KeyedCounter<TKey>
    where TKey : notnull
{
    private readonly Dictionary<TKey, int> _counts;

    public KeyedCounter(IEqualityComparer<TKey>? comparer = null)
    {
        _counts = new Dictionary<TKey, int>(comparer);
    }

    /// <summary>The count of <paramref name="key"/> (0 when absent).</summary>
    public int this[TKey key] => _counts.TryGetValue(key, out var count) ? count : 0;

    /// <summary>The sum over all keys.</summary>
    public int Total => _counts.Values.Sum();

    /// <summary>Counts one more for <paramref name="key"/> unless it already has <paramref name="max"/>; false then.</summary>
    public bool TryIncrement(TKey key, int max)
    {
        var count = this[key];
        if (count >= max)
        {
            return false;
        }

        _counts[key] = count + 1;
        return true;
    }

    /// <summary>Counts one less for <paramref name="key"/>.</summary>
    public void Decrement(TKey key)
    {
        var remaining = _counts[key] - 1;
        if (remaining == 0)
        {
            _counts.Remove(key);
        }
        else
        {
            _counts[key] = remaining;
        }
    }
}
