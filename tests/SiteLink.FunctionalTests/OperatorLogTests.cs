using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>
/// What an operator reads: expected failures are one line with the cause (the trace only at Debug), floods are
/// summarised, a permanent fault is logged at Error with what to do, and a host can choose to stop on it.
/// </summary>
[TestFixture]
[Category("Operator")]
public sealed partial class OperatorLogTests
{
    [Test]
    public async Task ALostRelayConnection_IsOneWarningLine_WithItsTraceOnlyAtDebug()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var proxy = new FaultProxy(new IPEndPoint(IPAddress.Loopback, relay.Server.AgentUrl.Port));
        var logs = new TestLogSink();
        using var loggerFactory = logs.CreateFactory();
        var options = relay.AgentOptions();
        options.RelayUrl = new Uri($"https://127.0.0.1:{proxy.Port}");
        options.Reconnect.InitialDelay = TimeSpan.FromMilliseconds(50);
        options.Reconnect.MaxDelay = TimeSpan.FromMilliseconds(200);
        options.LoggerFactory = loggerFactory;
        await using var session = await TunnelSession.ConnectAsync(options).DefaultTimeout();
        var recorder = new StateRecorder(session);

        const int losses = 3;
        for (var i = 1; i <= losses; i++)
        {
            proxy.ResetAll();
            await Eventually.WaitUntilAsync(() => recorder.Count(TunnelSessionState.Connected) == i, $"reconnected after loss {i}");
        }

        var sdk = logs.Entries.Where(e => e.Category == "SiteLink.TunnelSession").ToList();
        Assert.Multiple(() =>
        {
            Assert.That(sdk.Count(e => e.EventId.Id == 2 && e.Level == LogLevel.Warning), Is.EqualTo(losses), "one warning per loss");
            Assert.That(sdk.Where(e => e.Level >= LogLevel.Warning).Select(e => e.Exception), Has.All.Null, "no trace at Warning or above");
            Assert.That(sdk.Where(e => e.EventId.Id == 35), Has.All.Matches<LogEntry>(e => e.Level == LogLevel.Debug && e.Exception is not null), "the trace is at Debug");
            Assert.That(sdk.Count(e => e.EventId.Id == 35), Is.EqualTo(losses));
        });
    }

    [Test]
    public async Task TwoThousandRefusedPublicConnections_AreAFewSummaryLines_AndAllCounted()
    {
        await using var relay = await TestRelay.StartAsync(["nobody"]);
        const int refused = 2000;
        using var gate = new SemaphoreSlim(64);
        var burst = System.Diagnostics.Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, refused).Select(async _ =>
        {
            await gate.WaitAsync().DefaultTimeout();
            try
            {
                Assert.That(await relay.ConnectAndWaitForCloseAsync("nobody"), Is.True);
            }
            finally
            {
                gate.Release();
            }
        })).WaitAsync(TimeSpan.FromSeconds(120));
        await Eventually.WaitUntilAsync(() => relay.Server.Counters.Refused(SiteLink.Relay.Diagnostics.RefusalReason.NoAgent) == refused, "every refusal counted");

        // Each line is one refusal plus the ones it says were held back; a burst that stops is summarised at the end
        // of its interval. Together they account for every refusal.
        long Accounted() => relay.Logs.Entries.Sum(e => e.EventId.Id switch
        {
            30 => 1 + long.Parse(HeldBack().Match(e.Message).Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture),
            36 => long.Parse(SummaryCount().Match(e.Message).Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture),
            _ => 0,
        });
        await Eventually.WaitUntilAsync(() => Accounted() == refused, "the log accounts for every refusal");

        var seconds = Math.Ceiling(burst.Elapsed.TotalSeconds) + 1;
        var lines = relay.Logs.Entries.Count(e => e.Level >= LogLevel.Information && e.Category.Contains("ConnectionRouter", StringComparison.Ordinal));
        Assert.That(lines, Is.InRange(2, 2 * seconds), $"at most a line and a summary per second of the {burst.Elapsed.TotalSeconds:F1} s burst, not a line per connection");
    }

    [GeneratedRegex(@"\((\d+) more refused since")]
    private static partial Regex HeldBack();

    [GeneratedRegex(@"^Cloud endpoints: (\d+) more public connection")]
    private static partial Regex SummaryCount();

    [Test]
    [Category("Lifecycle")]
    public async Task ASessionClosedBeforeItConnected_SaysSo_WithoutAnEmptyId()
    {
        var logs = new TestLogSink();
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        logs.AddTo(builder.Logging);
        builder.Services.AddSiteLink(o =>
        {
            // Nothing listens on port 9 (discard): the first attempt fails and the session keeps trying until closed.
            o.RelayUrl = new Uri("https://127.0.0.1:9");
            o.AuthToken = TestRelay.AcmeToken;
        });
        using var host = builder.Build();
        var session = host.Services.GetRequiredService<ITunnelSession>();
        await host.StartAsync().DefaultTimeout();
        await Eventually.WaitUntilAsync(() => logs.Entries.Any(e => e.EventId.Id == 37), "a failed attempt");
        await host.StopAsync().DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(session.State, Is.EqualTo(TunnelSessionState.Closed));
            Assert.That(logs.Entries.Select(e => e.Message), Has.Some.EqualTo("Session closed before it ever connected."));
            Assert.That(logs.Entries.Select(e => e.Message), Has.None.Contains("Session  closed"));
            Assert.That(logs.Entries.Select(e => e.Message), Has.Some.StartsWith("Connecting to the relay: attempt 1 failed"), "the first connection is not a reconnection");
            Assert.That(logs.Entries.Select(e => e.Message), Has.None.Contains("Reconnect attempt"));
        });
    }

    [TestCase(true)]
    [TestCase(false)]
    public async Task APermanentFault_IsLoggedAtErrorWithAdvice_AndStopsTheHostOnlyWhenAskedTo(bool stopHostOnFault)
    {
        await using var relay = await TestRelay.StartAsync(["web"]);
        var logs = new TestLogSink();
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        logs.AddTo(builder.Logging);
        var siteLink = builder.Services.AddSiteLink(o =>
        {
            o.RelayUrl = relay.Server.AgentUrl;
            o.PinnedCertificateSha256 = relay.Server.CertificateSha256;
            o.AuthToken = "not-the-token-0123456789abcdef";
        });
        if (stopHostOnFault)
        {
            siteLink.StopHostOnFault();
        }

        using var host = builder.Build();
        var session = host.Services.GetRequiredService<ITunnelSession>();
        var lifetime = host.Services.GetRequiredService<IHostApplicationLifetime>();
        var running = host.RunAsync();
        await Eventually.WaitUntilAsync(() => session.State == TunnelSessionState.Faulted || running.IsCompleted, "the session faulted");
        if (!stopHostOnFault)
        {
            // The fault is logged and reported; the host is the application's, and stays up: nothing that could stop it
            // is registered, and it has not begun to stop.
            Assert.That(host.Services.GetServices<IHostedService>().Select(s => s.GetType().Name), Has.None.EqualTo("StopHostOnFaultService"));
            Assert.That(lifetime.ApplicationStopping.IsCancellationRequested, Is.False, "the host keeps running");
            lifetime.StopApplication();
        }

        await running.DefaultTimeout();

        var error = logs.Entries.SingleOrDefault(e => e.EventId.Id == 34);
        Assert.Multiple(() =>
        {
            Assert.That(session.Fault?.TunnelError, Is.EqualTo(TunnelError.AuthenticationFailed));
            Assert.That(error?.Level, Is.EqualTo(LogLevel.Error));
            Assert.That(error?.Message, Does.Contain("What to do: check the authtoken"));
            Assert.That(logs.Entries.Any(e => e.Level == LogLevel.Critical && e.Category == "SiteLink.Hosting"), Is.EqualTo(stopHostOnFault));
        });
    }
}
