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
                ShouldHandle = new PredicateBuilder().Handle<Exception>(IsTransient),
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = options.UseJitter,
                Delay = options.InitialDelay,
                MaxDelay = options.MaxDelay,
                MaxRetryAttempts = int.MaxValue,
                OnRetry = args =>
                {
                    onRetry(args.AttemptNumber + 1, args.RetryDelay, args.Outcome.Exception);
                    return default;
                },
            })
            .Build();
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
