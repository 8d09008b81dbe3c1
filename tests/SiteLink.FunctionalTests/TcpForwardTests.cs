using System.Net.Sockets;
using System.Security.Cryptography;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

[TestFixture]
public sealed class TcpForwardTests
{
    [Test]
    public async Task LargeTransfer_64MiBEachWay_ArrivesIntactAtBothEnds()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();

        const int size = 64 * 1024 * 1024;
        var payload = SocketTestExtensions.RandomBytes(size);
        var expected = SHA256.HashData(payload);
        using var client = await relay.ConnectClientAsync("echo");

        var receiving = client.HashToEndAsync();
        await client.SendAllAsync(payload).DefaultTimeout();
        client.Shutdown(SocketShutdown.Send);
        var (hash, length) = await receiving.DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(length, Is.EqualTo(size));
            Assert.That(hash, Is.EqualTo(expected), "the bytes that came back differ from the bytes sent");
            Assert.That(relay.Server.Counters.BytesFromClients, Is.EqualTo(size));
        });
    }

    [Test]
    public async Task ConcurrentConnections_100ThroughOneSession_EachGetsItsOwnBytesBack()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();

        async Task<bool> OneConnectionAsync(int index)
        {
            var payload = SocketTestExtensions.RandomBytes(16 * 1024 + (index * 1024));
            using var client = await relay.ConnectClientAsync("echo");
            var receiving = client.ReadToEndAsync();
            await client.SendAllAsync(payload, 8 * 1024);
            client.Shutdown(SocketShutdown.Send);
            var echoed = await receiving;
            return echoed.AsSpan().SequenceEqual(payload);
        }

        var results = await Task.WhenAll(Enumerable.Range(0, 100).Select(OneConnectionAsync)).DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(results, Has.All.True, "a connection got bytes that were not its own");
            Assert.That(upstream.Accepted, Is.EqualTo(100));
            Assert.That(relay.Server.Counters.ConnectionsAccepted, Is.EqualTo(100));
        });
    }

    [Test]
    public async Task HalfClose_ClientShutsDownSending_StillReadsUpstreamsFullReply()
    {
        await using var relay = await TestRelay.StartAsync(["digest"]);
        await using var upstream = TestUpstream.DigestAfterEof();
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("digest", upstream.Uri).DefaultTimeout();
        var payload = SocketTestExtensions.RandomBytes(3 * 1024 * 1024 + 17);
        using var client = await relay.ConnectClientAsync("digest");

        await client.SendAllAsync(payload).DefaultTimeout();
        client.Shutdown(SocketShutdown.Send);
        var reply = await client.ReadToEndAsync().DefaultTimeout();

        Assert.That(reply, Has.Length.EqualTo(40), "the reply is a 32-byte digest and an 8-byte count, then end of stream");
        Assert.Multiple(() =>
        {
            Assert.That(reply[..32], Is.EqualTo(SHA256.HashData(payload)));
            Assert.That(BitConverter.ToInt64(reply, 32), Is.EqualTo(payload.Length));
        });
    }

    [Test]
    public async Task HalfClose_UpstreamFinishesFirst_ClientSeesEndAndCanStillSend()
    {
        // The upstream greets, shuts down its sending side, then reads what the client sends and counts it.
        var received = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = TestUpstream.Custom(async (socket, ct) =>
        {
            await socket.SendAsync("hello\n"u8.ToArray(), SocketFlags.None, ct);
            socket.Shutdown(SocketShutdown.Send);
            long total = 0;
            var buffer = new byte[16 * 1024];
            int read;
            while ((read = await socket.ReceiveAsync(buffer, SocketFlags.None, ct)) > 0)
            {
                total += read;
            }

            received.TrySetResult(total);
        });
        await using var relay = await TestRelay.StartAsync(["greeter"]);
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("greeter", upstream.Uri).DefaultTimeout();
        using var client = await relay.ConnectClientAsync("greeter");

        var greeting = await client.ReadToEndAsync().DefaultTimeout();
        await client.SendAllAsync(new byte[300_000]).DefaultTimeout();
        client.Shutdown(SocketShutdown.Send);

        Assert.Multiple(async () =>
        {
            Assert.That(greeting, Is.EqualTo("hello\n"u8.ToArray()));
            Assert.That(await received.Task.DefaultTimeout(), Is.EqualTo(300_000));
        });
    }

    [Test]
    public async Task UpstreamResetsMidTransfer_ClientConnectionIsResetAndNothingLingers()
    {
        await using var upstream = TestUpstream.Custom(async (socket, ct) =>
        {
            var buffer = new byte[64 * 1024];
            await socket.ReceiveAsync(buffer, SocketFlags.None, ct);
            socket.LingerState = new LingerOption(true, 0);
            socket.Close();
        });
        await using var relay = await TestRelay.StartAsync(["flaky"]);
        var session = (TunnelSession)await relay.ConnectAgentAsync();
        await session.ForwardAsync("flaky", upstream.Uri).DefaultTimeout();
        using var client = await relay.ConnectClientAsync("flaky");

        await client.SendAsync(new byte[1000]).DefaultTimeout();
        var closed = await client.WaitForCloseAsync().DefaultTimeout();
        await Eventually.WaitUntilAsync(() => session.ActiveConnections == 0 && relay.Server.Counters.ConnectionsCompleted == 1);

        Assert.That(closed, Is.True);
    }

    [Test]
    public async Task ClientResetsMidTransfer_UpstreamConnectionEndsAndNothingLingers()
    {
        var upstreamDone = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = TestUpstream.Custom(async (socket, ct) =>
        {
            var buffer = new byte[64 * 1024];
            long total = 0;
            try
            {
                int read;
                while ((read = await socket.ReceiveAsync(buffer, SocketFlags.None, ct)) > 0)
                {
                    total += read;
                }
            }
            finally
            {
                upstreamDone.TrySetResult(total);
            }
        });
        await using var relay = await TestRelay.StartAsync(["sink"]);
        var session = (TunnelSession)await relay.ConnectAgentAsync();
        await session.ForwardAsync("sink", upstream.Uri).DefaultTimeout();
        var client = await relay.ConnectClientAsync("sink");

        await client.SendAllAsync(new byte[1024 * 1024]).DefaultTimeout();
        client.LingerState = new LingerOption(true, 0);
        client.Close();
        var received = await upstreamDone.Task.DefaultTimeout();
        await Eventually.WaitUntilAsync(() => session.ActiveConnections == 0 && relay.Server.Counters.ConnectionsCompleted == 1);

        Assert.That(received, Is.LessThanOrEqualTo(1024 * 1024));
    }

    [Test]
    public async Task Unbind_NewConnectionsAreRefused_BindAgainServesThem()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync();
        var endpoint = await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();

        await endpoint.DisposeAsync().DefaultTimeout();
        var refusedAfterUnbind = await relay.ConnectAndWaitForCloseAsync("echo");
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();
        using var client = await relay.ConnectClientAsync("echo");
        await client.SendAsync("again"u8.ToArray()).DefaultTimeout();
        client.Shutdown(SocketShutdown.Send);

        Assert.Multiple(async () =>
        {
            Assert.That(refusedAfterUnbind, Is.True);
            Assert.That(endpoint.IsBound, Is.False);
            Assert.That(await client.ReadToEndAsync().DefaultTimeout(), Is.EqualTo("again"u8.ToArray()));
        });
    }
}
