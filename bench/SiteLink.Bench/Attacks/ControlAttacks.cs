using System.Diagnostics;
using Google.Protobuf;
using Grpc.Core;
using SiteLink.Protocol.V1;

namespace SiteLink.Bench.Attacks;

/// <summary>Attacks by an authenticated agent on its own control stream.</summary>
internal static class ControlAttacks
{
    /// <summary>
    /// control-no-read: Hello, then heartbeats as fast as possible for the duration, never reading the response stream.
    /// The relay must answer each heartbeat, so a relay that queues its answers without bound grows by the flood.
    /// </summary>
    public static async Task<int> NoReadAsync(AttackOptions options)
    {
        var report = new AttackReport();
        using var channel = AttackClient.Channel(options);
        var client = new Tunnel.TunnelClient(channel);
        using var call = client.Control(AttackClient.Auth(options.Token));
        var watch = Stopwatch.StartNew();
        await call.RequestStream.WriteAsync(AttackClient.Hello("evil-no-read"));
        long sent = 0;
        double lastWrite = 0;
        string outcome;
        using var stop = new CancellationTokenSource(options.Duration);
        try
        {
            var heartbeat = new AgentMessage { Heartbeat = new Heartbeat { Sequence = 0, SentAtUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() } };
            while (!stop.IsCancellationRequested)
            {
                heartbeat.Heartbeat.Sequence = (ulong)sent;
                await call.RequestStream.WriteAsync(heartbeat, stop.Token);
                sent++;
                lastWrite = watch.Elapsed.TotalSeconds;
            }

            outcome = "still open at the end";
        }
        catch (Exception ex) when (stop.IsCancellationRequested && AttackClient.StatusOf(call) is not { StatusCode: not StatusCode.Cancelled })
        {
            // Our own deadline, with a write blocked by flow control (the relay stopped reading us).
            outcome = "still open at the end (write blocked)";
            report["blocked_write"] = AttackClient.Describe(ex);
        }
        catch (Exception ex)
        {
            report["ended_after_s"] = watch.Seconds();
            var status = AttackClient.StatusOf(call);
            outcome = status is { } s ? $"call ended: {s.StatusCode}" : $"call ended: {AttackClient.Describe(ex)}";
            report["detail"] = status is { } d ? d.Detail : AttackClient.Detail(ex);
        }

        report["outcome"] = outcome;
        report["heartbeats_sent"] = sent;
        report["last_write_s"] = Math.Round(lastWrite, 3);
        report["elapsed_s"] = watch.Seconds();
        report.Print();
        return 0;
    }

    /// <summary>
    /// unbind-big: Hello, then many Unbind messages with huge bind ids, reading the answers; counts what is echoed back.
    /// </summary>
    public static async Task<int> UnbindBigAsync(AttackOptions options)
    {
        var report = new AttackReport();
        var count = options.Int("count", 3000);
        var length = options.Int("length", 60000);
        using var channel = AttackClient.Channel(options);
        var client = new Tunnel.TunnelClient(channel);
        using var call = client.Control(AttackClient.Auth(options.Token));
        var watch = Stopwatch.StartNew();
        long results = 0, resultBytes = 0, echoedChars = 0, errors = 0;
        var allAnswered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var (_, drain) = await AttackClient.OpenSessionAsync(client, call, "evil-unbind", message =>
        {
            if (message.KindCase == RelayMessage.KindOneofCase.UnbindResult)
            {
                results++;
                resultBytes += message.CalculateSize();
                echoedChars += message.UnbindResult.BindId.Length;
                if (results == count)
                {
                    allAnswered.TrySetResult();
                }
            }
            else if (message.KindCase == RelayMessage.KindOneofCase.Error)
            {
                errors++;
            }
        });

        var sent = 0;
        string outcome = "";
        using var stop = new CancellationTokenSource(options.Duration);
        try
        {
            var padding = new string('u', length - 8);
            for (; sent < count && !stop.IsCancellationRequested; sent++)
            {
                await call.RequestStream.WriteAsync(new AgentMessage { Unbind = new Unbind { BindId = sent.ToString("D8", null) + padding } }, stop.Token);
            }

            report["all_sent_after_s"] = watch.Seconds();
            await Task.WhenAny(allAnswered.Task, drain, Task.Delay(TimeSpan.FromSeconds(15)));
        }
        catch (Exception ex)
        {
            report["write_failed_after_s"] = watch.Seconds();
            outcome = $"write failed: {AttackClient.Describe(ex)}; ";
        }

        await Task.WhenAny(drain, Task.Delay(200));
        var status = AttackClient.StatusOf(call);
        outcome += status is { } s ? $"call ended: {s.StatusCode}" : "call still open";
        if (status is { } st)
        {
            report["detail"] = st.Detail;
        }

        report["outcome"] = outcome;
        report["unbinds_sent"] = sent;
        report["unbind_results"] = results;
        report["unbind_result_bytes"] = resultBytes;
        report["bind_id_chars_echoed"] = echoedChars;
        report["errors"] = errors;
        report["elapsed_s"] = watch.Seconds();
        report.Print();
        return 0;
    }

    /// <summary>
    /// pending-hellos: as many Control calls as possible that never say Hello, over several HTTP/2 connections.
    /// Tells apart the calls the relay holds (their HEADERS were sent, no status yet), the calls the client still
    /// queues (beyond the relay's SETTINGS_MAX_CONCURRENT_STREAMS) and the calls refused, by status.
    /// </summary>
    public static async Task<int> PendingHellosAsync(AttackOptions options)
    {
        var report = new AttackReport();
        var connections = options.Int("connections", 6);
        var max = options.Int("count", 100_000);
        var sent = new int[max];
        var done = new int[max];
        long sentCount = 0, doneCount = 0, doneUnsent = 0, heldAtRelay = 0, peakHeld = 0;
        var tally = new Tally();
        var firstRefusal = new double[] { -1 };
        var watch = Stopwatch.StartNew();

        void OnSent(long id)
        {
            if (Interlocked.Exchange(ref sent[id], 1) == 0)
            {
                Interlocked.Increment(ref sentCount);
                if (Volatile.Read(ref done[id]) == 0)
                {
                    var held = Interlocked.Increment(ref heldAtRelay);
                    long peak;
                    while (held > (peak = Interlocked.Read(ref peakHeld)) && Interlocked.CompareExchange(ref peakHeld, held, peak) != peak)
                    {
                    }
                }
            }
        }

        var channels = Enumerable.Range(0, connections).Select(_ => AttackClient.Channel(options, OnSent)).ToArray();
        var clients = channels.Select(c => new Tunnel.TunnelClient(c)).ToArray();
        using var cancel = new CancellationTokenSource();
        var frozen = false;
        var watches = new List<Task>();
        var calls = new List<AsyncDuplexStreamingCall<AgentMessage, RelayMessage>>();
        var started = 0;
        while (started < max && watch.Elapsed < options.Duration)
        {
            // Calls the client holds back (the relay's stream limit) cost the attacker only: do not pile up more.
            if (started - Interlocked.Read(ref sentCount) - Interlocked.Read(ref doneCount) > 20_000)
            {
                await Task.Delay(20);
                continue;
            }

            var id = started++;
            var call = clients[id % connections].Control(AttackClient.Auth(options.Token, id), cancellationToken: cancel.Token);
            calls.Add(call);
            watches.Add(Task.Run(async () =>
            {
                string outcome;
                string? detail = null;
                try
                {
                    outcome = await call.ResponseStream.MoveNext() ? "answered with a message" : "ended OK";
                }
                catch (RpcException ex)
                {
                    outcome = ex.StatusCode.ToString();
                    detail = ex.Status.Detail;
                }

                if (Volatile.Read(ref frozen))
                {
                    return;
                }

                Interlocked.Exchange(ref done[id], 1);
                Interlocked.Increment(ref doneCount);
                if (Volatile.Read(ref sent[id]) == 1)
                {
                    Interlocked.Decrement(ref heldAtRelay);
                }
                else
                {
                    Interlocked.Increment(ref doneUnsent);
                }

                if (outcome != "DeadlineExceeded" && firstRefusal[0] < 0)
                {
                    firstRefusal[0] = watch.Seconds();
                }

                tally.Add(outcome, detail);
            }));
            if (started % 256 == 0)
            {
                await Task.Yield();
            }
        }

        var startedIn = watch.Seconds();
        var remaining = options.Duration - watch.Elapsed;
        if (remaining > TimeSpan.Zero)
        {
            await Task.Delay(remaining);
        }

        Volatile.Write(ref frozen, true);
        report["calls_started"] = started;
        report["started_within_s"] = startedIn;
        report["headers_sent"] = Interlocked.Read(ref sentCount);
        report["held_at_relay_at_end"] = Interlocked.Read(ref heldAtRelay);
        report["held_at_relay_peak"] = Interlocked.Read(ref peakHeld);
        report["queued_in_client_at_end"] = started - Interlocked.Read(ref sentCount) - Interlocked.Read(ref doneUnsent);
        report["ended_by_status"] = tally.Counts;
        report["status_details"] = tally.Details;
        report["first_refusal_s"] = firstRefusal[0];
        report["connections_opened"] = AttackClient.ConnectionsOpened;
        report["elapsed_s"] = watch.Seconds();
        report.Print();
        // Leave like an attacker that simply disconnects: the relay cleans up every call of the closed connections at
        // once (cancelling 100,000 calls one by one first would take the client tens of seconds).
        Environment.Exit(0);
        return 0;
    }

    /// <summary>
    /// auth-fail: Control calls with a wrong token over a few connections, as fast as the relay answers them.
    /// </summary>
    public static async Task<int> AuthFailAsync(AttackOptions options)
    {
        var report = new AttackReport();
        var count = options.Int("count", 20_000);
        var connections = options.Int("connections", 4);
        var concurrency = options.Int("concurrency", 128);
        var wrong = "wrong-" + Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16)).ToLowerInvariant();
        var channels = Enumerable.Range(0, connections).Select(_ => AttackClient.Channel(options)).ToArray();
        var clients = channels.Select(c => new Tunnel.TunnelClient(c)).ToArray();
        var tally = new Tally();
        using var gate = new SemaphoreSlim(concurrency);
        var watch = Stopwatch.StartNew();
        var tasks = new List<Task>();
        var started = 0;
        while (started < count && watch.Elapsed < options.Duration)
        {
            if (!await gate.WaitAsync(options.Duration - watch.Elapsed > TimeSpan.Zero ? options.Duration - watch.Elapsed : TimeSpan.Zero))
            {
                break;
            }

            var id = started++;
            tasks.Add(Task.Run(async () =>
            {
                try
                {
                    using var callTimeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
                    using var call = clients[id % connections].Control(AttackClient.Auth(wrong), cancellationToken: callTimeout.Token);
                    await call.ResponseStream.MoveNext();
                    tally.Add("no error");
                }
                catch (RpcException ex)
                {
                    tally.Add(ex.StatusCode.ToString(), ex.Status.Detail);
                }
                finally
                {
                    gate.Release();
                }
            }));
        }

        await Task.WhenAny(Task.WhenAll(tasks), Task.Delay(20_000));
        report["calls_started"] = started;
        report["calls_answered"] = tally.Total;
        report["ended_by_status"] = tally.Counts;
        report["status_details"] = tally.Details;
        report["connections_opened"] = AttackClient.ConnectionsOpened;
        report["elapsed_s"] = watch.Seconds();
        report["calls_per_s"] = Math.Round(tally.Total / watch.Elapsed.TotalSeconds);
        report.Print();
        foreach (var channel in channels)
        {
            channel.Dispose();
        }

        return 0;
    }
}
