using System.Collections.Concurrent;
using System.Threading.Channels;
using Grpc.Core;
using SiteLink.Protocol.V1;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Security;

namespace SiteLink.Relay.Sessions;

/// <summary>One agent's control stream on this relay: who it is, what it bound, and what it was offered.</summary>
// The lifetime source has no timer, so it holds nothing to release; it is not disposed because bridges still
// running when the session ends link to its token.
#pragma warning disable CA1001
internal sealed class AgentSession
{
    /// <summary>The control queue's limits when none are given (the relay's defaults).</summary>
    public const int DefaultQueueMessages = 4096;

    /// <inheritdoc cref="DefaultQueueMessages"/>
    public const int DefaultQueueBytes = 1024 * 1024;

    private readonly Channel<RelayMessage> _outbox;
    private readonly CancellationTokenSource _lifetime = new();
#pragma warning restore CA1001
    private readonly int _maxQueueBytes;
    private readonly RelayCounters? _counters;
    private readonly LinkedList<ParkedStream> _parked = new();
    private readonly Lock _parkGate = new();
    private long _queuedBytes;
    private int _activeStreams;
    private int _goodbye;
    private int _ended;
    private SessionEnd? _end;

    public AgentSession(string id, TokenIdentity token, string clientId, string peer, string sdkVersion, string connectionId = "", int maxQueueMessages = DefaultQueueMessages, int maxQueueBytes = DefaultQueueBytes, RelayCounters? counters = null, TimeProvider? timeProvider = null)
    {
        UnknownStreams = new FailureBudget(UnknownStreamBudget, timeProvider ?? TimeProvider.System);
        StartedAt = (timeProvider ?? TimeProvider.System).GetUtcNow();
        Id = id;
        Token = token;
        ClientId = clientId;
        Peer = peer;
        SdkVersion = sdkVersion;
        ConnectionId = connectionId;
        _maxQueueBytes = maxQueueBytes;
        _counters = counters;
        // Bounded in messages here and in bytes by Send: an agent that stops reading cannot grow the relay's memory.
        _outbox = Channel.CreateBounded<RelayMessage>(new BoundedChannelOptions(maxQueueMessages)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
    }

    /// <summary>
    /// Stream calls of this session for stream ids it no longer has (expired, used, never offered) it may make in a burst
    /// (refilled at a tenth per second): an agent whose upstream connects are slow sends a few late ones; a flood of them
    /// ends the session. They do not spend the connection's failed-call budget, so public traffic cannot get a good agent
    /// disconnected.
    /// </summary>
    public const int UnknownStreamBudget = 1000;

    public string Id { get; }

    /// <summary>When the session was set up (its Hello arrived).</summary>
    public DateTimeOffset StartedAt { get; }

    /// <summary>See <see cref="UnknownStreamBudget"/>.</summary>
    public FailureBudget UnknownStreams { get; }

    public TokenIdentity Token { get; }

    public string ClientId { get; }

    public string Peer { get; }

    public string SdkVersion { get; }

    /// <summary>What the agent declared about itself in Hello (capped and cleaned).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; init; } = new Dictionary<string, string>();

    /// <summary>The kernel's smoothed round-trip time of the agent's connection, where the platform tells it.</summary>
    public Func<TimeSpan?> RoundTrip { get; init; } = static () => null;

    /// <summary>The HTTP/2 connection the control stream came on; the session's data streams must come on it too.</summary>
    public string ConnectionId { get; }

    /// <summary>Bind id → the endpoint bound (name in lower case). Guarded by the registry's lock.</summary>
    public Dictionary<string, BoundEndpoint> Binds { get; } = new(StringComparer.Ordinal);

    public ConcurrentDictionary<string, PendingStream> Pending { get; } = new(StringComparer.Ordinal);

    /// <summary>Connections paired with a parked stream and being bridged, by stream id (so a refusal can be told apart).</summary>
    public ConcurrentDictionary<string, PendingStream> PairedParked { get; } = new(StringComparer.Ordinal);

    public int ActiveStreams => Volatile.Read(ref _activeStreams);

    /// <summary>The wire protocol version agreed at Hello: 2 when the session's connections may be multiplexed.</summary>
    public uint ProtocolVersion { get; init; } = SiteLink.Internal.WireNames.ProtocolVersion;

    private MuxAttachment? _mux;

    /// <summary>The session's multiplexed data call while it is open, else null (connections then go by Stream calls).</summary>
    public SiteLink.Internal.Multiplexer? Mux => Volatile.Read(ref _mux)?.Mux;

    /// <summary>Makes <paramref name="mux"/> the session's data call; false when it has one, or is leaving or over.</summary>
    public bool TryAttachMux(SiteLink.Internal.Multiplexer mux, Func<PendingStream, bool> open)
    {
        lock (_parkGate)
        {
            if (_mux is not null || IsLeaving || Lifetime.IsCancellationRequested)
            {
                return false;
            }

            Volatile.Write(ref _mux, new MuxAttachment(mux, open));
            return true;
        }
    }

    /// <summary>The data call ended: new connections go by Stream calls again.</summary>
    public void DetachMux(SiteLink.Internal.Multiplexer mux)
    {
        lock (_parkGate)
        {
            if (_mux?.Mux == mux)
            {
                Volatile.Write(ref _mux, null);
            }
        }
    }

    /// <summary>Carries a connection on the session's data call; false when there is none (or it just ended).</summary>
    public bool TryOpenMultiplexed(PendingStream pending) =>
        Volatile.Read(ref _mux) is { } attached && !attached.Mux.IsOver && attached.Open(pending);

    private sealed record MuxAttachment(SiteLink.Internal.Multiplexer Mux, Func<PendingStream, bool> Open);

    /// <summary>Streams the agent has parked here and that wait for a connection.</summary>
    public int ParkedCount
    {
        get
        {
            lock (_parkGate)
            {
                return _parked.Count;
            }
        }
    }

    /// <summary>Bytes of control messages queued for the agent and not yet written to its connection.</summary>
    public long QueuedBytes => Interlocked.Read(ref _queuedBytes);

    /// <summary>Control messages queued for the agent and not yet written to its connection.</summary>
    public int QueuedMessages => _outbox.Reader.Count;

    /// <summary>The agent said Goodbye: it is draining and gets no new connections.</summary>
    public bool IsLeaving => Volatile.Read(ref _goodbye) != 0;

    /// <summary>Signalled when the session ends; every bridge of the session is linked to it.</summary>
    public CancellationToken Lifetime => _lifetime.Token;

    /// <summary>Why the relay ended the session (null while it lives, or when the agent ended it).</summary>
    public SessionEnd? Ending => Volatile.Read(ref _end);

    public ChannelReader<RelayMessage> Outgoing => _outbox.Reader;

    /// <summary>
    /// Queues a message for the agent. When the queue is full (the agent does not read its control stream) the session
    /// is ended with <see cref="SessionEnd.QueueFull"/> and false returned; false too once the session ended.
    /// </summary>
    public bool Send(RelayMessage message)
    {
        var size = message.CalculateSize();
        var queued = Interlocked.Add(ref _queuedBytes, size);
        if (queued > _maxQueueBytes || !_outbox.Writer.TryWrite(message))
        {
            Interlocked.Add(ref _queuedBytes, -size);
            if (Volatile.Read(ref _ended) == 0)
            {
                // Full, not closed: a session that is ending refuses messages too, and must not be blamed for it.
                End(SessionEnd.QueueFull(QueuedMessages, QueuedBytes));
            }

            return false;
        }

        _counters?.OnControlQueued(queued);
        return true;
    }

    /// <summary>Called by the writer once a message is on its way.</summary>
    public void OnSent(RelayMessage message) => Interlocked.Add(ref _queuedBytes, -message.CalculateSize());

    public void MarkLeaving()
    {
        Volatile.Write(ref _goodbye, 1);
        ReleaseParked();
    }

    /// <summary>Parks an idle stream unless the session already has <paramref name="max"/>; null when refused.</summary>
    public ParkedStream? TryPark(int max)
    {
        lock (_parkGate)
        {
            if (IsLeaving || Lifetime.IsCancellationRequested || _parked.Count >= max)
            {
                return null;
            }

            var parked = new ParkedStream();
            parked.Node = _parked.AddLast(parked);
            return parked;
        }
    }

    /// <summary>Pairs a connection with a parked stream, if one is waiting.</summary>
    public bool TryPairParked(PendingStream pending)
    {
        lock (_parkGate)
        {
            while (_parked.First is { } node)
            {
                _parked.RemoveFirst();
                node.Value.Node = null;
                if (node.Value.TryPair(pending))
                {
                    return true;
                }
            }
        }

        return false;
    }

    /// <summary>
    /// A parked stream's call ended while it waited (reset by the agent, or its lifetime ran out): it no longer counts
    /// towards the limit. False when it was paired meanwhile (the caller then owns that connection).
    /// </summary>
    public bool TryUnpark(ParkedStream parked)
    {
        lock (_parkGate)
        {
            if (parked.Node is { } node)
            {
                _parked.Remove(node);
                parked.Node = null;
            }
        }

        return parked.TryEnd();
    }

    private void ReleaseParked()
    {
        ParkedStream[] released;
        lock (_parkGate)
        {
            released = [.. _parked];
            foreach (var parked in released)
            {
                parked.Node = null;
            }

            _parked.Clear();
        }

        foreach (var parked in released)
        {
            parked.Release();
        }
    }

    public void OnStreamStarted() => Interlocked.Increment(ref _activeStreams);

    public void OnStreamEnded() => Interlocked.Decrement(ref _activeStreams);

    /// <summary>
    /// Ends the session. Only the first call decides why: its <paramref name="ending"/> is kept (and counted); null
    /// means the agent ended it, or it ends because its connection did.
    /// </summary>
    public void End(SessionEnd? ending = null)
    {
        if (Interlocked.Exchange(ref _ended, 1) == 0 && ending is not null)
        {
            Volatile.Write(ref _end, ending);
            _counters?.OnSessionEndedBy(ending.Kind);
        }

        _outbox.Writer.TryComplete();
        ReleaseParked();
        try
        {
            _lifetime.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }
    }
}

/// <summary>Why the relay ended a session, and the status its control call ends with.</summary>
/// <param name="Reason">For the log: what happened.</param>
/// <param name="Status">For the agent: the call's final status.</param>
/// <param name="Kind">How it is counted (<see cref="RelayCounters.SessionsEnded"/>).</param>
/// <param name="Abort">Reset the control call instead of ending it with a status (the agent does not read, or is gone).</param>
internal sealed record SessionEnd(string Reason, Status Status, string Kind, bool Abort = false)
{
    public static SessionEnd QueueFull(int messages, long bytes) => new(
        $"the agent does not read its control stream ({messages} messages, {bytes} bytes queued; limits MaxControlQueueMessages, MaxControlQueueBytes)",
        new Status(StatusCode.Aborted, "the agent did not read its control stream and the relay's queue for it is full"),
        "queue_full",
        Abort: true);

    public static SessionEnd Silent(TimeSpan silence) => new(
        $"nothing received for {silence}", new Status(StatusCode.DeadlineExceeded, $"nothing received from the agent for {silence}"), "timed_out", Abort: true);

    public static SessionEnd TakenOver(string newSessionId) => new(
        $"replaced by session {newSessionId} of the same agent", new Status(StatusCode.Aborted, "replaced by a newer session of the same agent"), "taken_over");

    public static readonly SessionEnd Revoked = new(
        "its authtoken was revoked or changed", new Status(StatusCode.Unauthenticated, "the authtoken was revoked"), "revoked");

    public static readonly SessionEnd Kicked = new(
        "ended through the admin API", new Status(StatusCode.Unavailable, "an administrator ended this session; the agent may connect again"), "kicked");

    public static readonly SessionEnd Draining = new(
        "the relay is stopping", new Status(StatusCode.Unavailable, "the relay is shutting down"), "draining");

    public static SessionEnd ProtocolViolation(string detail) => new(
        $"protocol violation: {detail}", new Status(StatusCode.InvalidArgument, detail), "protocol_error");
}

/// <summary>
/// An endpoint a session bound, as the agent declared it: the name (lower case), the description and metadata, within
/// <see cref="Internal.EndpointDescriptionRules"/>'s limits (the bind was refused otherwise), whether it joined a pool,
/// and its kind (<c>tcp</c>).
/// </summary>
internal sealed record BoundEndpoint(string Name, string Description, IReadOnlyDictionary<string, string> Metadata, bool Pooling = false, string Kind = "tcp");
