using System.Net;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>Reconnect.ShouldRetry: the application decides when a session stops retrying.</summary>
[TestFixture]
[Category("Surface")]
public sealed class FaultPolicyTests
{
    [Test]
    public async Task ShouldRetry_GivesUpWhenTheApplicationSays_AndTheSessionFaultsWithTheLastFailure()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var proxy = new FaultProxy(new IPEndPoint(IPAddress.Loopback, relay.Server.AgentUrl.Port));
        var seen = new System.Collections.Concurrent.ConcurrentQueue<int>();
        var options = relay.AgentOptions();
        options.RelayUrl = new Uri($"https://127.0.0.1:{proxy.Port}");
        options.HeartbeatInterval = TimeSpan.FromMilliseconds(300);
        options.HeartbeatTolerance = TimeSpan.FromMilliseconds(450);
        options.ConnectTimeout = TimeSpan.FromMilliseconds(500);
        options.Reconnect.InitialDelay = TimeSpan.FromMilliseconds(50);
        options.Reconnect.MaxDelay = TimeSpan.FromMilliseconds(100);
        options.Reconnect.ShouldRetry = context =>
        {
            seen.Enqueue(context.Attempt);
            return context.Attempt < 3;
        };
        await using var session = await TunnelSession.ConnectAsync(options).DefaultTimeout();
        var recorder = new StateRecorder(session);

        proxy.BlackHole();
        await recorder.WaitForAsync(TunnelSessionState.Faulted);

        Assert.Multiple(() =>
        {
            Assert.That(seen, Is.EqualTo(new[] { 1, 2, 3 }), "asked once per failed attempt, stopped when it said no");
            Assert.That(recorder.Attempts.Select(a => a.AttemptNumber), Is.EqualTo(new[] { 1, 2 }), "two retries were scheduled");
            Assert.That(session.Fault, Is.InstanceOf<TunnelConnectionException>());
        });
    }
}
