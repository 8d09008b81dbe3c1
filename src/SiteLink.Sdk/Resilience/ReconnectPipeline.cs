using System.Net.Http;
using System.Net.Sockets;
using Polly;
using Polly.Retry;

namespace SiteLink.Resilience;

/// <summary>
/// The Polly pipeline around connect + handshake: exponential backoff with jitter and a cap, retrying forever on
/// transient failures, never on authentication, permission or version errors. Each outage runs a fresh execution, so
/// the backoff starts again from <see cref="TunnelReconnectOptions.InitialDelay"/> after a healthy session.
/// </summary>
internal static class ReconnectPipeline
{
    /// <param name="options">Backoff settings.</param>
    /// <param name="time">The clock Polly waits on.</param>
    /// <param name="onRetry">Called before each wait with the failed attempt's number (1-based), the delay and the cause.</param>
    public static ResiliencePipeline Create(TunnelReconnectOptions options, TimeProvider time, Action<int, TimeSpan, Exception?> onRetry)
    {
        return new ResiliencePipelineBuilder { TimeProvider = time }
            .AddRetry(new RetryStrategyOptions
            {
                ShouldHandle = args => new ValueTask<bool>(args.Outcome.Exception is { } ex && IsTransient(ex) && ApplicationAllows(options, ex, args.AttemptNumber + 1)),
                MaxRetryAttempts = int.MaxValue,
                // Our own generator rather than Polly's jitter, which settles on exactly MaxDelay once it gets there:
                // agents cut off together would then retry in lockstep every MaxDelay.
                DelayGenerator = args => new ValueTask<TimeSpan?>(ComputeDelay(options, args.AttemptNumber, options.UseJitter ? Random.Shared.NextDouble() : 1.0)),
                OnRetry = args =>
                {
                    onRetry(args.AttemptNumber + 1, args.RetryDelay, args.Outcome.Exception);
                    return default;
                },
            })
            .Build();
    }

    /// <summary>
    /// The wait after failed attempt <paramref name="retry"/> (0-based): the exponential delay
    /// <c>min(MaxDelay, InitialDelay × 2^retry)</c>, scaled into [50 %, 100 %] of itself by <paramref name="random"/> in [0, 1]
    /// when jitter is on. So delays grow, never exceed the cap, and stay spread out at the cap.
    /// </summary>
    public static TimeSpan ComputeDelay(TunnelReconnectOptions options, int retry, double random)
    {
        var exponent = Math.Min(retry, 62);
        var ticks = options.InitialDelay.Ticks * Math.Pow(2, exponent);
        var capped = Math.Min(ticks, options.MaxDelay.Ticks);
        var scaled = options.UseJitter ? capped * (0.5 + (0.5 * Math.Clamp(random, 0, 1))) : capped;
        return TimeSpan.FromTicks((long)scaled);
    }

    /// <summary>The application's <see cref="TunnelReconnectOptions.ShouldRetry"/>; a callback that throws means "retry".</summary>
    private static bool ApplicationAllows(TunnelReconnectOptions options, Exception error, int attempt)
    {
        if (options.ShouldRetry is not { } shouldRetry)
        {
            return true;
        }

        try
        {
            return shouldRetry(new TunnelRetryContext(error, attempt));
        }
#pragma warning disable CA1031 // An application's callback must not end the session by accident.
        catch (Exception)
#pragma warning restore CA1031
        {
            return true;
        }
    }

    /// <summary>Whether a failed attempt is worth repeating.</summary>
    public static bool IsTransient(Exception exception) => exception switch
    {
        TunnelException tunnel => tunnel.IsTransient,
        OperationCanceledException => false,
        IOException or HttpRequestException or SocketException => true,
        _ => false,
    };
}
