using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace SiteLink.Bench;

/// <summary>
/// Many short connections through a path to an echo service (bench/churn.py): each connects, sends some random bytes,
/// reads them back and compares, half-closes, waits for the end of the stream and closes; a fixed number at once.
/// After every checkpoint's worth of connections the load stops (none open), settles, and the resident memory of the
/// given processes is read: does the memory stay flat as connections come and go?
/// </summary>
internal static class Churn
{
    private static readonly TimeSpan IoTimeout = TimeSpan.FromSeconds(15);

    public static async Task<int> RunAsync(int targetPort, int total, int concurrency, int bytes, int checkpoint, TimeSpan settle, int[] pids)
    {
        var target = new IPEndPoint(IPAddress.Loopback, targetPort);
        Console.WriteLine($"rss 0 {string.Join(' ', pids.Select(ResidentKiB))}");
        var ok = 0;
        var failed = 0;
        var failures = new List<string>();
        var active = TimeSpan.Zero;
        for (var done = 0; done < total;)
        {
            var batch = Math.Min(checkpoint, total - done);
            var next = 0;
            var clock = Stopwatch.StartNew();
            var workers = Enumerable.Range(0, Math.Min(concurrency, batch)).Select(_ => Task.Run(async () =>
            {
                var payload = new byte[bytes];
                var back = new byte[bytes];
                while (Interlocked.Increment(ref next) <= batch)
                {
                    Random.Shared.NextBytes(payload);
                    try
                    {
                        await OneAsync(target, payload, back);
                        Interlocked.Increment(ref ok);
                    }
                    catch (Exception ex)
                    {
                        Interlocked.Increment(ref failed);
                        lock (failures)
                        {
                            if (failures.Count < 10)
                            {
                                failures.Add($"{ex.GetType().Name}: {ex.Message}");
                            }
                        }
                    }
                }
            })).ToArray();
            await Task.WhenAll(workers);
            active += clock.Elapsed;
            done += batch;
            await Task.Delay(settle);
            Console.WriteLine(FormattableString.Invariant(
                $"checkpoint {done} ok {Volatile.Read(ref ok)} failed {Volatile.Read(ref failed)} seconds {active.TotalSeconds:F2} rss {string.Join(' ', pids.Select(ResidentKiB))}"));
        }

        foreach (var failure in failures)
        {
            Console.WriteLine("failure " + failure);
        }

        Console.WriteLine(FormattableString.Invariant(
            $"churn {total} ok {ok} failed {failed} seconds {active.TotalSeconds:F2} conn/s {total / active.TotalSeconds:F0}"));
        return failed == 0 ? 0 : 1;
    }

    private static async Task OneAsync(IPEndPoint target, byte[] payload, byte[] back)
    {
        using var timeout = new CancellationTokenSource(IoTimeout);
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(target, timeout.Token);
        await socket.SendAsync(payload, SocketFlags.None, timeout.Token);
        var read = 0;
        while (read < back.Length)
        {
            var n = await socket.ReceiveAsync(back.AsMemory(read), SocketFlags.None, timeout.Token);
            if (n == 0)
            {
                throw new IOException($"the stream ended after {read} of {back.Length} bytes");
            }

            read += n;
        }

        if (!back.AsSpan().SequenceEqual(payload))
        {
            throw new IOException("the bytes that came back differ from those sent");
        }

        // A clean close all the way: our end of the stream, then the echo's.
        socket.Shutdown(SocketShutdown.Send);
        if (await socket.ReceiveAsync(back.AsMemory(0, 1), SocketFlags.None, timeout.Token) != 0)
        {
            throw new IOException("bytes after the echo");
        }
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
