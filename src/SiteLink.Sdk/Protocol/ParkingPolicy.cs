namespace SiteLink.Protocol;

/// <summary>
/// How many data streams a connection keeps parked at the relay. It starts at <see cref="Initial"/> (or the limit, if
/// lower) and doubles, up to the limit, each time a connection arrives with nothing parked and has to take the
/// OpenStream round trip. A quiet agent holds few idle calls at the relay; a busy one as many as its bursts need.
/// </summary>
internal sealed class ParkingPolicy(int limit)
{
    /// <summary>Streams parked on a fresh connection.</summary>
    public const int Initial = 8;

    private int _target = Math.Min(Initial, Math.Max(0, limit));

    /// <summary>The most streams to park: the agent's ParkedStreams, bounded by the relay's max_parked_streams.</summary>
    public int Limit { get; } = Math.Max(0, limit);

    /// <summary>How many streams to keep parked now.</summary>
    public int Target => Volatile.Read(ref _target);

    /// <summary>A connection found nothing parked: double the target, up to <see cref="Limit"/>.</summary>
    public void Grow()
    {
        while (true)
        {
            var current = Volatile.Read(ref _target);
            var grown = (int)Math.Min(Limit, Math.Max(1L, current * 2L));
            if (grown == current || Interlocked.CompareExchange(ref _target, grown, current) == current)
            {
                return;
            }
        }
    }
}
