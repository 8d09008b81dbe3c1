using System.Diagnostics;
using System.Net.Sockets;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>
/// Protocol version 2 end to end (the real relay and SDK over TLS-less loopback HTTP/2): a session's connections share
/// one multiplexed data call, each with its own flow control, so a connection whose reader stops neither slows the
/// others nor makes anyone buffer more than its window.
/// </summary>
[TestFixture]
[Category("Multiplexing")]
public sealed class MultiplexingTests
{
    [Test]
    public async Task ManyConnectionsAtOnce_ShareTheSessionsOneDataCall_EveryByteIntact()
    {
        using var calls = new GrpcCallCounter();
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();

        var results = await Task.WhenAll(Enumerable.Range(0, 32).Select(async i =>
        {
            using var client = await relay.ConnectClientAsync("echo");
            return await client.EchoRandomAsync((1024 * 1024) + (i * 4099));
        })).DefaultTimeout();

        await Eventually.WaitUntilAsync(() => relay.Server.Counters.ActiveConnections == 0, "every connection closed");
        Assert.Multiple(() =>
        {
            for (var i = 0; i < results.Length; i++)
            {
                Assert.That(results[i].Received, Is.EqualTo(results[i].Sent), $"connection {i}: what came back is what was sent");
                Assert.That(results[i].Length, Is.EqualTo((1024 * 1024) + (i * 4099)));
            }

            Assert.That(relay.Server.Counters.ConnectionsMultiplexed, Is.EqualTo(32), "every connection went on the data call");
            Assert.That(relay.Server.Counters.ConnectionsPairedParked, Is.Zero);
            Assert.That(relay.Server.ParkedStreams, Is.Zero, "nothing is parked beside a data call");
            // The control call and the data call, however many connections came and went.
            Assert.That(calls.OpenServerCalls, Is.EqualTo(2));
        });
    }

    [Test]
    public async Task ARelayThatDoesNotMultiplex_GetsAStreamCallPerConnection()
    {
        await using var relay = await TestRelay.StartAsync(["echo"], ParkedStreamTests.VersionOne);
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();

        using var client = await relay.ConnectClientAsync("echo");
        var (sent, received, length) = await client.EchoRandomAsync(4 * 1024 * 1024);

        Assert.Multiple(() =>
        {
            Assert.That(received, Is.EqualTo(sent));
            Assert.That(length, Is.EqualTo(4 * 1024 * 1024));
            Assert.That(relay.Server.Counters.ConnectionsMultiplexed, Is.Zero);
        });
    }

    [Test]
    public async Task AConnectionWhoseReaderStops_DoesNotSlowAnotherOnTheSameCall_AndHoldsNoMoreThanItsWindow()
    {
        // An upstream that sends without end: what each connection's upstream side managed to write is counted.
        var written = new System.Collections.Concurrent.ConcurrentDictionary<int, long>();
        var next = 0;
        await using var source = TestUpstream.Custom(async (socket, cancellationToken) =>
        {
            var id = Interlocked.Increment(ref next);
            var chunk = SocketTestExtensions.RandomBytes(64 * 1024);
            try
            {
                while (!cancellationToken.IsCancellationRequested)
                {
                    var n = await socket.SendAsync(chunk, SocketFlags.None, cancellationToken);
                    written.AddOrUpdate(id, n, (_, total) => total + n);
                }
            }
            catch (Exception ex) when (ex is SocketException or OperationCanceledException or ObjectDisposedException)
            {
                // The client went away.
            }
        });
        await using var relay = await TestRelay.StartAsync(["source"]);
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("source", source.Uri).DefaultTimeout();

        const int Measured = 128 * 1024 * 1024;
        async Task<double> ReadSecondsAsync()
        {
            using var client = await relay.ConnectClientAsync("source");
            var buffer = new byte[256 * 1024];
            var total = 0L;
            var clock = Stopwatch.StartNew();
            while (total < Measured)
            {
                var n = await client.ReceiveAsync(buffer, SocketFlags.None).DefaultTimeout();
                Assert.That(n, Is.GreaterThan(0), "the source does not end");
                total += n;
            }

            return clock.Elapsed.TotalSeconds;
        }

        // Warm up the path, then alternate: alone, and beside a connection whose client never reads.
        await ReadSecondsAsync();
        var alone = new List<double>();
        var besideStalled = new List<double>();
        var stalled = new List<Socket>();
        var stalledIds = new List<int>();
        try
        {
            for (var round = 0; round < 5; round++)
            {
                alone.Add(await ReadSecondsAsync());
                // Connections reach the upstream one at a time here, so the next upstream connection is this one's.
                var stalledId = Volatile.Read(ref next) + 1;
                stalled.Add(await relay.ConnectClientAsync("source"));
                stalledIds.Add(stalledId);
                // It fills its windows before the measured connection starts.
                await Eventually.WaitUntilAsync(() => written.GetValueOrDefault(stalledId) > 4 * 1024 * 1024, "the stalled connection filled its window");
                besideStalled.Add(await ReadSecondsAsync());
            }

            // The stalled connections' upstreams are held back by their windows: what they wrote stops growing.
            var before = written.ToDictionary(p => p.Key, p => p.Value);
            await Task.Delay(TimeSpan.FromSeconds(1));
            var after = written.ToDictionary(p => p.Key, p => p.Value);
            static double Median(List<double> values) => values.Order().ElementAt(values.Count / 2);
            var ratio = Median(alone) / Median(besideStalled);
            TestContext.Out.WriteLine($"128 MiB alone: {string.Join(", ", alone.Select(s => $"{s:F3}"))} s; beside a stalled connection: {string.Join(", ", besideStalled.Select(s => $"{s:F3}"))} s; throughput ratio {ratio:F2}");
            TestContext.Out.WriteLine($"bytes the stalled connections' upstreams wrote: {string.Join(", ", stalledIds.Select(k => after[k]))}");
            Assert.Multiple(() =>
            {
                Assert.That(ratio, Is.GreaterThanOrEqualTo(0.9), "throughput beside a stalled connection, against alone (medians of 5)");
                foreach (var id in stalledIds)
                {
                    // Its windows (4 MiB agent -> relay) and the loopback sockets' buffers on the way, nothing more.
                    Assert.That(after[id], Is.LessThan(40L * 1024 * 1024), $"connection {id} is held back");
                    Assert.That(after[id] - before[id], Is.LessThan(1024 * 1024), $"connection {id} makes no progress while its client does not read");
                }
            });
        }
        finally
        {
            foreach (var socket in stalled)
            {
                socket.Dispose();
            }
        }
    }
}
