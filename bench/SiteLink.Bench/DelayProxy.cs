using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;

namespace SiteLink.Bench;

/// <summary>
/// A WAN link in a process: each chunk read in either direction is forwarded once it is <c>delay</c> old, and reading
/// goes on meanwhile, so the link adds latency without serialising transfers (a delay line, not a stop-and-wait).
/// </summary>
internal static class DelayProxy
{
    public static async Task<int> RunAsync(int listenPort, int targetPort, TimeSpan delay)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, listenPort));
        listener.Listen(1024);
        while (true)
        {
            var client = await listener.AcceptAsync();
            _ = Task.Run(async () =>
            {
                using var server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                client.NoDelay = true;
                try
                {
                    await Task.Delay(delay); // the SYN crosses the link too
                    await server.ConnectAsync(new IPEndPoint(IPAddress.Loopback, targetPort));
                    await Task.WhenAll(PumpAsync(client, server, delay), PumpAsync(server, client, delay));
                }
                catch (SocketException)
                {
                }
                finally
                {
                    client.Dispose();
                }
            });
        }
    }

    private static async Task PumpAsync(Socket from, Socket to, TimeSpan delay)
    {
        // Bounded so a slow receiver pushes back on the sender, like a real link's buffers.
        var line = Channel.CreateBounded<(byte[] Data, int Length, long Due)>(new BoundedChannelOptions(256) { SingleReader = true, SingleWriter = true });
        var reading = Task.Run(async () =>
        {
            try
            {
                while (true)
                {
                    var buffer = new byte[64 * 1024];
                    var read = await from.ReceiveAsync(buffer, SocketFlags.None);
                    await line.Writer.WriteAsync((buffer, read, Stopwatch.GetTimestamp() + (long)(delay.TotalSeconds * Stopwatch.Frequency)));
                    if (read == 0)
                    {
                        break;
                    }
                }
            }
            catch (SocketException)
            {
                await line.Writer.WriteAsync(([], -1, 0));
            }
            finally
            {
                line.Writer.TryComplete();
            }
        });

        await foreach (var (data, length, due) in line.Reader.ReadAllAsync())
        {
            var wait = due - Stopwatch.GetTimestamp();
            if (wait > 0)
            {
                await Task.Delay(TimeSpan.FromSeconds((double)wait / Stopwatch.Frequency));
            }

            try
            {
                if (length < 0)
                {
                    to.LingerState = new LingerOption(true, 0);
                    to.Close();
                    break;
                }

                if (length == 0)
                {
                    to.Shutdown(SocketShutdown.Send);
                    break;
                }

                await to.SendAsync(data.AsMemory(0, length), SocketFlags.None);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                break;
            }
        }

        await reading;
    }
}
