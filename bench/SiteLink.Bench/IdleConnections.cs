using System.Net;
using System.Net.Sockets;

namespace SiteLink.Bench;

/// <summary>
/// Opens many idle connections through a path, reports the resident memory of the given processes before and with
/// them open, checks that every connection still carries a byte both ways, closes them all at once, and reports the
/// resident memory again <c>afterClose</c> later (does the memory come back once the burst is over?).
/// </summary>
internal static class IdleConnections
{
    public static async Task<int> RunAsync(int targetPort, int count, TimeSpan settle, TimeSpan afterClose, int[] pids)
    {
        var before = pids.Select(ResidentKiB).ToArray();
        var sockets = new Socket[count];
        var target = new IPEndPoint(IPAddress.Loopback, targetPort);
        using var gate = new SemaphoreSlim(256);
        var opening = Enumerable.Range(0, count).Select(async i =>
        {
            await gate.WaitAsync();
            try
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                await socket.ConnectAsync(target);
                // A first byte makes sure the connection is paired all the way to the upstream.
                await socket.SendAsync(new byte[] { 1 }, SocketFlags.None);
                var one = new byte[1];
                if (await socket.ReceiveAsync(one, SocketFlags.None) != 1)
                {
                    throw new IOException("no echo while opening");
                }

                sockets[i] = socket;
            }
            finally
            {
                gate.Release();
            }
        });
        await Task.WhenAll(opening);
        await Task.Delay(settle);
        GC.Collect();
        var after = pids.Select(ResidentKiB).ToArray();

        var ok = 0;
        var checks = sockets.Select(async (socket, i) =>
        {
            await gate.WaitAsync();
            try
            {
                var b = new[] { (byte)(i % 251) };
                await socket.SendAsync(b, SocketFlags.None);
                var back = new byte[1];
                var read = await socket.ReceiveAsync(back, SocketFlags.None).WaitAsync(TimeSpan.FromSeconds(30));
                if (read == 1 && back[0] == b[0])
                {
                    Interlocked.Increment(ref ok);
                }
            }
            catch (Exception ex) when (ex is SocketException or TimeoutException)
            {
            }
            finally
            {
                gate.Release();
            }
        });
        await Task.WhenAll(checks);
        foreach (var socket in sockets)
        {
            socket.Dispose();
        }

        await Task.Delay(afterClose);
        var closed = pids.Select(ResidentKiB).ToArray();

        // One line the harness parses: count, ok, then per pid "before:with them open" KiB; then how long after closing
        // the last figures were taken, and per pid the KiB then.
        Console.WriteLine($"idle {count} ok {ok} rss {string.Join(' ', pids.Select((p, i) => $"{before[i]}:{after[i]}"))}"
            + $" closed {afterClose.TotalSeconds:0} s rss {string.Join(' ', closed)}");
        return ok == count ? 0 : 1;
    }

    private static long ResidentKiB(int pid)
    {
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
            }
        }

        return -1;
    }
}
