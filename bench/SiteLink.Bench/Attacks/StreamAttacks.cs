using System.Diagnostics;
using Google.Protobuf;
using Grpc.Core;
using SiteLink.Protocol.V1;

namespace SiteLink.Bench.Attacks;

/// <summary>Attacks by an authenticated agent with parked data streams.</summary>
internal static class StreamAttacks
{
    private static Metadata Parked(string token, string sessionId, long? callId = null)
    {
        var metadata = AttackClient.Auth(token, callId);
        metadata.Add("sitelink-session-id", sessionId);
        metadata.Add("sitelink-parked", "1");
        return metadata;
    }

    /// <summary>Keeps a session alive while the attack runs: a heartbeat every few seconds.</summary>
    private static async Task HeartbeatsAsync(AsyncDuplexStreamingCall<AgentMessage, RelayMessage> call, CancellationToken cancellationToken)
    {
        ulong sequence = 0;
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                await Task.Delay(TimeSpan.FromSeconds(5), cancellationToken);
                await call.RequestStream.WriteAsync(new AgentMessage { Heartbeat = new Heartbeat { Sequence = ++sequence } }, cancellationToken);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or RpcException or IOException or InvalidOperationException)
        {
        }
    }

    /// <summary>
    /// parked-data: a session parks streams and pushes data down them without ever reading, all on the session's
    /// connection or spread over other connections (<c>--connections N</c>, N &gt; 1).
    /// </summary>
    public static async Task<int> ParkedDataAsync(AttackOptions options)
    {
        var report = new AttackReport();
        var streams = options.Int("streams", 32);
        var perStream = options.Int("mib", 8) * 1024L * 1024;
        var connections = options.Int("connections", 1);
        const int FrameSize = 64 * 1024;
        using var control = AttackClient.Channel(options);
        var controlClient = new Tunnel.TunnelClient(control);
        using var session = controlClient.Control(AttackClient.Auth(options.Token));
        var (welcome, drain) = await AttackClient.OpenSessionAsync(controlClient, session, "evil-parked-data");
        using var stop = new CancellationTokenSource();
        var heartbeats = HeartbeatsAsync(session, stop.Token);
        var others = Enumerable.Range(0, connections > 1 ? connections : 0).Select(_ => AttackClient.Channel(options)).ToArray();
        var clients = connections > 1 ? others.Select(c => new Tunnel.TunnelClient(c)).ToArray() : [controlClient];
        var watch = Stopwatch.StartNew();
        var frame = new StreamFrame { Data = ByteString.CopyFrom(new byte[FrameSize]) };
        var written = new long[streams];
        var tally = new Tally();
        var endedAt = new List<double>();
        var calls = new AsyncDuplexStreamingCall<StreamFrame, StreamFrame>[streams];
        for (var i = 0; i < streams; i++)
        {
            calls[i] = clients[i % clients.Length].Stream(Parked(options.Token, welcome.SessionId), cancellationToken: stop.Token);
        }

        // No write deadline of gRPC's own (a cancelled write cancels the call): a write still pending at the end of the
        // duration is one the relay's flow control holds back.
        var writers = Enumerable.Range(0, streams).Select(i => Task.Run(async () =>
        {
            var call = calls[i];
            try
            {
                while (written[i] < perStream)
                {
                    await call.RequestStream.WriteAsync(frame);
                    written[i] += FrameSize;
                }

                return "all written";
            }
            catch (Exception ex)
            {
                lock (endedAt)
                {
                    endedAt.Add(watch.Seconds());
                }

                return stop.IsCancellationRequested ? "cancelled by us"
                    : AttackClient.StatusOf(call) is { } status ? status.StatusCode.ToString() : AttackClient.Describe(ex);
            }
        })).ToArray();
        await Task.WhenAny(Task.WhenAll(writers), Task.Delay(options.Duration));
        var writtenTotal = written.Sum();
        report["written_mib"] = Math.Round(writtenTotal / 1048576.0, 1);
        report["write_outcomes"] = writers.Select(w => w.IsCompleted ? w.Result : "write blocked (flow control)").GroupBy(w => w).ToDictionary(g => g.Key, g => g.Count());
        report["writes_ended_s"] = writers.All(w => w.IsCompleted) ? watch.Seconds() : -1;
        lock (endedAt)
        {
            report["first_call_ended_s"] = endedAt.Count > 0 ? endedAt.Min() : -1;
        }

        // Now the calls' fate: read each for a moment (a status is there if the relay ended the call).
        var fates = await Task.WhenAll(calls.Select(async call =>
        {
            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(1));
            try
            {
                return await call.ResponseStream.MoveNext(wait.Token) ? "received a frame" : "ended OK";
            }
            catch (Exception) when (wait.IsCancellationRequested)
            {
                return "still open";
            }
            catch (RpcException ex)
            {
                tally.Add(ex.StatusCode.ToString(), ex.Status.Detail);
                return ex.StatusCode.ToString();
            }
        }));
        report["calls_at_end"] = fates.GroupBy(f => f).ToDictionary(g => g.Key, g => g.Count());
        report["status_details"] = tally.Details;
        report["control_status"] = AttackClient.StatusOf(session)?.StatusCode.ToString() ?? "open";
        report["connections"] = Math.Max(1, connections);
        report["elapsed_s"] = watch.Seconds();
        report.Print();
        await stop.CancelAsync();
        foreach (var call in calls)
        {
            call.Dispose();
        }

        await Task.WhenAny(Task.WhenAll(writers), Task.Delay(5000));

        await heartbeats;
        foreach (var channel in others)
        {
            channel.Dispose();
        }

        _ = drain;
        return 0;
    }

    /// <summary>
    /// parked-reset-leak: park the maximum number of streams, reset them all, then park as many again: a relay that
    /// forgets to release reset parked streams refuses the new ones (RESOURCE_EXHAUSTED).
    /// </summary>
    public static async Task<int> ParkedResetLeakAsync(AttackOptions options)
    {
        var report = new AttackReport();
        var streams = options.Int("streams", 32);
        var sent = new bool[streams * 2];
        using var channel = AttackClient.Channel(options, id => sent[id] = true);
        var client = new Tunnel.TunnelClient(channel);
        using var session = client.Control(AttackClient.Auth(options.Token));
        var (welcome, drain) = await AttackClient.OpenSessionAsync(client, session, "evil-parked-reset");
        using var stop = new CancellationTokenSource();
        var heartbeats = HeartbeatsAsync(session, stop.Token);
        var watch = Stopwatch.StartNew();

        async Task<Dictionary<string, int>> RoundAsync(int first, TimeSpan settle, List<AsyncDuplexStreamingCall<StreamFrame, StreamFrame>> calls, List<CancellationTokenSource> cancels)
        {
            var outcomes = new Task<string>[streams];
            for (var i = 0; i < streams; i++)
            {
                var cancel = new CancellationTokenSource();
                cancels.Add(cancel);
                var call = client.Stream(Parked(options.Token, welcome.SessionId, first + i), cancellationToken: cancel.Token);
                calls.Add(call);
                outcomes[i] = Task.Run(async () =>
                {
                    try
                    {
                        return await call.ResponseStream.MoveNext() ? "received a frame" : "ended OK";
                    }
                    catch (RpcException ex)
                    {
                        return ex.StatusCode.ToString();
                    }
                });
            }

            await Task.Delay(settle);
            return outcomes.Select(o => o.IsCompleted ? o.Result : "parked (waiting)").GroupBy(o => o).ToDictionary(g => g.Key, g => g.Count());
        }

        var first = new List<AsyncDuplexStreamingCall<StreamFrame, StreamFrame>>();
        var firstCancels = new List<CancellationTokenSource>();
        report["round1"] = await RoundAsync(0, TimeSpan.FromSeconds(2), first, firstCancels);
        report["round1_sent"] = sent.Take(streams).Count(s => s);
        foreach (var cancel in firstCancels)
        {
            await cancel.CancelAsync();
        }

        await Task.Delay(TimeSpan.FromSeconds(options.Double("gap", 2)));
        var second = new List<AsyncDuplexStreamingCall<StreamFrame, StreamFrame>>();
        var secondCancels = new List<CancellationTokenSource>();
        var round2 = await RoundAsync(streams, TimeSpan.FromSeconds(3), second, secondCancels);
        report["round2"] = round2;
        report["round2_sent"] = sent.Skip(streams).Count(s => s);
        report["round2_resource_exhausted"] = round2.TryGetValue(nameof(StatusCode.ResourceExhausted), out var n) ? n : 0;
        report["control_status"] = AttackClient.StatusOf(session)?.StatusCode.ToString() ?? "open";
        report["elapsed_s"] = watch.Seconds();
        report.Print();
        await stop.CancelAsync();
        foreach (var cancel in firstCancels.Concat(secondCancels))
        {
            await cancel.CancelAsync();
            cancel.Dispose();
        }

        await heartbeats;
        _ = drain;
        return 0;
    }
}
