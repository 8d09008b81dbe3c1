namespace SiteLink.Relay.Diagnostics;

/// <summary>Why the relay refused a public connection.</summary>
public enum RefusalReason
{
    /// <summary>No agent serves the endpoint.</summary>
    NoAgent,

    /// <summary>The serving session is at its concurrent or pending stream limit.</summary>
    StreamLimit,

    /// <summary>The agent refused the connection (unknown endpoint, upstream unreachable, overloaded).</summary>
    AgentRefused,

    /// <summary>The agent did not open the stream in time.</summary>
    PairingTimeout,

    /// <summary>The serving session ended before the agent opened the stream.</summary>
    SessionEnded,
}

/// <summary>Running totals of what the relay did, for tests, logs and the metrics built on them.</summary>
public sealed class RelayCounters
{
    private readonly long[] _refused = new long[Enum.GetValues<RefusalReason>().Length];
    private long _accepted;
    private long _completed;
    private long _bytesFromClients;
    private long _bytesToClients;
    private long _unknownStreamRequests;
    private long _sessionsTimedOut;
    private long _sessionsTakenOver;

    /// <summary>Public connections paired with an agent stream.</summary>
    public long ConnectionsAccepted => Interlocked.Read(ref _accepted);

    /// <summary>Public connections whose bridge has ended.</summary>
    public long ConnectionsCompleted => Interlocked.Read(ref _completed);

    /// <summary>Bytes received from public clients and sent down to agents.</summary>
    public long BytesFromClients => Interlocked.Read(ref _bytesFromClients);

    /// <summary>Bytes received from agents and sent to public clients.</summary>
    public long BytesToClients => Interlocked.Read(ref _bytesToClients);

    /// <summary>Stream calls naming a stream that does not exist, expired, was used, or belongs to another session.</summary>
    public long UnknownStreamRequests => Interlocked.Read(ref _unknownStreamRequests);

    /// <summary>Sessions dropped because their agent sent nothing for its heartbeat interval + tolerance.</summary>
    public long SessionsTimedOut => Interlocked.Read(ref _sessionsTimedOut);

    /// <summary>Sessions ended because their agent reconnected and named them as its previous session.</summary>
    public long SessionsTakenOver => Interlocked.Read(ref _sessionsTakenOver);

    /// <summary>Tunnelled connections being bridged now.</summary>
    public long ActiveConnections => ConnectionsAccepted - ConnectionsCompleted;

    /// <summary>Public connections refused for <paramref name="reason"/>.</summary>
    public long Refused(RefusalReason reason) => Interlocked.Read(ref _refused[(int)reason]);

    internal void OnRefused(RefusalReason reason) => Interlocked.Increment(ref _refused[(int)reason]);

    internal void OnAccepted() => Interlocked.Increment(ref _accepted);

    internal void OnCompleted() => Interlocked.Increment(ref _completed);

    internal void OnBytesFromClient(long count) => Interlocked.Add(ref _bytesFromClients, count);

    internal void OnBytesToClient(long count) => Interlocked.Add(ref _bytesToClients, count);

    internal void OnUnknownStream() => Interlocked.Increment(ref _unknownStreamRequests);

    internal void OnSessionTimedOut() => Interlocked.Increment(ref _sessionsTimedOut);

    internal void OnSessionTakenOver() => Interlocked.Increment(ref _sessionsTakenOver);
}
