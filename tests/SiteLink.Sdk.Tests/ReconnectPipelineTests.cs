using Grpc.Core;
using Microsoft.Extensions.Time.Testing;
using SiteLink.Resilience;

namespace SiteLink.Sdk.Tests;

[TestFixture]
public sealed class ReconnectPipelineTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(10);

    /// <summary>Runs the pipeline over an operation that fails <paramref name="failures"/> times, advancing fake time through each delay.</summary>
    private static async Task<(List<TimeSpan> Delays, List<int> Attempts, int Calls)> RunAsync(TunnelReconnectOptions options, int failures, Func<int, Exception>? error = null)
    {
        var time = new FakeTimeProvider();
        var delays = new List<TimeSpan>();
        var attempts = new List<int>();
        var pipeline = ReconnectPipeline.Create(options, time, (attempt, delay, _) =>
        {
            attempts.Add(attempt);
            delays.Add(delay);
        });
        var calls = 0;
        var run = pipeline.ExecuteAsync(_ =>
        {
            calls++;
            return calls <= failures
                ? ValueTask.FromException<int>(error?.Invoke(calls) ?? new TunnelConnectionException("relay unreachable"))
                : ValueTask.FromResult(calls);
        }).AsTask();

        var deadline = DateTime.UtcNow + Limit;
        while (!run.IsCompleted && DateTime.UtcNow < deadline)
        {
            // Each retry waits on the fake clock; move it by the delay just announced.
            if (delays.Count > 0)
            {
                time.Advance(delays[^1]);
            }

            await Task.Yield();
        }

        await run.WaitAsync(Limit);
        return (delays, attempts, calls);
    }

    [Test]
    public async Task WithoutJitter_DelaysDoubleFromTheInitialDelayUpToTheCap()
    {
        var options = new TunnelReconnectOptions { InitialDelay = TimeSpan.FromSeconds(1), MaxDelay = TimeSpan.FromSeconds(30), UseJitter = false };

        var (delays, attempts, calls) = await RunAsync(options, failures: 8);

        Assert.Multiple(() =>
        {
            Assert.That(delays.Select(d => d.TotalSeconds), Is.EqualTo(new double[] { 1, 2, 4, 8, 16, 30, 30, 30 }));
            Assert.That(attempts, Is.EqualTo(Enumerable.Range(1, 8)));
            Assert.That(calls, Is.EqualTo(9), "the ninth attempt succeeded");
        });
    }

    [Test]
    public async Task WithJitter_EachDelayLiesBetweenHalfAndAllOfTheCappedExponential_AndTheyVary()
    {
        var options = new TunnelReconnectOptions { InitialDelay = TimeSpan.FromSeconds(1), MaxDelay = TimeSpan.FromSeconds(30), UseJitter = true };

        var (delays, _, _) = await RunAsync(options, failures: 40);

        for (var retry = 0; retry < delays.Count; retry++)
        {
            var full = Math.Min(Math.Pow(2, retry), 30);
            Assert.That(delays[retry].TotalSeconds, Is.InRange(full / 2, full), $"retry {retry}");
        }

        Assert.That(delays.Skip(10).Distinct().Count(), Is.GreaterThan(20), "at the cap, agents cut off together do not retry in lockstep");
    }

    [TestCase(0, 0.0, 0.5)]
    [TestCase(0, 1.0, 1.0)]
    [TestCase(3, 0.5, 6.0)]
    [TestCase(10, 0.0, 15.0)]
    [TestCase(10, 1.0, 30.0)]
    [TestCase(5000, 1.0, 30.0)]
    public void ComputeDelay_Bounds(int retry, double random, double expectedSeconds)
    {
        var options = new TunnelReconnectOptions { InitialDelay = TimeSpan.FromSeconds(1), MaxDelay = TimeSpan.FromSeconds(30), UseJitter = true };

        Assert.That(ReconnectPipeline.ComputeDelay(options, retry, random).TotalSeconds, Is.EqualTo(expectedSeconds).Within(1e-6));
    }

    [Test]
    public async Task RetriesTransientFailuresManyTimes()
    {
        var options = new TunnelReconnectOptions { InitialDelay = TimeSpan.FromMilliseconds(10), MaxDelay = TimeSpan.FromMilliseconds(20), UseJitter = false };

        var (_, _, calls) = await RunAsync(options, failures: 200, error: i => i % 2 == 0 ? new IOException("reset") : new TunnelConnectionException("refused"));

        Assert.That(calls, Is.EqualTo(201));
    }

    [Test]
    [Category("VersionPolicy")]
    public void NeverRetriesAuthenticationPermissionVersionOrCertificateErrors()
    {
        var options = new TunnelReconnectOptions { UseJitter = false };
        Exception[] permanent =
        [
            new TunnelAuthenticationException("bad token"),
            new TunnelPermissionException("version"),
            new TunnelVersionException("1.0.0", "2.1.0"),
            new TunnelConnectionException("pin mismatch", null, isTransient: false),
        ];

        foreach (var error in permanent)
        {
            var ex = Assert.ThrowsAsync(error.GetType(), () => RunAsync(options, failures: 1, error: _ => error));
            Assert.That(ex, Is.SameAs(error));
        }
    }

    [Test]
    public async Task BackoffStartsOverForEachOutage()
    {
        var options = new TunnelReconnectOptions { InitialDelay = TimeSpan.FromSeconds(1), MaxDelay = TimeSpan.FromSeconds(30), UseJitter = false };

        var (first, _, _) = await RunAsync(options, failures: 4);
        var (second, _, _) = await RunAsync(options, failures: 2);

        Assert.Multiple(() =>
        {
            Assert.That(first[^1], Is.EqualTo(TimeSpan.FromSeconds(8)));
            Assert.That(second, Is.EqualTo(new[] { TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(2) }));
        });
    }

    [TestCase(typeof(RpcException), false)]
    [TestCase(typeof(InvalidOperationException), false)]
    [TestCase(typeof(OperationCanceledException), false)]
    [TestCase(typeof(IOException), true)]
    [TestCase(typeof(HttpRequestException), true)]
    public void IsTransient_ByExceptionType(Type type, bool expected)
    {
        var exception = type == typeof(RpcException) ? new RpcException(Status.DefaultCancelled) : (Exception)Activator.CreateInstance(type)!;

        Assert.That(ReconnectPipeline.IsTransient(exception), Is.EqualTo(expected));
    }
}
