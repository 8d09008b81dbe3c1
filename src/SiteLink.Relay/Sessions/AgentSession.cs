using System.Collections.Concurrent;
using System.Threading.Channels;
using SiteLink.Protocol.V1;
using SiteLink.Relay.Security;

namespace SiteLink.Relay.Sessions;

/// <summary>One agent's control stream on this relay: who it is, what it bound, and what it was offered.</summary>
// The lifetime source has no timer, so it holds nothing to release; it is not disposed because bridges still
// running when the session ends link to its token.
#pragma warning disable CA1001
internal sealed class AgentSession
{
    private readonly Channel<RelayMessage> _outbox = Channel.CreateUnbounded<RelayMessage>(new UnboundedChannelOptions { SingleReader = true });
    private readonly CancellationTokenSource _lifetime = new();
#pragma warning restore CA1001
    private readonly ConcurrentQueue<ParkedStream> _parked = new();
    private int _parkedCount;
    private int _activeStreams;
    private int _goodbye;

    public AgentSession(string id, TokenIdentity token, string clientId, string peer, string sdkVersion)
    {
        Id = id;
        Token = token;
        ClientId = clientId;
        Peer = peer;
        SdkVersion = sdkVersion;
    }

    public string Id { get; }

    public TokenIdentity Token { get; }

    public string ClientId { get; }

    public string Peer { get; }

    public string SdkVersion { get; }

    /// <summary>Bind id → endpoint name (lower case). Guarded by the registry's lock.</summary>
    public Dictionary<string, string> Binds { get; } = new(StringComparer.Ordinal);

    public ConcurrentDictionary<string, PendingStream> Pending { get; } = new(StringComparer.Ordinal);

    /// <summary>Connections paired with a parked stream and being bridged, by stream id (so a refusal can be told apart).</summary>
    public ConcurrentDictionary<string, PendingStream> PairedParked { get; } = new(StringComparer.Ordinal);

    public int ActiveStreams => Volatile.Read(ref _activeStreams);

    /// <summary>Streams the agent has parked here and that wait for a connection.</summary>
    public int ParkedCount => Volatile.Read(ref _parkedCount);

    /// <summary>The agent said Goodbye: it is draining and gets no new connections.</summary>
    public bool IsLeaving => Volatile.Read(ref _goodbye) != 0;

    /// <summary>Signalled when the session ends; every bridge of the session is linked to it.</summary>
    public CancellationToken Lifetime => _lifetime.Token;

    public ChannelReader<RelayMessage> Outgoing => _outbox.Reader;

    public bool Send(RelayMessage message) => _outbox.Writer.TryWrite(message);

    public void MarkLeaving()
    {
        Volatile.Write(ref _goodbye, 1);
        ReleaseParked();
    }

    /// <summary>Parks an idle stream unless the session already has <paramref name="max"/>; null when refused.</summary>
    public ParkedStream? TryPark(int max)
    {
        if (IsLeaving || Lifetime.IsCancellationRequested || Interlocked.Increment(ref _parkedCount) > max)
        {
            Interlocked.Decrement(ref _parkedCount);
            return null;
        }

        var parked = new ParkedStream();
        _parked.Enqueue(parked);
        return parked;
    }

    /// <summary>Pairs a connection with a parked stream, if one is waiting.</summary>
    public bool TryPairParked(PendingStream pending)
    {
        while (_parked.TryDequeue(out var parked))
        {
            Interlocked.Decrement(ref _parkedCount);
            if (parked.TryPair(pending))
            {
                return true;
            }
        }

        return false;
    }

    private void ReleaseParked()
    {
        while (_parked.TryDequeue(out var parked))
        {
            Interlocked.Decrement(ref _parkedCount);
            parked.Release();
        }
    }

    public void OnStreamStarted() => Interlocked.Increment(ref _activeStreams);

    public void OnStreamEnded() => Interlocked.Decrement(ref _activeStreams);

    public void End()
    {
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
