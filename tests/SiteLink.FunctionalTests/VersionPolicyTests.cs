using System.Reflection;
using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Protocol.V1;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Events;

namespace SiteLink.FunctionalTests;

/// <summary>
/// Relay:MinimumAgentVersion (issue 15, version policy) against the real relay and SDK: an agent older than the minimum
/// is refused at Hello once, permanently, with both versions named, counted, logged and published as an event; one at or
/// above it carries bytes; a hand-made Hello with a hostile sdk_version gets capped, printable trailers.
/// </summary>
[TestFixture]
[Category("VersionPolicy")]
public sealed class VersionPolicyTests
{
    /// <summary>The version this SDK reports in Hello (its informational version without build metadata).</summary>
    private static readonly string SdkVersion =
        typeof(TunnelSession).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()!.InformationalVersion.Split('+')[0];

    private const string Newer = "999.1.0";

    private static Task<TestRelay> StartRelayAsync(string? minimum, RecordingEventSink events, IEnumerable<string>? cloudEndpoints = null, Action<RelayOptions>? configure = null, TimeProvider? time = null) =>
        TestRelay.StartAsync(cloudEndpoints ?? [], o =>
        {
            o.MinimumAgentVersion = minimum;
            configure?.Invoke(o);
        }, time, services => services.AddSingleton<IRelayEventSink>(events));

    /// <summary>An agent on a fake clock: its reconnect backoff (1 s … 2 s) waits until the test moves the clock, and no heartbeat falls due.</summary>
    private static void OnFakeClock(TunnelSessionOptions options, FakeTimeProvider clock)
    {
        options.TimeProvider = clock;
        options.Reconnect.InitialDelay = TimeSpan.FromSeconds(1);
        options.Reconnect.MaxDelay = TimeSpan.FromSeconds(2);
        options.HeartbeatInterval = TimeSpan.FromMinutes(5);
        options.HeartbeatTolerance = TimeSpan.FromMinutes(6);
    }

    /// <summary>Moves the agent's clock well past every backoff delay it could be waiting for (a retry would be due many times over).</summary>
    private static void PastEveryBackoff(FakeTimeProvider clock)
    {
        for (var i = 0; i < 10; i++)
        {
            clock.Advance(TimeSpan.FromSeconds(3));
        }
    }

    private static void AssertOneRefusalEvent(RecordingEventSink events, string agentVersion, string clientId)
    {
        var refused = events.OfType(RelayEventTypes.AgentVersionRefused).ToArray();
        Assert.That(refused, Has.Length.EqualTo(1));
        var data = refused[0].Data;
        Assert.Multiple(() =>
        {
            Assert.That(refused[0].Tenant, Is.EqualTo("acme"));
            Assert.That(data["agentVersion"], Is.EqualTo(agentVersion));
            Assert.That(data["minimumVersion"], Is.EqualTo(Newer));
            Assert.That(data["clientId"], Is.EqualTo(clientId));
            Assert.That(data["token"], Is.EqualTo("acme"), "the token's name");
            Assert.That((string)data["remoteAddress"]!, Does.StartWith("127.0.0.1:"));
            Assert.That(data.Values.OfType<string>(), Has.None.Contains(TestRelay.AcmeToken), "never the secret");
            Assert.That(events.OfType(RelayEventTypes.SessionConnected), Is.Empty, "no session started");
        });
    }

    [Test]
    public async Task AnAgentOlderThanTheMinimum_ConnectAsyncThrowsTunnelVersionException_AfterOneAttempt()
    {
        var events = new RecordingEventSink();
        await using var relay = await StartRelayAsync(Newer, events);
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var options = relay.AgentOptions();
        OnFakeClock(options, clock);

        var ex = Assert.ThrowsAsync<TunnelVersionException>(() => TunnelSession.ConnectAsync(options).DefaultTimeout());
        PastEveryBackoff(clock);

        Assert.Multiple(() =>
        {
            Assert.That(ex!.AgentVersion, Is.EqualTo(SdkVersion));
            Assert.That(ex.MinimumVersion, Is.EqualTo(Newer));
            Assert.That(ex.Message, Is.EqualTo($"The relay requires SiteLink SDK {Newer} or later; this agent runs {SdkVersion}. Update the agent."));
            Assert.That(ex.TunnelError, Is.EqualTo(TunnelError.VersionNotSupported));
            Assert.That(ex.IsTransient, Is.False);
            Assert.That(relay.Server.Counters.AgentsVersionRefused, Is.EqualTo(1), "one attempt, none after the backoff");
            Assert.That(relay.Server.SessionCount, Is.Zero);
            Assert.That(relay.Server.PendingHandshakes, Is.Zero);
            Assert.That(relay.Logs.Entries.Count(e => IsVersionRefusal(e) && e.Message.Contains(SdkVersion, StringComparison.Ordinal) && e.Message.Contains(Newer, StringComparison.Ordinal)), Is.EqualTo(1), "the relay logged it once");
            Assert.That(relay.Logs.Entries.Any(e => e.Category == "SiteLink.TunnelSession" && e.EventId.Id == 34 && e.Message.Contains("Update the agent", StringComparison.Ordinal)), Is.True, "the agent logged the fault with what to do");
        });
        AssertOneRefusalEvent(events, SdkVersion, "test-agent");
    }

    [Test]
    public async Task AHostedAgentOlderThanTheMinimum_FaultsWithoutRetrying_AndStopsTheHost()
    {
        var events = new RecordingEventSink();
        await using var relay = await StartRelayAsync(Newer, events);
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var builder = Host.CreateApplicationBuilder();
        builder.Configuration.Sources.Clear();
        builder.Logging.ClearProviders();
        relay.Logs.AddTo(builder.Logging);
        builder.Services.AddSiteLink(o =>
        {
            o.RelayUrl = relay.Server.AgentUrl;
            o.AuthToken = TestRelay.AcmeToken;
            o.PinnedCertificateSha256 = relay.Server.CertificateSha256;
            o.ClientId = "hosted-agent";
            OnFakeClock(o, clock);
        }).StopHostOnFault();
        using var host = builder.Build();
        var session = host.Services.GetRequiredService<ITunnelSession>();
        var recorder = new StateRecorder(session);
        var stopping = host.Services.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping;

        await host.StartAsync().DefaultTimeout();
        await recorder.WaitForAsync(TunnelSessionState.Faulted);
        PastEveryBackoff(clock);
        await Eventually.WaitUntilAsync(() => stopping.IsCancellationRequested, "StopHostOnFault stopped the host");
        await host.StopAsync().DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(session.Fault, Is.TypeOf<TunnelVersionException>());
            Assert.That(session.Fault!.Message, Does.Contain(Newer).And.Contain(SdkVersion));
            Assert.That(recorder.Attempts, Is.Empty, "a version refusal is never retried");
            Assert.That(relay.Server.Counters.AgentsVersionRefused, Is.EqualTo(1));
            Assert.That(relay.Logs.Entries.Any(e => e.Category == "SiteLink.Hosting" && e.Level == LogLevel.Critical && e.Message.Contains("VersionNotSupported", StringComparison.Ordinal)), Is.True);
        });
        AssertOneRefusalEvent(events, SdkVersion, "hosted-agent");
    }

    [Test]
    public async Task ARunningSessionWhoseRelayNowRequiresANewerSdk_FaultsOnReconnect_AndStopsRetrying()
    {
        var certificate = Path.Combine(Path.GetTempPath(), $"sitelink-test-{Guid.NewGuid():N}.pfx");
        try
        {
            // Each relay its own recorder: the first one's session.connected is not the second one's business.
            var events = new RecordingEventSink();
            var first = await StartRelayAsync(null, new RecordingEventSink(), configure: o => o.Tls.DevelopmentCertificatePath = certificate);
            var agentPort = first.Server.AgentUrl.Port;
            var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
            var options = first.AgentOptions();
            OnFakeClock(options, clock);
            await using var session = await TunnelSession.ConnectAsync(options).DefaultTimeout();
            var recorder = new StateRecorder(session);

            // The vendor restarts the relay with a minimum this agent does not meet.
            await first.DisposeAsync();
            await Eventually.WaitUntilAsync(() => !recorder.Attempts.IsEmpty, "a reconnect attempt failed while the relay was down");
            await using var second = await StartRelayAsync(Newer, events, configure: o =>
            {
                o.Tls.DevelopmentCertificatePath = certificate;
                o.AgentListen = $"127.0.0.1:{agentPort}";
            });
            var attemptsBefore = recorder.Attempts.Count;
            await Eventually.WaitUntilAsync(() =>
            {
                clock.Advance(TimeSpan.FromSeconds(2));
                return session.State == TunnelSessionState.Faulted;
            }, "the reconnect reached the new relay and was refused");
            PastEveryBackoff(clock);

            Assert.Multiple(() =>
            {
                Assert.That(session.Fault, Is.TypeOf<TunnelVersionException>());
                Assert.That(((TunnelVersionException)session.Fault!).MinimumVersion, Is.EqualTo(Newer));
                Assert.That(recorder.States.Last().Exception, Is.SameAs(session.Fault), "reported in StateChanged");
                Assert.That(recorder.Attempts.Select(a => a.Exception), Has.None.InstanceOf<TunnelVersionException>(), "the refusal is never retried");
                Assert.That(recorder.Attempts, Has.Count.EqualTo(attemptsBefore), "nothing tried after it");
                Assert.That(second.Server.Counters.AgentsVersionRefused, Is.EqualTo(1));
                Assert.That(second.Server.SessionCount, Is.Zero);
            });
            AssertOneRefusalEvent(events, SdkVersion, "test-agent");
        }
        finally
        {
            File.Delete(certificate);
        }
    }

    [TestCase("equal")]
    [TestCase("equal, with build metadata")]
    [TestCase("lower")]
    [TestCase("a prerelease of this version")]
    public async Task AnAgentAtOrAboveTheMinimum_IsServed_AndCarriesBytes(string minimum)
    {
        var events = new RecordingEventSink();
        var floor = minimum switch
        {
            "equal" => SdkVersion,
            "equal, with build metadata" => SdkVersion + "+sha.0123abc",
            "lower" => "0.1.0",
            _ => SdkVersion + "-rc.1",
        };
        await using var relay = await StartRelayAsync(floor, events, ["echo"]);
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();

        using var client = await relay.ConnectClientAsync("echo");
        var (sent, received, length) = await client.EchoRandomAsync((1024 * 1024) + 12_345);

        Assert.Multiple(() =>
        {
            Assert.That(length, Is.EqualTo((1024 * 1024) + 12_345));
            Assert.That(received, Is.EqualTo(sent), "SHA-256 of what came back");
            Assert.That(session.State, Is.EqualTo(TunnelSessionState.Connected));
            Assert.That(relay.Server.Counters.AgentsVersionRefused, Is.Zero);
            Assert.That(events.OfType(RelayEventTypes.AgentVersionRefused), Is.Empty);
        });
    }

    [Test]
    public async Task HandMadeHellos_OldOrHostileVersions_GetFailedPreconditionWithCappedTrailers_LoggedOnceASecond_OthersServed()
    {
        var events = new RecordingEventSink();
        var relayClock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var relay = await StartRelayAsync(SdkVersion, events, [GoodAgent.CloudEndpoint], time: relayClock);
        await using var good = await GoodAgent.StartAsync(relay);
        using var raw = new RawAgent(relay);
        var garbage = string.Concat(Enumerable.Repeat("\r\n\u001b[31m\u0000é中\u202e\u2028x", 256));
        Assert.That(garbage, Has.Length.GreaterThanOrEqualTo(2048));

        var old = await RefusedAsync(raw, "0.9.0");
        var hostile = await RefusedAsync(raw, garbage);
        var loggedBeforeTheSecondEnds = relay.Logs.Entries.Count(IsVersionRefusal);
        relayClock.Advance(TimeSpan.FromSeconds(1.1));
        await Eventually.WaitUntilAsync(() => relay.Logs.Entries.Any(e => e.EventId.Id == 39 && e.Message.Contains("refused for their SDK version", StringComparison.Ordinal)), "the held-back refusal is summarised at the end of its second");
        await good.AssertServesAsync(1024 * 1024);
        var sessions = relay.Server.SessionCount;
        // The relay's drain at dispose waits on its (fake) clock for sessions to leave: let the good agent leave first.
        await good.Session.CloseAsync().DefaultTimeout();
        await Eventually.WaitUntilAsync(() => relay.Server.SessionCount == 0, "the good agent left");

        Assert.Multiple(() =>
        {
            foreach (var ex in new[] { old, hostile })
            {
                Assert.That(ex.StatusCode, Is.EqualTo(StatusCode.FailedPrecondition));
                Assert.That(ex.Trailers.GetValue("sitelink-refusal"), Is.EqualTo("agent-version"));
                Assert.That(ex.Trailers.GetValue("sitelink-minimum-version"), Is.EqualTo(SdkVersion));
                Assert.That(ex.Status.Detail, Does.Contain($"requires SiteLink SDK {SdkVersion} or later"));
            }

            Assert.That(old.Trailers.GetValue("sitelink-agent-version"), Is.EqualTo("0.9.0"));
            var echoed = hostile.Trailers.GetValue("sitelink-agent-version")!;
            Assert.That(echoed, Has.Length.LessThanOrEqualTo(64 + 3), "capped");
            Assert.That(echoed, Does.EndWith("..."));
            Assert.That(echoed.All(c => c is >= ' ' and <= '~'), Is.True, "printable ASCII only: " + echoed);
            Assert.That(hostile.Status.Detail, Has.Length.LessThan(200));
            Assert.That(relay.Server.Counters.AgentsVersionRefused, Is.EqualTo(2));
            Assert.That(loggedBeforeTheSecondEnds, Is.EqualTo(1), "the second refusal within the second is held back");
            Assert.That(relay.Logs.Entries.Any(e => e.Message.Contains(garbage[..16], StringComparison.Ordinal)), Is.False, "the agent's text is never logged raw");
            Assert.That(events.OfType(RelayEventTypes.AgentVersionRefused).Select(e => e.Data["agentVersion"]), Is.EqualTo(new object[] { "0.9.0", echoed }));
            Assert.That(sessions, Is.EqualTo(1), "only the good agent's session");
        });
    }

    private static bool IsVersionRefusal(LogEntry entry) => entry.Category == "SiteLink.Relay.Agents.TunnelService" && entry.EventId.Id == 43;

    /// <summary>Says Hello with <paramref name="sdkVersion"/> and returns how the relay ended the control stream.</summary>
    private static async Task<RpcException> RefusedAsync(RawAgent raw, string sdkVersion)
    {
        using var call = raw.OpenControl();
        await call.RequestStream.WriteAsync(new AgentMessage { Hello = new Hello { ProtocolVersion = 1, ClientId = "raw", SdkVersion = sdkVersion } }).DefaultTimeout();
        return Assert.ThrowsAsync<RpcException>(async () => await call.ResponseStream.MoveNext().DefaultTimeout())!;
    }
}
