using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>
/// SiteLink.AspNetCore against hostile public clients through the relay's cloud endpoint: connections that never send a
/// request or stop halfway through its headers, readers that never read a large response, uploads reset mid-body. The
/// application keeps serving, logs no error of the transport's, and stops within its shutdown timeout.
/// </summary>
[TestFixture]
[Category("Hostile")]
[Category("AspNetCore")]
public sealed class HostileAspNetCoreTests
{
    private static async Task<Socket> SendAsync(TestRelay relay, string text)
    {
        var socket = await relay.ConnectClientAsync("api");
        if (text.Length > 0)
        {
            await socket.SendAllAsync(Encoding.ASCII.GetBytes(text)).DefaultTimeout();
        }

        return socket;
    }

    [Test]
    public async Task HostileClients_DoNotCrashTheApp_NorHangItsShutdown()
    {
        await using var relay = await TestRelay.StartAsync(["api"]);
        await using var app = await AspNetCoreTransportTests.StartApiAsync(relay);
        using var good = AspNetCoreTransportTests.ClientFor(relay, "api");
        Assert.That(await good.GetStringAsync("echo/1").DefaultTimeout(), Is.EqualTo("echo 1"));
        var hostile = new List<Socket>();
        try
        {
            for (var i = 0; i < 20; i++)
            {
                // Never a request; half a request line; headers that never end.
                hostile.Add(await SendAsync(relay, ""));
                hostile.Add(await SendAsync(relay, "GET /echo/1 HT"));
                hostile.Add(await SendAsync(relay, "GET /echo/1 HTTP/1.1\r\nHost: x\r\nX-Slow: "));
            }

            for (var i = 0; i < 5; i++)
            {
                // 64 MiB asked for and never read.
                hostile.Add(await SendAsync(relay, "GET /large HTTP/1.1\r\nHost: x\r\n\r\n"));
            }

            for (var i = 0; i < 10; i++)
            {
                // An upload reset in the middle of its body.
                var upload = await SendAsync(relay, "POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: 8388608\r\n\r\n");
                await upload.SendAllAsync(new byte[256 * 1024]).DefaultTimeout();
                upload.LingerState = new LingerOption(true, 0);
                upload.Dispose();
            }

            // The application still answers, beside all of them.
            var replies = await Task.WhenAll(Enumerable.Range(0, 20).Select(i => good.GetStringAsync($"echo/{i}"))).DefaultTimeout();
            Assert.That(replies, Is.EqualTo(Enumerable.Range(0, 20).Select(i => $"echo {i}")));

            using var shutdown = new CancellationTokenSource(TimeSpan.FromSeconds(3));
            var stopping = System.Diagnostics.Stopwatch.StartNew();
            await app.StopAsync(shutdown.Token).DefaultTimeout();

            Assert.Multiple(() =>
            {
                Assert.That(stopping.Elapsed, Is.LessThan(TimeSpan.FromSeconds(10)), "the stop ends with its shutdown timeout (3 s), not with the clients");
                Assert.That(relay.Logs.Entries.Where(e => e.Level >= LogLevel.Error && e.Category.StartsWith("SiteLink", StringComparison.Ordinal)).Select(e => e.Category + ": " + e.Message),
                    Is.Empty, "no error of the SDK's or the transport's");
            });
        }
        finally
        {
            foreach (var socket in hostile)
            {
                socket.Dispose();
            }
        }
    }
}
