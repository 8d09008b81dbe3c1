using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using SiteLink.Relay.CloudEndpoints;

namespace SiteLink.Relay.Tests;

/// <summary>The ClientHello reader of tls cloud endpoints, on ClientHellos .NET's own TLS client writes, and on hostile input.</summary>
[TestFixture]
[Category("TlsEndpoints")]
public sealed class ClientHelloTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(10);

    /// <summary>The first bytes a real SslStream client sends: its ClientHello (the handshake never completes).</summary>
    private static async Task<byte[]> RealClientHelloAsync(string targetHost)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(listener.LocalEndPoint!).WaitAsync(Limit);
        using var server = await listener.AcceptAsync().WaitAsync(Limit);
        var tls = new SslStream(new NetworkStream(client, ownsSocket: false));
        var handshake = tls.AuthenticateAsClientAsync(targetHost);
        var buffer = new byte[ClientHello.MaxBytes];
        var filled = 0;
        while (true)
        {
            filled += await server.ReceiveAsync(buffer.AsMemory(filled)).AsTask().WaitAsync(Limit);
            if (ClientHello.TryReadServerName(buffer.AsSpan(0, filled), out _, out _) != ClientHelloStatus.NeedMore)
            {
                break;
            }
        }

        server.Close();
        try
        {
            await handshake.WaitAsync(Limit);
        }
        catch (Exception ex) when (ex is IOException or System.Security.Authentication.AuthenticationException)
        {
            // The server went away, as intended.
        }

        await tls.DisposeAsync();
        return buffer[..filled];
    }

    [Test]
    public async Task ARealClientHello_GivesItsServerName_InLowerCase()
    {
        var hello = await RealClientHelloAsync("Acme-DB.relay.test");

        var status = ClientHello.TryReadServerName(hello, out var name, out var problem);

        Assert.Multiple(() =>
        {
            Assert.That(status, Is.EqualTo(ClientHelloStatus.Complete), problem);
            Assert.That(name, Is.EqualTo("acme-db.relay.test"));
        });
    }

    [Test]
    public async Task AClientHelloForAnIpAddress_NamesNoServer()
    {
        var hello = await RealClientHelloAsync("127.0.0.1");

        Assert.That(ClientHello.TryReadServerName(hello, out var name, out _), Is.EqualTo(ClientHelloStatus.Complete));
        Assert.That(name, Is.Null);
    }

    [Test]
    public async Task EveryPrefixOfAClientHello_AsksForMore_NeverGuesses()
    {
        var hello = await RealClientHelloAsync("acme-db.relay.test");

        for (var length = 0; length < hello.Length; length++)
        {
            Assert.That(ClientHello.TryReadServerName(hello.AsSpan(0, length), out _, out _), Is.EqualTo(ClientHelloStatus.NeedMore), $"prefix of {length} bytes");
        }
    }

    [Test]
    public async Task AClientHelloSpreadOverSeveralRecords_IsReassembled()
    {
        var hello = await RealClientHelloAsync("acme-db.relay.test");
        var message = hello.AsSpan(5).ToArray();
        // The same handshake message in records of at most 100 bytes, as TLS allows.
        var records = new List<byte>();
        for (var offset = 0; offset < message.Length; offset += 100)
        {
            var chunk = message.AsSpan(offset, Math.Min(100, message.Length - offset));
            records.AddRange([22, 3, 1, (byte)(chunk.Length >> 8), (byte)chunk.Length]);
            records.AddRange(chunk.ToArray());
        }

        Assert.That(ClientHello.TryReadServerName(records.ToArray(), out var name, out var problem), Is.EqualTo(ClientHelloStatus.Complete), problem);
        Assert.That(name, Is.EqualTo("acme-db.relay.test"));
    }

    [TestCase("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a TLS handshake")]
    [TestCase("\u0016\u0003\u0001\u0000\u0000", "impossible length")]
    [TestCase("\u0016\u0002\u0001\u0000\u0010", "not a TLS record version")]
    public void NotAClientHello_IsInvalid_WithAReason(string text, string reason)
    {
        var status = ClientHello.TryReadServerName(System.Text.Encoding.Latin1.GetBytes(text), out _, out var problem);

        Assert.That(status, Is.EqualTo(ClientHelloStatus.Invalid));
        Assert.That(problem, Does.Contain(reason));
    }

    [Test]
    public void ARecordClaimingMoreThanTheRelayReads_IsInvalid_NotWaitedFor()
    {
        // A handshake message header announcing 1 MiB: refused at once, not buffered.
        byte[] hello = [22, 3, 1, 0x40, 0x00, 1, 0x10, 0x00, 0x00];

        Assert.That(ClientHello.TryReadServerName(hello, out _, out var problem), Is.EqualTo(ClientHelloStatus.Invalid));
        Assert.That(problem, Does.Contain("larger than the relay reads"));
    }

    [Test]
    public async Task AMillionHostileInputs_NeverThrowNorHang()
    {
        var hello = await RealClientHelloAsync("fuzz.relay.test");
        var random = new Random(20261127);
        var input = new byte[ClientHello.MaxBytes + 64];
        var watch = Stopwatch.StartNew();
        var counts = new int[3];
        for (var i = 0; i < 1_000_000; i++)
        {
            int length;
            switch (i % 4)
            {
                case 0:
                    // Random bytes behind a plausible record header.
                    length = random.Next(0, 600);
                    random.NextBytes(input.AsSpan(0, length));
                    if (length >= 3)
                    {
                        input[0] = 22;
                        input[1] = 3;
                    }

                    break;
                case 1:
                    // The real ClientHello with a few bytes flipped.
                    length = hello.Length;
                    hello.CopyTo(input, 0);
                    for (var flips = random.Next(1, 8); flips > 0; flips--)
                    {
                        input[random.Next(length)] ^= (byte)random.Next(1, 256);
                    }

                    break;
                case 2:
                    // Truncated, with a length field (record, message, or an inner one) set to an extreme.
                    length = random.Next(5, hello.Length + 1);
                    hello.AsSpan(0, length).CopyTo(input);
                    var at = random.Next(3, Math.Max(4, length - 1));
                    input[at] = (byte)(random.Next(2) == 0 ? 0xFF : 0x00);
                    break;
                default:
                    // Pure noise, any length up to past the limit.
                    length = random.Next(0, input.Length);
                    random.NextBytes(input.AsSpan(0, length));
                    break;
            }

            counts[(int)ClientHello.TryReadServerName(input.AsSpan(0, length), out _, out _)]++;
        }

        TestContext.Progress.WriteLine($"1,000,000 inputs in {watch.Elapsed.TotalSeconds:F1} s: {counts[0]} complete, {counts[1]} need more, {counts[2]} invalid");
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(60)));
        Assert.That(counts[2], Is.GreaterThan(0));
    }
}
