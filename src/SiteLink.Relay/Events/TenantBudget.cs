namespace SiteLink.Relay.Events;

/// <summary>
/// A token bucket per tenant: <c>burst</c> events at once, then <c>perSecond</c>. Keeps at most
/// <see cref="MaxTenants"/> buckets; past that it forgets every full one (a full bucket is a tenant within budget).
/// </summary>
internal sealed class TenantBudget(double perSecond, int burst, TimeProvider time)
{
    public const int MaxTenants = 10_000;

    private readonly Dictionary<string, (double Tokens, long At)> _buckets = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();

    /// <summary>Takes one event from <paramref name="tenant"/>'s budget; false when it is spent.</summary>
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
            else if (_buckets.Count >= MaxTenants)
            {
                foreach (var full in _buckets.Where(b => b.Value.Tokens + (time.GetElapsedTime(b.Value.At, now).TotalSeconds * perSecond) >= burst).Select(b => b.Key).ToList())
                {
                    _buckets.Remove(full);
                }

                if (_buckets.Count >= MaxTenants)
                {
                    // Ten thousand tenants over budget at once: start over rather than grow (each gets a fresh burst).
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
