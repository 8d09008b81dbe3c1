using System.Net.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>
/// Parked data streams (protocol version 1, a relay that does not multiplex): new connections paired at once, and the
/// OpenStream path when parking is off.
/// </summary>
[TestFixture]
public sealed class ParkedStreamTests
{
    /// <summary>A relay that speaks protocol version 1 only: its sessions' connections go by Stream calls.</summary>
    internal static void VersionOne(SiteLink.Relay.Configuration.RelayOptions options) => options.Limits.Multiplexing = false;

    private static async Task<byte[]> EchoAsync(TestRelay relay, byte[] payload)
    {
        using var client = await relay.ConnectClientAsync("echo");
        var receiving = client.ReadToEndAsync();
        await client.SendAllAsync(payload).DefaultTimeout();
        client.Shutdown(SocketShutdown.Send);
        return await receiving.DefaultTimeout();
    }

    [TestCase(8, true)]
    [TestCase(0, false)]
    public async Task Connections_ArePairedWithParkedStreams_OnlyWhenParkingIsOn(int parked, bool expectParked)
    {
        await using var relay = await TestRelay.StartAsync(["echo"], VersionOne);
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync(configure: o => o.ParkedStreams = parked);
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();
        if (expectParked)
        {
            // A fresh connection parks 2 (fewer than the limit): enough for connections that come one after another.
            await Eventually.WaitUntilAsync(() => relay.Server.ParkedStreams == 2, "the agent parked its streams");
        }
        var payloads = Enumerable.Range(0, 30).Select(i => SocketTestExtensions.RandomBytes(10_000 + i)).ToArray();
        foreach (var payload in payloads)
        {
            Assert.That(await EchoAsync(relay, payload), Is.EqualTo(payload));
        }

        Assert.Multiple(() =>
        {
            Assert.That(relay.Server.Counters.ConnectionsAccepted, Is.EqualTo(30));
            if (expectParked)
            {
                Assert.That(relay.Server.Counters.ConnectionsPairedParked, Is.GreaterThanOrEqualTo(25), "one after another, nearly all find a parked stream");
            }
            else
            {
                Assert.That(relay.Server.Counters.ConnectionsPairedParked, Is.Zero);
            }
        });
    }

    [Test]
    public async Task ParkedOffer_ForAnUnreachableUpstream_IsRefusedAndCounted_LikeAnOpenStreamOne()
    {
        await using var relay = await TestRelay.StartAsync(["dead"], VersionOne);
        var session = await relay.ConnectAgentAsync();
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));
        await session.ForwardAsync("dead", Loopback.Tcp(((System.Net.IPEndPoint)probe.LocalEndPoint!).Port)).DefaultTimeout();
        await Eventually.WaitUntilAsync(() => relay.Server.ParkedStreams > 0, "the agent parked its streams");

        var closed = await relay.ConnectAndWaitForCloseAsync("dead");
        await Eventually.WaitUntilAsync(() => relay.Server.Counters.Refused(SiteLink.Relay.Diagnostics.RefusalReason.AgentRefused) == 1, "the refusal is counted");

        Assert.Multiple(() =>
        {
            Assert.That(closed, Is.True);
            Assert.That(relay.Server.Counters.ConnectionsPairedParked, Is.EqualTo(1), "it came on a parked stream");
        });
    }

    [Test]
    public async Task Burst_EveryConnectionIsCarried_AndMissesGrowTheParkedStreamsWithinTheLimit()
    {
        await using var relay = await TestRelay.StartAsync(["echo"], o => { VersionOne(o); o.Limits.MaxParkedStreamsPerSession = 24; });
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();
        await Eventually.WaitUntilAsync(() => relay.Server.ParkedStreams == 2, "a fresh connection parks 2 streams");

        // 40 connections at once: more than are parked, so some take the OpenStream round trip.
        var payloads = Enumerable.Range(0, 40).Select(i => SocketTestExtensions.RandomBytes(20_000 + i)).ToArray();
        var echoed = await Task.WhenAll(payloads.Select(p => EchoAsync(relay, p))).DefaultTimeout();
        var misses = relay.Server.Counters.ConnectionsAccepted - relay.Server.Counters.ConnectionsPairedParked;

        Assert.That(echoed, Is.EqualTo(payloads));
        if (misses > 0)
        {
            await Eventually.WaitUntilAsync(() => relay.Server.ParkedStreams > 2, $"{misses} misses grow the parked streams");
        }

        Assert.That(relay.Server.ParkedStreams, Is.LessThanOrEqualTo(24), "never beyond the relay's limit");
        TestContext.Out.WriteLine($"misses {misses}, parked after the burst {relay.Server.ParkedStreams}");
    }

    [Test]
    public async Task RelayHostingDiagnostics_AreOff_SoDataStreamsCarryNoRequestActivityOrScope()
    {
        // ASP.NET Core creates an Activity and a log scope per request when this category is enabled at any level;
        // a data stream is a request that lives as long as its tunnelled connection.
        await using var relay = await TestRelay.StartAsync([], VersionOne);
        var logger = relay.Server.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Microsoft.AspNetCore.Hosting.Diagnostics");

        Assert.That(logger.IsEnabled(LogLevel.Critical), Is.False);
    }
}
