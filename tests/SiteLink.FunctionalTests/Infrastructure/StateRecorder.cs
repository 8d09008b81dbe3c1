using System.Collections.Concurrent;
using System.Diagnostics;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>Records a session's state changes, reconnect attempts and bind results, with when they happened.</summary>
internal sealed class StateRecorder
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    public StateRecorder(ITunnelSession session)
    {
        session.StateChanged += (_, e) => States.Enqueue((e.State, e.Reason, e.Exception, _clock.Elapsed));
        session.ReconnectAttemptFailed += (_, e) => Attempts.Enqueue(e);
        session.BindCompleted += (_, e) => Binds.Enqueue(e);
    }

    public ConcurrentQueue<(TunnelSessionState State, string Reason, Exception? Exception, TimeSpan At)> States { get; } = new();

    public ConcurrentQueue<TunnelReconnectEventArgs> Attempts { get; } = new();

    public ConcurrentQueue<TunnelBindEventArgs> Binds { get; } = new();

    public TimeSpan Now => _clock.Elapsed;

    public int Count(TunnelSessionState state) => States.Count(s => s.State == state);

    public int SuccessfulRebinds(string endpoint) => Binds.Count(b => b.IsRebind && b.Error is null && b.EndpointName == endpoint);

    /// <summary>Waits until <paramref name="state"/> has been entered <paramref name="times"/> times; returns when it was last entered.</summary>
    public async Task<TimeSpan> WaitForAsync(TunnelSessionState state, int times = 1)
    {
        await Eventually.WaitUntilAsync(() => Count(state) >= times, $"state {state} entered {times} time(s)");
        return States.Where(s => s.State == state).Skip(times - 1).First().At;
    }
}
