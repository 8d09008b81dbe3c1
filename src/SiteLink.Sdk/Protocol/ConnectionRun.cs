using Grpc.Core;
using Microsoft.Extensions.Logging;
using SiteLink.Diagnostics;
using SiteLink.Internal;
using SiteLink.Protocol.V1;
using SiteLink.Resilience;

namespace SiteLink.Protocol;

/// <summary>How one connection to the relay ended.</summary>
/// <param name="Reason">Why, safe to log.</param>
/// <param name="Exception">The error behind it; a non-transient <see cref="TunnelException"/> means do not reconnect.</param>
/// <param name="Drain">The relay asked the agent to move: in-flight connections may finish on this connection.</param>
/// <param name="DrainDeadline">With <paramref name="Drain"/>, how long they may take.</param>
internal sealed record ConnectionEnd(string Reason, Exception? Exception, bool Drain = false, TimeSpan DrainDeadline = default);

/// <summary>
/// One connected <see cref="RelayConnection"/> while it lives: its read loop, its heartbeat monitor, and the
/// tunnelled connections it carries. <see cref="Completion"/> says once, and first, how it ended.
/// </summary>
internal sealed class ConnectionRun : IAsyncDisposable
{
    private readonly Action<ConnectionRun, RelayMessage> _dispatch;
    private readonly TaskCompletionSource<ConnectionEnd> _end = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task _readLoop = Task.CompletedTask;
    private int _disposed;

    public ConnectionRun(RelayConnection connection, TunnelSessionOptions options, Action<ConnectionRun, RelayMessage> dispatch, ILogger logger, Action<TimeSpan>? onRoundTrip = null)
    {
        Connection = connection;
        _dispatch = dispatch;
        Heartbeat = new HeartbeatMonitor(
            options.HeartbeatInterval,
            options.HeartbeatTolerance,
            options.TimeProvider,
            sequence => connection.Send(new AgentMessage
            {
                Heartbeat = new Heartbeat { Sequence = sequence, SentAtUnixMs = options.TimeProvider.GetUtcNow().ToUnixTimeMilliseconds() },
            }),
            silence =>
            {
                SessionLog.HeartbeatMissed(logger, silence);
                End(
                $"no answer from the relay within {silence} of a heartbeat",
                new TunnelConnectionException($"The relay did not answer within the heartbeat tolerance ({silence}); the connection is presumed dead."));
            },
            onRoundTrip);
    }

    public RelayConnection Connection { get; }

    /// <summary>The relay's id for the session on this connection.</summary>
    public string SessionId => Connection.Welcome.SessionId;

    /// <summary>The relay asked the agent to move; streams already open may still be opened and finish.</summary>
    public bool IsDraining => _end.Task.IsCompletedSuccessfully && _end.Task.Result.Drain;

    public HeartbeatMonitor Heartbeat { get; }

    private int _parked;

    /// <summary>How many data streams to keep parked at the relay (grows with bursts, up to the agent's and relay's limit).</summary>
    public required ParkingPolicy Parking { get; init; }

    /// <summary>Data streams parked at the relay now.</summary>
    public int Parked => Volatile.Read(ref _parked);

    /// <summary>Reserves a place for one more parked stream; false when the target is reached or the run is over.</summary>
    public bool TryReserveParked()
    {
        if (HasEnded || Interlocked.Increment(ref _parked) > Parking.Target)
        {
            Interlocked.Decrement(ref _parked);
            return false;
        }

        return true;
    }

    public void OnParkedDone() => Interlocked.Decrement(ref _parked);

    /// <summary>The session's multiplexed data call while it is open (protocol version 2), else null.</summary>
    public Multiplexer? Mux { get; set; }

    /// <summary>The tunnelled connections open on this relay connection.</summary>
    public ActivityCounter Streams { get; } = new();

    public Task<ConnectionEnd> Completion => _end.Task;

    public bool HasEnded => _end.Task.IsCompleted;

    public void Start()
    {
        Heartbeat.Start();
        _readLoop = ReadLoopAsync();
    }

    /// <summary>Records how the connection ended; only the first call counts.</summary>
    public void End(string reason, Exception? exception, bool drain = false, TimeSpan drainDeadline = default)
    {
        if (_end.TrySetResult(new ConnectionEnd(reason, exception, drain, drainDeadline)))
        {
            Heartbeat.Dispose();
        }
    }

    private async Task ReadLoopAsync()
    {
        try
        {
            while (await Connection.Incoming.MoveNext(Connection.Lifetime).ConfigureAwait(false))
            {
                var message = Connection.Incoming.Current;
                Heartbeat.OnMessageReceived();
                if (message.KindCase == RelayMessage.KindOneofCase.HeartbeatAck)
                {
                    Heartbeat.OnAck(message.HeartbeatAck.Sequence);
                }

                _dispatch(this, message);
            }

            End("the relay ended the session", new TunnelConnectionException("The relay ended the session."));
        }
        catch (RpcException ex) when (!Connection.Lifetime.IsCancellationRequested)
        {
            var mapped = ErrorMapping.FromRpc(ex, Connection.RelayUrl, null);
            End($"{ex.StatusCode}: {SafeText.Clean(ex.Status.Detail)}", mapped);
        }
        catch (Exception ex) when (ex is RpcException or OperationCanceledException or IOException or InvalidOperationException)
        {
            var reason = Connection.AbortReason ?? "the connection was closed";
            End(reason, new TunnelConnectionException($"The connection to the relay was closed: {reason}.", ex));
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        End("the connection was closed", null);
        await Connection.DisposeAsync().ConfigureAwait(false);
        await _readLoop.ConfigureAwait(false);
    }
}
