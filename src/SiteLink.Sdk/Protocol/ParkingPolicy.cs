namespace SiteLink.Protocol;

/// <summary>
/// How many data streams a connection keeps parked at the relay. It starts at <see cref="Initial"/> (or the limit, if
/// lower) and doubles, up to the limit, each time a connection arrives with nothing parked and has to take the
/// OpenStream round trip. A quiet agent holds few idle calls at the relay; a busy one as many as its bursts need.
/// </summary>
internal sealed class ParkingPolicy(int limit)
{
    /// <summary>
    /// Streams parked on a fresh connection: few, because an idle agent is the common case and each parked call costs the
    /// relay ~12 KB (bench/density.py: 8 → 2 took the relay from 179 to 126 KiB per idle session, with no measurable cost
    /// to a burst of 20 new connections to a fresh agent over a 20 ms link, bench/ab_parking.py --wan).
    /// </summary>
    public const int Initial = 2;

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
