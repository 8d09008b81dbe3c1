using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>C5: every tunnelled connection is announced when it opens and when it closes, with its outcome.</summary>
[TestFixture]
public sealed class ConnectionEventTests
{
    [Test]
    public async Task OpenedAndClosedEvents_ReportEachConnectionOnce_WithItsOutcome()
    {
        await using var relay = await TestRelay.StartAsync(["ok", "faulty", "dead"]);
        var session = await relay.ConnectAgentAsync();
        var opened = new ConcurrentQueue<TunnelConnectionEventArgs>();
        var closed = new ConcurrentQueue<TunnelConnectionEventArgs>();
        session.ConnectionOpened += (_, e) => opened.Enqueue(e);
        session.ConnectionClosed += (_, e) => closed.Enqueue(e);
        await session.BindHandlerAsync("ok", (c, ct) => c.Stream.WriteAsync("fine"u8.ToArray(), ct).AsTask()).DefaultTimeout();
        await session.BindHandlerAsync("faulty", (_, _) => throw new InvalidOperationException("handler bug")).DefaultTimeout();
        using (var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            await session.ForwardAsync("dead", Loopback.Tcp(((IPEndPoint)probe.LocalEndPoint!).Port)).DefaultTimeout();
        }

        using (var client = await relay.ConnectClientAsync("ok"))
        {
            Assert.That(await client.ReadToEndAsync().DefaultTimeout(), Is.EqualTo("fine"u8.ToArray()));
        }

        Assert.That(await relay.ConnectAndWaitForCloseAsync("faulty"), Is.True);
        Assert.That(await relay.ConnectAndWaitForCloseAsync("dead"), Is.True);
        await Eventually.WaitUntilAsync(() => closed.Count == 3, "three connections closed");

        var outcomes = closed.ToDictionary(e => e.Connection.EndpointName, e => e.Outcome);
        Assert.Multiple(() =>
        {
            Assert.That(opened.Select(e => e.Connection.EndpointName), Is.EquivalentTo(new[] { "ok", "faulty", "dead" }));
            Assert.That(opened.All(e => e.Outcome is null), Is.True);
            Assert.That(outcomes["ok"], Is.EqualTo(TunnelConnectionOutcome.Completed));
            Assert.That(outcomes["faulty"], Is.EqualTo(TunnelConnectionOutcome.Aborted));
            Assert.That(outcomes["dead"], Is.EqualTo(TunnelConnectionOutcome.Refused));
            Assert.That(closed.All(e => e.Duration >= TimeSpan.Zero), Is.True);
            Assert.That(closed.Select(e => e.Connection.StreamId), Is.EquivalentTo(opened.Select(e => e.Connection.StreamId)));
        });
    }
}
