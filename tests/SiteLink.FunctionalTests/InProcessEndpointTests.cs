using System.Net.Sockets;
using System.Security.Cryptography;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

[TestFixture]
public sealed class InProcessEndpointTests
{
    [Test]
    public async Task Handler_ReceivesClientBytesAndConnectionInfo_RepliesThroughTheTunnel()
    {
        await using var relay = await TestRelay.StartAsync(["digest"]);
        var session = await relay.ConnectAgentAsync();
        var seen = new TaskCompletionSource<TunnelConnectionInfo>(TaskCreationOptions.RunContinuationsAsynchronously);
        await session.BindHandlerAsync("digest", async (connection, ct) =>
        {
            seen.TrySetResult(connection.Info);
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            var buffer = new byte[32 * 1024];
            long total = 0;
            int read;
            while ((read = await connection.Stream.ReadAsync(buffer, ct)) > 0)
            {
                hash.AppendData(buffer, 0, read);
                total += read;
            }

            await connection.Stream.WriteAsync(hash.GetHashAndReset(), ct);
            await connection.Stream.WriteAsync(BitConverter.GetBytes(total), ct);
        }).DefaultTimeout();
        var payload = SocketTestExtensions.RandomBytes(5 * 1024 * 1024);
        using var client = await relay.ConnectClientAsync("digest");

        await client.SendAllAsync(payload).DefaultTimeout();
        client.Shutdown(SocketShutdown.Send);
        var reply = await client.ReadToEndAsync().DefaultTimeout();
        var info = await seen.Task.DefaultTimeout();

        Assert.That(reply, Has.Length.EqualTo(40));
        Assert.Multiple(() =>
        {
            Assert.That(reply[..32], Is.EqualTo(SHA256.HashData(payload)));
            Assert.That(BitConverter.ToInt64(reply, 32), Is.EqualTo(payload.Length));
            Assert.That(info.EndpointName, Is.EqualTo("digest"));
            Assert.That(info.ClientAddress, Is.EqualTo(client.LocalEndPoint), "an IPEndPoint, as Kestrel's RemoteEndPoint");
            Assert.That(info.StreamId, Is.Not.Empty);
        });
    }

    [Test]
    public async Task Handler_CompletesWritesEarly_ClientSeesEndOfStreamWhileHandlerStillReads()
    {
        await using var relay = await TestRelay.StartAsync(["banner"]);
        var session = await relay.ConnectAgentAsync();
        var readByHandler = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        await session.BindHandlerAsync("banner", async (connection, ct) =>
        {
            await connection.Stream.WriteAsync("banner"u8.ToArray(), ct);
            await connection.Stream.CompleteWritesAsync(ct);
            long total = 0;
            var buffer = new byte[8192];
            int read;
            while ((read = await connection.Stream.ReadAsync(buffer, ct)) > 0)
            {
                total += read;
            }

            readByHandler.TrySetResult(total);
        }).DefaultTimeout();
        using var client = await relay.ConnectClientAsync("banner");

        var banner = await client.ReadToEndAsync().DefaultTimeout();
        await client.SendAllAsync(new byte[123_456]).DefaultTimeout();
        client.Shutdown(SocketShutdown.Send);

        Assert.Multiple(async () =>
        {
            Assert.That(banner, Is.EqualTo("banner"u8.ToArray()));
            Assert.That(await readByHandler.Task.DefaultTimeout(), Is.EqualTo(123_456));
            Assert.That(await client.WaitForCloseAsync().DefaultTimeout(), Is.True);
        });
    }

    [Test]
    public async Task Handler_Throws_ClientConnectionIsResetAndSessionKeepsServing()
    {
        await using var relay = await TestRelay.StartAsync(["faulty"]);
        var session = await relay.ConnectAgentAsync();
        var calls = 0;
        await session.BindHandlerAsync("faulty", async (connection, ct) =>
        {
            if (Interlocked.Increment(ref calls) == 1)
            {
                throw new InvalidOperationException("handler bug");
            }

            await connection.Stream.WriteAsync("ok"u8.ToArray(), ct);
        }).DefaultTimeout();

        using (var first = await relay.ConnectClientAsync("faulty"))
        {
            Assert.That(await first.WaitForCloseAsync().DefaultTimeout(), Is.True, "the failed connection must be closed, not left open");
        }

        using var second = await relay.ConnectClientAsync("faulty");
        var reply = await second.ReadToEndAsync().DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(reply, Is.EqualTo("ok"u8.ToArray()));
            Assert.That(relay.Logs.Contains("SiteLink.TunnelSession", new Microsoft.Extensions.Logging.EventId(24)), Is.True, "the handler's failure is logged");
        });
    }

    [Test]
    public async Task Listener_AcceptAsync_YieldsEachConnectionInOrderOfArrival()
    {
        await using var relay = await TestRelay.StartAsync(["inbox"]);
        var session = await relay.ConnectAgentAsync();
        var listener = await session.ListenAsync("inbox").DefaultTimeout();
        var payload = SocketTestExtensions.RandomBytes(2 * 1024 * 1024);
        using var client = await relay.ConnectClientAsync("inbox");
        var sending = Task.Run(async () =>
        {
            await client.SendAllAsync(payload);
            client.Shutdown(SocketShutdown.Send);
        });

        await using var connection = await listener.AcceptAsync().DefaultTimeout();
        using var received = new MemoryStream();
        await connection.Stream.CopyToAsync(received).DefaultTimeout();
        await connection.Stream.WriteAsync("thanks"u8.ToArray()).DefaultTimeout();
        await connection.DisposeAsync().DefaultTimeout();
        await sending.DefaultTimeout();
        var reply = await client.ReadToEndAsync().DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(received.ToArray(), Is.EqualTo(payload));
            Assert.That(reply, Is.EqualTo("thanks"u8.ToArray()));
            Assert.That(connection.Info.EndpointName, Is.EqualTo("inbox"));
        });
    }

    [Test]
    public async Task Listener_AcceptAllAsync_ServesSeveralClientsAndEndsWhenUnbound()
    {
        await using var relay = await TestRelay.StartAsync(["inbox"]);
        var session = await relay.ConnectAgentAsync();
        var listener = await session.ListenAsync("inbox").DefaultTimeout();
        var served = 0;
        var serving = Task.Run(async () =>
        {
            await foreach (var connection in listener.AcceptAllAsync())
            {
                await using (connection)
                {
                    var buffer = new byte[4];
                    await connection.Stream.ReadExactlyAsync(buffer);
                    await connection.Stream.WriteAsync(buffer.Reverse().ToArray());
                }

                served++;
            }
        });

        for (var i = 0; i < 5; i++)
        {
            using var client = await relay.ConnectClientAsync("inbox");
            await client.SendAsync(new byte[] { 1, 2, 3, (byte)i }).DefaultTimeout();
            var reply = await client.ReadToEndAsync().DefaultTimeout();
            Assert.That(reply, Is.EqualTo(new byte[] { (byte)i, 3, 2, 1 }));
        }

        await listener.DisposeAsync().DefaultTimeout();
        await serving.DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(served, Is.EqualTo(5));
            Assert.That(listener.IsBound, Is.False);
            Assert.That(session.Endpoints, Is.Empty);
        });
    }
}
