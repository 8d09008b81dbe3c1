namespace SiteLink.Resilience;

/// <summary>A cap on tunnelled connections served at once (per session, per endpoint): each holds a place until it ends.</summary>
internal sealed class ConnectionLimit
{
    private readonly int _max;
    private int _count;

    public ConnectionLimit(int max)
    {
        _max = max;
    }

    public int Count => Volatile.Read(ref _count);

    public int Max => _max;

    /// <summary>Takes a place; false when all are taken.</summary>
    public bool TryEnter()
    {
        if (Interlocked.Increment(ref _count) > _max)
        {
            Interlocked.Decrement(ref _count);
            return false;
        }

        return true;
    }

    public void Exit() => Interlocked.Decrement(ref _count);
}

/// <summary>The places one connection holds in its session's and its endpoint's limits, given back exactly once.</summary>
internal sealed class ConnectionSlot
{
    private readonly ConnectionLimit _session;
    private readonly ConnectionLimit _endpoint;
    private int _released;

    private ConnectionSlot(ConnectionLimit session, ConnectionLimit endpoint)
    {
        _session = session;
        _endpoint = endpoint;
    }

    /// <summary>
    /// Takes a place in both limits; null (and nothing taken) when either is full, with <paramref name="full"/> naming it.
    /// </summary>
    public static ConnectionSlot? TryTake(ConnectionLimit session, ConnectionLimit endpoint, out ConnectionLimit? full)
    {
        if (!session.TryEnter())
        {
            full = session;
            return null;
        }

        if (!endpoint.TryEnter())
        {
            session.Exit();
            full = endpoint;
            return null;
        }

        full = null;
        return new ConnectionSlot(session, endpoint);
    }

    public void Release()
    {
        if (Interlocked.Exchange(ref _released, 1) == 0)
        {
            _endpoint.Exit();
            _session.Exit();
        }
    }
}
