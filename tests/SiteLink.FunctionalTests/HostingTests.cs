using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Security;

namespace SiteLink.FunctionalTests;

/// <summary>C6 and C5: SiteLink in a generic host, against the real relay.</summary>
[TestFixture]
public sealed class HostingTests
{
    /// <summary>Counts instances of a scoped service and how many were disposed.</summary>
    private sealed class ScopedProbe : IAsyncDisposable
    {
        public static int Created;
        public static int Disposed;

        public ScopedProbe() => Interlocked.Increment(ref Created);

        public Guid Id { get; } = Guid.NewGuid();

        public ValueTask DisposeAsync()
        {
            Interlocked.Increment(ref Disposed);
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>Replies with the id of the scoped probe it was given, so each connection shows its own scope.</summary>
    private sealed class ProbeHandler(ScopedProbe probe) : ITunnelConnectionHandler
    {
        public async Task HandleAsync(TunnelConnection connection, CancellationToken cancellationToken) =>
            await connection.Stream.WriteAsync(probe.Id.ToByteArray(), cancellationToken);
    }

    /// <summary>Holds each connection until released, then answers.</summary>
    private sealed class GateHandler : ITunnelConnectionHandler
    {
        public static readonly TaskCompletionSource Started = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public static readonly TaskCompletionSource Release = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public async Task HandleAsync(TunnelConnection connection, CancellationToken cancellationToken)
        {
            Started.TrySetResult();
            await Release.Task.WaitAsync(cancellationToken);
            await connection.Stream.WriteAsync(new byte[64 * 1024], cancellationToken);
        }
    }

    private static HostApplicationBuilder AgentHost(TestRelay relay, Action<Dictionary<string, string?>>? settings = null)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Configuration.Sources.Clear();
        var values = new Dictionary<string, string?>
        {
            ["SiteLink:RelayUrl"] = relay.Server.AgentUrl.ToString(),
            ["SiteLink:AuthToken"] = TestRelay.AcmeToken,
            ["SiteLink:PinnedCertificateSha256"] = relay.Server.CertificateSha256,
            ["SiteLink:Reconnect:InitialDelay"] = "00:00:00.100",
            ["SiteLink:Reconnect:MaxDelay"] = "00:00:00.300",
            ["SiteLink:DrainTimeout"] = "00:00:10",
        };
        settings?.Invoke(values);
        builder.Configuration.AddInMemoryCollection(values);
        builder.Logging.ClearProviders();
        relay.Logs.AddTo(builder.Logging);
        return builder;
    }

    private static async Task WaitForBoundAsync(ITunnelSession session, params string[] names) =>
        await Eventually.WaitUntilAsync(() => names.All(n => session.Endpoints.Any(e => e.Name == n)), $"bound: {string.Join(", ", names)}");

    private static async Task<byte[]> RoundTripAsync(TestRelay relay, string endpoint, byte[] payload)
    {
        using var client = await relay.ConnectClientAsync(endpoint);
        var receiving = client.ReadToEndAsync();
        await client.SendAllAsync(payload).DefaultTimeout();
        client.Shutdown(SocketShutdown.Send);
        return await receiving.DefaultTimeout();
    }

    [Test]
    public async Task HostStartsWhileRelayIsDown_ConnectsOnceItComesUp_AndServesConfiguredEndpoints()
    {
        var certificatePath = Path.Combine(Path.GetTempPath(), $"sitelink-test-{Guid.NewGuid():N}.pfx");
        try
        {
            // The relay's certificate exists before the relay does, so the agent can pin it from the start.
            using var certificate = RelayCertificate.Load(new RelayTlsOptions { DevelopmentCertificatePath = certificatePath })!;
            var agentPort = FreePort();
            await using var upstream = TestUpstream.Echo();
            var builder = Host.CreateApplicationBuilder();
            builder.Configuration.Sources.Clear();
            builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["SiteLink:RelayUrl"] = $"https://127.0.0.1:{agentPort}",
                ["SiteLink:AuthToken"] = TestRelay.AcmeToken,
                ["SiteLink:PinnedCertificateSha256"] = RelayCertificate.Sha256Of(certificate),
                ["SiteLink:Reconnect:InitialDelay"] = "00:00:00.100",
                ["SiteLink:Reconnect:MaxDelay"] = "00:00:00.300",
                ["SiteLink:Endpoints:0:Name"] = "echo",
                ["SiteLink:Endpoints:0:Upstream"] = $"127.0.0.1:{upstream.Port}",
            });
            builder.Services.AddSiteLink();
            using var host = builder.Build();
            var session = host.Services.GetRequiredService<ITunnelSession>();
            var recorder = new StateRecorder(session);

            await host.StartAsync().DefaultTimeout();
            await Eventually.WaitUntilAsync(() => recorder.Attempts.Count >= 2, "retrying while the relay is down");
            var stateWhileDown = session.State;
            await using var relay = await TestRelay.StartAsync(["echo"], o =>
            {
                o.AgentListen = $"127.0.0.1:{agentPort}";
                o.Tls.DevelopmentCertificatePath = certificatePath;
            });
            await WaitForBoundAsync(session, "echo");
            var payload = SocketTestExtensions.RandomBytes(300_000);
            var echoed = await RoundTripAsync(relay, "echo", payload);
            await host.StopAsync().DefaultTimeout();

            Assert.Multiple(() =>
            {
                Assert.That(stateWhileDown, Is.EqualTo(TunnelSessionState.Connecting));
                Assert.That(echoed, Is.EqualTo(payload));
                Assert.That(recorder.Binds.Any(b => b.EndpointName == "echo" && !b.IsRebind && b.Error is null), Is.True);
                Assert.That(session.State, Is.EqualTo(TunnelSessionState.Closed));
            });
        }
        finally
        {
            File.Delete(certificatePath);
        }
    }

    [Test]
    public async Task HostStop_DrainsAConnectionInFlight_AndRefusesNewOnes()
    {
        await using var relay = await TestRelay.StartAsync(["gate"]);
        var builder = AgentHost(relay);
        builder.Services.AddSiteLink().AddConnectionHandler<GateHandler>("gate");
        using var host = builder.Build();
        var session = host.Services.GetRequiredService<ITunnelSession>();
        await host.StartAsync().DefaultTimeout();
        await WaitForBoundAsync(session, "gate");
        using var inFlight = await relay.ConnectClientAsync("gate");
        await GateHandler.Started.Task.DefaultTimeout();

        var stopping = host.StopAsync();
        await Eventually.WaitUntilAsync(() => session.Endpoints.Count == 0, "unbound as the host stops");
        var newOneRefused = await relay.ConnectAndWaitForCloseAsync("gate");
        var stoppedEarly = stopping.IsCompleted;
        GateHandler.Release.TrySetResult();
        var reply = await inFlight.ReadToEndAsync().DefaultTimeout();
        await stopping.DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(stoppedEarly, Is.False, "the host waits for the connection in flight");
            Assert.That(newOneRefused, Is.True);
            Assert.That(reply, Has.Length.EqualTo(64 * 1024));
            Assert.That(session.State, Is.EqualTo(TunnelSessionState.Closed));
        });
    }

    [Test]
    public async Task HandlerFromDependencyInjection_GetsAScopePerConnection_DisposedWhenTheConnectionEnds()
    {
        await using var relay = await TestRelay.StartAsync(["probe"]);
        var builder = AgentHost(relay);
        builder.Services.AddScoped<ScopedProbe>();
        builder.Services.AddSiteLink().AddConnectionHandler<ProbeHandler>("probe");
        using var host = builder.Build();
        var session = host.Services.GetRequiredService<ITunnelSession>();
        await host.StartAsync().DefaultTimeout();
        await WaitForBoundAsync(session, "probe");
        var createdBefore = ScopedProbe.Created;
        var disposedBefore = ScopedProbe.Disposed;

        var ids = new List<Guid>();
        for (var i = 0; i < 3; i++)
        {
            using var client = await relay.ConnectClientAsync("probe");
            ids.Add(new Guid(await client.ReadToEndAsync().DefaultTimeout()));
        }

        await Eventually.WaitUntilAsync(() => ScopedProbe.Disposed - disposedBefore == 3, "each scope disposed");
        await host.StopAsync().DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(ids.Distinct().Count(), Is.EqualTo(3), "a scope (and a handler) per connection");
            Assert.That(ScopedProbe.Created - createdBefore, Is.EqualTo(3));
        });
    }

    [Test]
    public async Task Metrics_CountConnectionsAndBytesOfARealTransfer_OnBothMeters()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var upstream = TestUpstream.Echo();
        var builder = AgentHost(relay, s =>
        {
            s["SiteLink:Endpoints:0:Name"] = "echo";
            s["SiteLink:Endpoints:0:Upstream"] = $"127.0.0.1:{upstream.Port}";
        });
        builder.Services.AddSiteLink();
        using var host = builder.Build();
        var agentMeters = host.Services.GetRequiredService<IMeterFactory>();
        var relayMeters = relay.Server.Services.GetRequiredService<IMeterFactory>();
        using var agentBytes = new MetricCollector<long>(agentMeters, "SiteLink.Sdk", "sitelink.io");
        using var agentConnections = new MetricCollector<long>(agentMeters, "SiteLink.Sdk", "sitelink.connections");
        using var agentActive = new MetricCollector<long>(agentMeters, "SiteLink.Sdk", "sitelink.connection.active");
        using var agentDuration = new MetricCollector<double>(agentMeters, "SiteLink.Sdk", "sitelink.connection.duration");
        using var relayBytes = new MetricCollector<long>(relayMeters, "SiteLink.Relay", "sitelink.relay.io");
        using var relayConnections = new MetricCollector<long>(relayMeters, "SiteLink.Relay", "sitelink.relay.connections");
        var session = host.Services.GetRequiredService<ITunnelSession>();
        await host.StartAsync().DefaultTimeout();
        await WaitForBoundAsync(session, "echo");

        var payload = SocketTestExtensions.RandomBytes(1024 * 1024 + 333);
        Assert.That(await RoundTripAsync(relay, "echo", payload), Is.EqualTo(payload));
        await Eventually.WaitUntilAsync(() => agentConnections.GetMeasurementSnapshot().Count == 1, "the connection was counted");

        static long Sum(MetricCollector<long> collector, string direction) =>
            collector.GetMeasurementSnapshot().Where(m => Equals(m.Tags["network.io.direction"], direction)).Sum(m => m.Value);

        var connection = agentConnections.GetMeasurementSnapshot().Single();
        Assert.Multiple(() =>
        {
            Assert.That(Sum(agentBytes, "receive"), Is.EqualTo(payload.Length), "agent: bytes from the public client");
            Assert.That(Sum(agentBytes, "transmit"), Is.EqualTo(payload.Length), "agent: bytes to the public client");
            Assert.That(Sum(relayBytes, "receive"), Is.EqualTo(payload.Length), "relay: bytes from the public client");
            Assert.That(Sum(relayBytes, "transmit"), Is.EqualTo(payload.Length), "relay: bytes to the public client");
            Assert.That(connection.Tags["sitelink.endpoint"], Is.EqualTo("echo"));
            Assert.That(connection.Tags["sitelink.outcome"], Is.EqualTo("completed"));
            Assert.That(agentActive.GetMeasurementSnapshot().Sum(m => m.Value), Is.Zero, "active went up and back down");
            Assert.That(agentActive.GetMeasurementSnapshot(), Has.Count.EqualTo(2));
            Assert.That(agentDuration.GetMeasurementSnapshot().Single().Value, Is.GreaterThan(0));
            Assert.That(relayConnections.GetMeasurementSnapshot().Sum(m => m.Value), Is.EqualTo(1));
        });
        await host.StopAsync().DefaultTimeout();
    }

    private static int FreePort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }
}
