using System.IO.Pipelines;
using System.Net;
using System.Security.Cryptography;

namespace SiteLink.Sdk.Tests;

/// <summary>
/// A user's unit test of their handler, with no relay: <see cref="TunnelConnection.CreateInMemory"/> gives the handler a
/// connection and the test the client's end.
/// </summary>
[TestFixture]
[Category("Surface")]
public sealed class InMemoryConnectionTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(10);

    // The kind of handler a vendor writes: echo everything back, then close.
    private static async Task EchoHandler(TunnelConnection connection, CancellationToken ct)
    {
        await connection.Stream.CopyToAsync(connection.Stream, ct);
        await connection.Stream.CompleteWritesAsync(ct);
    }

    private static async Task PipeEchoHandler(TunnelConnection connection, CancellationToken ct)
    {
        await connection.Transport.Input.CopyToAsync(connection.Transport.Output, ct);
        await connection.Transport.Output.CompleteAsync();
    }

    private static async Task<byte[]> ReadToEndAsync(Stream stream)
    {
        using var copy = new MemoryStream();
        await stream.CopyToAsync(copy).WaitAsync(Limit);
        return copy.ToArray();
    }

    [TestCase(false)]
    [TestCase(true)]
    public async Task AHandlerUnderTest_EchoesMegabytes_ThroughStreamOrPipe(bool pipe)
    {
        await using var pair = TunnelConnection.CreateInMemory();
        var payload = RandomNumberGenerator.GetBytes(3 * 1024 * 1024 + 17);
        var handling = (pipe ? PipeEchoHandler(pair.Connection, CancellationToken.None) : EchoHandler(pair.Connection, CancellationToken.None)).WaitAsync(Limit);
        var reading = ReadToEndAsync(pair.Client);

        for (var offset = 0; offset < payload.Length; offset += 10_000)
        {
            await pair.Client.WriteAsync(payload.AsMemory(offset, Math.Min(10_000, payload.Length - offset))).AsTask().WaitAsync(Limit);
        }

        // The client shuts down its sending side: the handler reads the end of the stream, finishes, closes its side.
        await pair.Client.CompleteWritesAsync().AsTask().WaitAsync(Limit);
        await handling;
        var echoed = await reading;

        Assert.Multiple(() =>
        {
            Assert.That(echoed.Length, Is.EqualTo(payload.Length));
            Assert.That(SHA256.HashData(echoed), Is.EqualTo(SHA256.HashData(payload)));
            Assert.That(pair.Connection.Stream.BytesRead, Is.EqualTo(payload.Length));
            Assert.That(pair.Connection.Stream.BytesWritten, Is.EqualTo(payload.Length));
        });
    }

    [Test]
    public async Task TheReadmeFlow_AHandlerThatWritesAndReturns_IsReadToItsEnd()
    {
        static async Task Status(TunnelConnection connection, CancellationToken ct)
        {
            for (var i = 0; i < 100; i++)
            {
                await connection.Stream.WriteAsync(new byte[4096], ct);
            }
        }

        await using var pair = TunnelConnection.CreateInMemory();
        using var reply = new MemoryStream();
        var reading = pair.Client.CopyToAsync(reply);
        await pair.Client.CompleteWritesAsync().AsTask().WaitAsync(Limit);
        await Status(pair.Connection, CancellationToken.None).WaitAsync(Limit);
        await pair.Connection.DisposeAsync().AsTask().WaitAsync(Limit);
        await reading.WaitAsync(Limit);

        Assert.That(reply.Length, Is.EqualTo(100 * 4096));
    }

    [Test]
    public async Task TheHandlerSeesTheInfoGiven_AndTheDefaultIsALoopbackClient()
    {
        var info = new TunnelConnectionInfo("billing", new IPEndPoint(IPAddress.Parse("203.0.113.9"), 40123), "billing.example", "s-1");
        await using var given = TunnelConnection.CreateInMemory(info);
        await using var defaulted = TunnelConnection.CreateInMemory();

        Assert.Multiple(() =>
        {
            Assert.That(given.Connection.Info, Is.SameAs(info));
            Assert.That(defaulted.Connection.Info.EndpointName, Is.EqualTo("test"));
            Assert.That(defaulted.Connection.Info.ClientAddress, Is.EqualTo(new IPEndPoint(IPAddress.Loopback, 50000)));
        });
    }

    [Test]
    public async Task WhatTheHandlerWrote_IsWhatTheClientReads_EvenWhenTheHandlerReusesItsBuffer()
    {
        await using var pair = TunnelConnection.CreateInMemory();
        var buffer = "first"u8.ToArray();
        await pair.Connection.Stream.WriteAsync(buffer).AsTask().WaitAsync(Limit);
        "XXXXX"u8.CopyTo(buffer);
        await pair.Connection.Stream.CompleteWritesAsync().AsTask().WaitAsync(Limit);

        Assert.That(await ReadToEndAsync(pair.Client), Is.EqualTo("first"u8.ToArray()));
    }

    [Test]
    public async Task Abort_DiscardsWhatTheOtherEndHadNotRead_AsAReset()
    {
        await using var pair = TunnelConnection.CreateInMemory();
        await pair.Connection.Stream.WriteAsync(new byte[100]).AsTask().WaitAsync(Limit);

        pair.Connection.Stream.Abort();

        Assert.ThrowsAsync<IOException>(() => pair.Client.ReadAsync(new byte[16]).AsTask().WaitAsync(Limit));
    }

    [Test]
    public async Task Abort_ResetsTheClientsEnd()
    {
        await using var pair = TunnelConnection.CreateInMemory();
        var reading = pair.Client.ReadAsync(new byte[16]).AsTask();

        pair.Connection.Stream.Abort();

        Assert.ThrowsAsync<IOException>(() => reading.WaitAsync(Limit));
        Assert.ThrowsAsync<IOException>(() => pair.Client.WriteAsync(new byte[1]).AsTask().WaitAsync(Limit));
    }

    [Test]
    public async Task AHandlerThatStopsReading_EventuallyStopsTheClientsWrites()
    {
        await using var pair = TunnelConnection.CreateInMemory();
        var chunk = new byte[1024];
        Task? blocked = null;
        for (var i = 0; i < 1000 && blocked is null; i++)
        {
            var write = pair.Client.WriteAsync(chunk).AsTask();
            if (!write.IsCompleted)
            {
                blocked = write;
            }
        }

        Assert.That(blocked, Is.Not.Null, "the client could write without bound into a connection nobody reads");
        // Reading frees room: the blocked write completes.
        await pair.Connection.Stream.ReadAsync(new byte[64 * 1024]).AsTask().WaitAsync(Limit);
        await blocked!.WaitAsync(Limit);
    }

    [Test]
    public async Task DisposingThePair_ClosesBothEndsAtOnce()
    {
        var pair = TunnelConnection.CreateInMemory();
        await pair.Connection.Stream.WriteAsync("bye"u8.ToArray()).AsTask().WaitAsync(Limit);

        await pair.DisposeAsync().AsTask().WaitAsync(Limit);

        Assert.ThrowsAsync<ObjectDisposedException>(() => pair.Connection.Stream.WriteAsync(new byte[1]).AsTask());
        Assert.ThrowsAsync<ObjectDisposedException>(() => pair.Client.ReadAsync(new byte[1]).AsTask());
        Assert.That(pair.Client.BytesRead, Is.EqualTo(0), "a graceful close drains what was unread; it is not counted as read");
    }
}
