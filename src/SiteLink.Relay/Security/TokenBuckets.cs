namespace SiteLink.Relay.Security;

/// <summary>
/// A token bucket per key (a tenant's events, a client address's failed authentications): <c>burst</c> at once, then
/// <c>perSecond</c>, on <paramref name="time"/>. Keeps at most <see cref="MaxKeys"/> buckets; past that it forgets
/// every full one (a full bucket is a key within budget), and if all are in use, starts over.
/// </summary>
internal sealed class TokenBuckets(double perSecond, int burst, TimeProvider time)
{
    public const int MaxKeys = 10_000;

    private readonly Dictionary<string, (double Tokens, long At)> _buckets = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();

    /// <summary>Whether <paramref name="key"/> has at least one left (nothing taken).</summary>
    public bool HasAny(string key)
    {
        var now = time.GetTimestamp();
        lock (_gate)
        {
            return !_buckets.TryGetValue(key, out var bucket) || bucket.Tokens + (time.GetElapsedTime(bucket.At, now).TotalSeconds * perSecond) >= 1;
        }
    }

    /// <summary>Takes one from <paramref name="tenant"/>'s bucket; false when it is spent.</summary>
    public bool TryTake(string tenant)
    {
        var now = time.GetTimestamp();
        lock (_gate)
        {
            var tokens = (double)burst;
            if (_buckets.TryGetValue(tenant, out var bucket))
            {
                tokens = Math.Min(burst, bucket.Tokens + (time.GetElapsedTime(bucket.At, now).TotalSeconds * perSecond));
            }
            else if (_buckets.Count >= MaxKeys)
            {
                foreach (var full in _buckets.Where(b => b.Value.Tokens + (time.GetElapsedTime(b.Value.At, now).TotalSeconds * perSecond) >= burst).Select(b => b.Key).ToList())
                {
                    _buckets.Remove(full);
                }

                if (_buckets.Count >= MaxKeys)
                {
                    // Ten thousand keys over budget at once: start over rather than grow (each gets a fresh burst).
                    _buckets.Clear();
                }
            }

            if (tokens < 1)
            {
                _buckets[tenant] = (tokens, now);
                return false;
            }

            _buckets[tenant] = (tokens - 1, now);
            return true;
        }
    }
}
