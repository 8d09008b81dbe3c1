using System.Diagnostics;

namespace SiteLink.Bench;

/// <summary>
/// `sessions`: many agent sessions in one process, for the density scenario (bench/density.py). Session i (from FIRST)
/// binds an in-process echo endpoint `d{i}`, with the SDK's default options otherwise (parked streams, heartbeats,
/// reconnect backoff with jitter). Prints `connected N in MS ms` once all are connected and bound, then a status line
/// whenever the count of connected sessions changes: `status T_MS connected N bound B failed-attempts F`, T from the
/// process start. Runs until standard input closes.
/// </summary>
internal static class AgentSessions
{
    public static async Task<int> RunAsync(Uri relayUrl, string pin, string token, int first, int count)
    {
        var clock = Stopwatch.StartNew();
        var sessions = new TunnelSession?[count];
        var failedAttempts = 0L;
        using var gate = new SemaphoreSlim(64);
        var connecting = Enumerable.Range(0, count).Select(async k =>
        {
            var index = first + k;
            var options = new TunnelSessionOptions
            {
                RelayUrl = relayUrl,
                PinnedCertificateSha256 = pin,
                AuthToken = token,
                ClientId = $"density-{index}",
            };
            options.Proxy.UseEnvironment = false;
            // For A/B runs of the density scenario: SITELINK_BENCH_PARKED overrides the parked streams (SDK default 32, 2 at first).
            if (int.TryParse(Environment.GetEnvironmentVariable("SITELINK_BENCH_PARKED"), out var parked))
            {
                options.ParkedStreams = parked;
            }
            await gate.WaitAsync();
            try
            {
                for (var attempt = 1; ; attempt++)
                {
                    try
                    {
                        var session = await TunnelSession.ConnectAsync(options);
                        session.ReconnectAttemptFailed += (_, _) => Interlocked.Increment(ref failedAttempts);
                        await session.BindHandlerAsync($"d{index}", EchoAsync);
                        sessions[k] = session;
                        return;
                    }
                    catch (TunnelException ex) when (ex.IsTransient && attempt < 20)
                    {
                        Interlocked.Increment(ref failedAttempts);
                        await Task.Delay(TimeSpan.FromMilliseconds(100 * attempt));
                    }
                }
            }
            finally
            {
                gate.Release();
            }
        }).ToList();
        await Task.WhenAll(connecting);
        Console.WriteLine($"connected {count} in {clock.ElapsedMilliseconds} ms failed-attempts {Interlocked.Read(ref failedAttempts)}");

        var stdinClosed = Task.Run(() => Console.In.ReadToEnd());
        var last = (-1, -1);
        while (!stdinClosed.IsCompleted)
        {
            var connected = sessions.Count(s => s?.State == TunnelSessionState.Connected);
            var bound = sessions.Count(s => s?.State == TunnelSessionState.Connected && s.Endpoints.Count == 1);
            if ((connected, bound) != last)
            {
                last = (connected, bound);
                Console.WriteLine($"status {clock.ElapsedMilliseconds} connected {connected} bound {bound} failed-attempts {Interlocked.Read(ref failedAttempts)}");
            }

            await Task.WhenAny(stdinClosed, Task.Delay(100));
        }

        await Task.WhenAll(sessions.OfType<TunnelSession>().Select(s => s.DisposeAsync().AsTask()));
        return 0;
    }

    private static async Task EchoAsync(TunnelConnection connection, CancellationToken cancellationToken)
    {
        await connection.Stream.CopyToAsync(connection.Stream, cancellationToken);
        await connection.Stream.CompleteWritesAsync(cancellationToken);
    }
}
