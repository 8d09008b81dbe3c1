namespace SiteLink.Relay.Sessions;

/// <summary>
/// An idle Stream call an agent parked at the relay, waiting to be given a public connection. Exactly one of three
/// things happens to it: it is paired with a connection, its call ends first (cancelled), or the session releases it.
/// </summary>
internal sealed class ParkedStream
{
    private const int Waiting = 0;
    private const int Paired = 1;
    private const int Ended = 2;
    private readonly TaskCompletionSource<PendingStream?> _pairing = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _state;

    /// <summary>Its place in the session's queue of parked streams, while it is there. Guarded by the session's lock.</summary>
    internal LinkedListNode<ParkedStream>? Node { get; set; }

    /// <summary>Completes with the connection to carry, or null when the session released the stream.</summary>
    public Task<PendingStream?> Pairing => _pairing.Task;

    /// <summary>Gives the stream a connection; false when the stream already ended (try another).</summary>
    public bool TryPair(PendingStream pending)
    {
        if (Interlocked.CompareExchange(ref _state, Paired, Waiting) != Waiting)
        {
            return false;
        }

        _pairing.SetResult(pending);
        return true;
    }

    /// <summary>The call ended while waiting; false when it was paired at the same moment (the caller owns that connection).</summary>
    public bool TryEnd() => Interlocked.CompareExchange(ref _state, Ended, Waiting) == Waiting;

    /// <summary>The session no longer pairs this stream.</summary>
    public void Release()
    {
        if (TryEnd())
        {
            _pairing.TrySetResult(null);
        }
    }
}
