using System.Net;
using System.Net.Sockets;
using SiteLink.Internal;

namespace SiteLink.Relay.Tests;

/// <summary>The pooled socket read both sides use: a small read takes a small buffer, not the largest a read could fill.</summary>
[TestFixture]
[Category("Operator")]
public sealed class SocketIoTests
{
    [Test]
    public async Task AfterWaiting_ItRentsOnlyWhatArrived_AndTheEndOfTheStreamReadsZero()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(listener.LocalEndPoint!).WaitAsync(TimeSpan.FromSeconds(10));
        using var server = await listener.AcceptAsync().WaitAsync(TimeSpan.FromSeconds(10));

        await client.SendAsync(new byte[] { 42 }, SocketFlags.None).WaitAsync(TimeSpan.FromSeconds(10));
        var (small, one) = await SocketIo.ReceivePooledAsync(server, 64 * 1024, dataLikely: false, CancellationToken.None).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        var first = small[0];
        SocketIo.Return(small, one);

        var burst = new byte[48 * 1024];
        Random.Shared.NextBytes(burst);
        await client.SendAsync(burst, SocketFlags.None).WaitAsync(TimeSpan.FromSeconds(10));
        await Task.Run(async () =>
        {
            while (server.Available < burst.Length)
            {
                await Task.Yield();
            }
        }).WaitAsync(TimeSpan.FromSeconds(10));
        var (large, many) = await SocketIo.ReceivePooledAsync(server, 64 * 1024, dataLikely: false, CancellationToken.None).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        var largeLength = large.Length;
        SocketIo.Return(large, many);

        client.Shutdown(SocketShutdown.Send);
        var (end, zero) = await SocketIo.ReceivePooledAsync(server, 64 * 1024, dataLikely: false, CancellationToken.None).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        SocketIo.Return(end, zero);

        Assert.Multiple(() =>
        {
            Assert.That(one, Is.EqualTo(1));
            Assert.That(first, Is.EqualTo(42));
            Assert.That(small.Length, Is.LessThan(1024), "one byte waiting: a small buffer");
            Assert.That(many, Is.EqualTo(burst.Length), "what had arrived is read at once");
            Assert.That(largeLength, Is.GreaterThanOrEqualTo(burst.Length));
            Assert.That(zero, Is.Zero, "the end of the stream");
        });
    }
}
