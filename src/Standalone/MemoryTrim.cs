using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace SiteLink.Standalone;

/// <summary>
/// Gives memory back after a burst, in the standalone relay and agent (compiled into both; never into the SDK: a
/// library must not decide when its host collects). When thousands of connections end at once and the process then
/// goes quiet, nothing allocates, so the GC never runs again: the ended connections' objects stay in the heap and the
/// heap stays committed at its peak (10,000 idle tunnelled connections closed: the agent stayed at ~580 MiB RSS, from
/// 71 before them). Once the GC has been quiet for <see cref="MemoryTrimPolicy.Quiet"/> after some activity, and holds
/// at least <see cref="MemoryTrimPolicy.MinGrowthBytes"/> more than the previous trim left, one aggressive full
/// collection returns it (to ~90 MiB, in ~40 ms); then nothing until the GC runs again of its own accord. A busy
/// process, whose GC is never quiet that long, is never interrupted; an idle one pays one collection per burst.
/// </summary>
internal sealed partial class MemoryTrim(TimeProvider timeProvider, ILogger<MemoryTrim> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var policy = new MemoryTrimPolicy(timeProvider.GetTimestamp(), GC.CollectionCount(0), timeProvider.TimestampFrequency);
        using var timer = new PeriodicTimer(MemoryTrimPolicy.Period, timeProvider);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
            {
                var committed = GC.GetGCMemoryInfo().TotalCommittedBytes;
                if (!policy.ShouldCollect(timeProvider.GetTimestamp(), GC.CollectionCount(0), committed))
                {
                    continue;
                }

                var started = timeProvider.GetTimestamp();
                GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
                var left = GC.GetGCMemoryInfo().TotalCommittedBytes;
                policy.Collected(GC.CollectionCount(0), left);
                Trimmed(logger, committed / (1024 * 1024), left / (1024 * 1024), timeProvider.GetElapsedTime(started).TotalMilliseconds);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    [LoggerMessage(1, LogLevel.Debug, "Quiet after a burst: gave memory back to the system (GC heap committed {Before} MiB -> {After} MiB, {Milliseconds:F0} ms).")]
    private static partial void Trimmed(ILogger logger, long before, long after, double milliseconds);
}

/// <summary>When <see cref="MemoryTrim"/> collects: the decision alone, on numbers it is given (tested on a fake clock).</summary>
internal sealed class MemoryTrimPolicy(long now, int collections, long timestampFrequency)
{
    /// <summary>How often the GC's state is looked at.</summary>
    public static readonly TimeSpan Period = TimeSpan.FromSeconds(5);

    /// <summary>How long the GC must have been idle, after running, before a trim.</summary>
    public static readonly TimeSpan Quiet = TimeSpan.FromSeconds(10);

    /// <summary>A trim is worth it only when the heap holds at least this much more than the last trim left.</summary>
    public const long MinGrowthBytes = 64L * 1024 * 1024;

    private int _seen = collections;
    private long _quietSince = now;
    private bool _armed;
    private long _left;

    /// <summary>Whether to collect now, given the clock, the GC's gen0 collection count, and its committed bytes.</summary>
    public bool ShouldCollect(long timestamp, int gen0Collections, long committedBytes)
    {
        if (gen0Collections != _seen)
        {
            // The GC ran: something is happening. Arm, and wait for it to be quiet again.
            (_seen, _quietSince, _armed) = (gen0Collections, timestamp, true);
            return false;
        }

        if (!_armed || (timestamp - _quietSince) * TimeSpan.TicksPerSecond / timestampFrequency < Quiet.Ticks)
        {
            return false;
        }

        _armed = false;
        return committedBytes >= _left + MinGrowthBytes;
    }

    /// <summary>Records what a collection left, so only growth beyond it triggers the next.</summary>
    public void Collected(int gen0Collections, long committedBytes)
    {
        _seen = gen0Collections;
        _left = committedBytes;
    }
}
