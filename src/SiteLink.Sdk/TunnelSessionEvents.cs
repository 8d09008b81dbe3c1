namespace SiteLink;

/// <summary>The session moved from one state to another.</summary>
public sealed class TunnelStateChangedEventArgs : EventArgs
{
    /// <summary>Creates the event data.</summary>
    public TunnelStateChangedEventArgs(TunnelSessionState previousState, TunnelSessionState state, string reason, Exception? exception)
    {
        PreviousState = previousState;
        State = state;
        Reason = reason;
        Exception = exception;
    }

    /// <summary>The state before.</summary>
    public TunnelSessionState PreviousState { get; }

    /// <summary>The state now.</summary>
    public TunnelSessionState State { get; }

    /// <summary>Why, in words safe to log (e.g. "no heartbeat answer within 00:00:15").</summary>
    public string Reason { get; }

    /// <summary>The error behind the change, if any. For <see cref="TunnelSessionState.Faulted"/>, a <see cref="TunnelException"/>.</summary>
    public Exception? Exception { get; }
}

/// <summary>A connection attempt failed and the session will try again after <see cref="Delay"/>.</summary>
public sealed class TunnelReconnectEventArgs : EventArgs
{
    /// <summary>Creates the event data.</summary>
    public TunnelReconnectEventArgs(int attemptNumber, TimeSpan delay, Exception? exception)
    {
        AttemptNumber = attemptNumber;
        Delay = delay;
        Exception = exception;
    }

    /// <summary>The number of the attempt that failed, from 1 within this outage.</summary>
    public int AttemptNumber { get; }

    /// <summary>How long the session waits before the next attempt.</summary>
    public TimeSpan Delay { get; }

    /// <summary>Why the attempt failed.</summary>
    public Exception? Exception { get; }
}

/// <summary>The outcome of binding an endpoint: by the application, or again by the session after it reconnected.</summary>
public sealed class TunnelBindEventArgs : EventArgs
{
    /// <summary>Creates the event data.</summary>
    public TunnelBindEventArgs(string endpointName, bool isRebind, TunnelException? error)
    {
        EndpointName = endpointName;
        IsRebind = isRebind;
        Error = error;
    }

    /// <summary>The endpoint's name.</summary>
    public string EndpointName { get; }

    /// <summary>True when the session bound the endpoint again after reconnecting, with no application code involved.</summary>
    public bool IsRebind { get; }

    /// <summary>Null when bound; otherwise why not. A refused rebind removes the endpoint from the session.</summary>
    public TunnelException? Error { get; }
}

/// <summary>How a tunnelled connection ended.</summary>
public enum TunnelConnectionOutcome
{
    /// <summary>Both sides finished and the connection closed cleanly.</summary>
    Completed,

    /// <summary>It failed or was cut (a side reset, the session closed past its drain deadline, a handler threw).</summary>
    Aborted,

    /// <summary>The agent refused it before it carried anything (unknown endpoint, upstream unreachable, listener full).</summary>
    Refused,
}

/// <summary>A tunnelled connection opened or closed.</summary>
public sealed class TunnelConnectionEventArgs : EventArgs
{
    /// <summary>Creates the event data.</summary>
    public TunnelConnectionEventArgs(TunnelConnectionInfo connection, TunnelConnectionOutcome? outcome, TimeSpan duration)
    {
        Connection = connection;
        Outcome = outcome;
        Duration = duration;
    }

    /// <summary>Who connected, and to which endpoint.</summary>
    public TunnelConnectionInfo Connection { get; }

    /// <summary>How it ended; null when it just opened.</summary>
    public TunnelConnectionOutcome? Outcome { get; }

    /// <summary>How long it lasted; zero when it just opened.</summary>
    public TimeSpan Duration { get; }
}
