using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;

namespace SiteLink.Bench.Attacks;

/// <summary>Attacks below gRPC: plain TCP on a cloud endpoint, TLS and raw HTTP/2 on the agent port.</summary>
internal static class SocketAttacks
{
    /// <summary>When each held connection was closed by the far side, and how.</summary>
    private sealed class Closures
    {
        private readonly List<double> _times = [];
        public readonly Tally How = new();

        public void Add(double afterConnect, string how)
        {
            lock (_times)
            {
                _times.Add(afterConnect);
            }

            How.Add(how);
        }

        public int Count
        {
            get
            {
                lock (_times)
                {
                    return _times.Count;
                }
            }
        }

        public void Report(AttackReport report, string prefix)
        {
            lock (_times)
            {
                _times.Sort();
                report[prefix + "closed"] = _times.Count;
                report[prefix + "closed_how"] = How.Counts;
                if (_times.Count > 0)
                {
                    report[prefix + "close_after_s_min"] = Math.Round(_times[0], 3);
                    report[prefix + "close_after_s_median"] = Math.Round(_times[_times.Count / 2], 3);
                    report[prefix + "close_after_s_max"] = Math.Round(_times[^1], 3);
                }
            }
        }
    }

    /// <summary>
    /// silent-public: many TCP connections to a cloud endpoint that send nothing, held for the duration; counts how
    /// many the relay took and how many it closed (and when).
    /// </summary>
    public static async Task<int> SilentPublicAsync(AttackOptions options)
    {
        var report = new AttackReport();
        var port = options.Int("port", 0);
        var count = options.Int("count", 2000);
        var connectFailures = new Tally();
        var closures = new Closures();
        var sockets = new List<Socket>();
        var watch = Stopwatch.StartNew();
        using var gate = new SemaphoreSlim(100);
        using var end = new CancellationTokenSource(options.Duration);
        var unexpectedBytes = 0L;
        var watchers = new List<Task>();
        var opening = Enumerable.Range(0, count).Select(async _ =>
        {
            await gate.WaitAsync();
            Socket socket;
            try
            {
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
                socket = await AttackClient.ConnectAsync(options.Source, "127.0.0.1", port, timeout.Token);
            }
            catch (Exception ex)
            {
                connectFailures.Add(AttackClient.Describe(ex));
                return;
            }
            finally
            {
                gate.Release();
            }

            var connectedAt = watch.Elapsed.TotalSeconds;
            lock (sockets)
            {
                sockets.Add(socket);
                watchers.Add(Task.Run(async () =>
                {
                    var buffer = new byte[1024];
                    try
                    {
                        while (true)
                        {
                            var read = await socket.ReceiveAsync(buffer, SocketFlags.None, end.Token);
                            if (read == 0)
                            {
                                closures.Add(watch.Elapsed.TotalSeconds - connectedAt, "FIN");
                                return;
                            }

                            Interlocked.Add(ref unexpectedBytes, read);
                        }
                    }
                    catch (OperationCanceledException)
                    {
                    }
                    catch (SocketException ex)
                    {
                        closures.Add(watch.Elapsed.TotalSeconds - connectedAt, ex.SocketErrorCode.ToString());
                    }
                }));
            }
        }).ToList();
        await Task.WhenAll(opening);
        report["connected_within_s"] = watch.Seconds();
        var closedEarly = closures.Count;
        try
        {
            await Task.Delay(options.Duration - watch.Elapsed, end.Token);
        }
        catch (OperationCanceledException)
        {
        }
        catch (ArgumentOutOfRangeException)
        {
        }

        await Task.WhenAll(watchers.ToArray());
        report["attempted"] = count;
        report["tcp_connected"] = sockets.Count;
        report["connect_failed"] = connectFailures.Counts;
        report["closed_while_opening"] = closedEarly;
        closures.Report(report, "");
        report["open_at_end"] = sockets.Count - closures.Count;
        report["bytes_received"] = unexpectedBytes;
        report["elapsed_s"] = watch.Seconds();
        report.Print();
        foreach (var socket in sockets)
        {
            socket.Dispose();
        }

        return 0;
    }

    private static SslClientAuthenticationOptions TlsOptions() => new()
    {
        TargetHost = "localhost",
        ApplicationProtocols = [SslApplicationProtocol.Http2],
        RemoteCertificateValidationCallback = (_, _, _, _) => true,
    };

    /// <summary>
    /// idle-tls: many TCP connections to the agent port that complete TLS (ALPN h2) and then send nothing, not even the
    /// HTTP/2 preface; held for the duration.
    /// </summary>
    public static async Task<int> IdleTlsAsync(AttackOptions options)
    {
        var report = new AttackReport();
        var port = options.Int("port", 0);
        var count = options.Int("count", 2000);
        var failures = new Tally();
        var closures = new Closures();
        var held = new List<SslStream>();
        var watch = Stopwatch.StartNew();
        using var gate = new SemaphoreSlim(64);
        using var end = new CancellationTokenSource(options.Duration);
        var tcpConnected = 0;
        var bytesReceived = 0L;
        var watchers = new List<Task>();
        var opening = Enumerable.Range(0, count).Select(async _ =>
        {
            await gate.WaitAsync();
            SslStream tls;
            double connectedAt;
            try
            {
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
                Socket socket;
                try
                {
                    socket = await AttackClient.ConnectAsync(options.Source, "127.0.0.1", port, timeout.Token);
                }
                catch (Exception ex)
                {
                    failures.Add("tcp: " + AttackClient.Describe(ex));
                    return;
                }

                Interlocked.Increment(ref tcpConnected);
                connectedAt = watch.Elapsed.TotalSeconds;
                tls = new SslStream(new NetworkStream(socket, ownsSocket: true));
                try
                {
                    await tls.AuthenticateAsClientAsync(TlsOptions(), timeout.Token);
                }
                catch (Exception ex)
                {
                    failures.Add("tls: " + AttackClient.Describe(ex));
                    closures.Add(watch.Elapsed.TotalSeconds - connectedAt, "during TLS handshake");
                    await tls.DisposeAsync();
                    return;
                }
            }
            finally
            {
                gate.Release();
            }

            lock (held)
            {
                held.Add(tls);
                watchers.Add(Task.Run(async () =>
                {
                    var buffer = new byte[4096];
                    try
                    {
                        while (true)
                        {
                            var read = await tls.ReadAsync(buffer, end.Token);
                            if (read == 0)
                            {
                                closures.Add(watch.Elapsed.TotalSeconds - connectedAt, "FIN/close_notify");
                                return;
                            }

                            Interlocked.Add(ref bytesReceived, read);
                        }
                    }
                    catch (OperationCanceledException)
                    {
                    }
                    catch (Exception ex)
                    {
                        closures.Add(watch.Elapsed.TotalSeconds - connectedAt, AttackClient.Describe(ex));
                    }
                }));
            }
        }).ToList();
        await Task.WhenAll(opening);
        report["opened_within_s"] = watch.Seconds();
        try
        {
            await Task.Delay(options.Duration - watch.Elapsed, end.Token);
        }
        catch (OperationCanceledException)
        {
        }
        catch (ArgumentOutOfRangeException)
        {
        }

        await Task.WhenAll(watchers.ToArray());
        report["attempted"] = count;
        report["tcp_connected"] = tcpConnected;
        report["tls_established"] = held.Count;
        report["failures"] = failures.Counts;
        closures.Report(report, "");
        report["open_at_end"] = tcpConnected - closures.Count;
        report["bytes_received"] = bytesReceived;
        report["elapsed_s"] = watch.Seconds();
        report.Print();
        foreach (var tls in held)
        {
            await tls.DisposeAsync();
        }

        return 0;
    }

    // HTTP/2 frame types and flags used below (RFC 9113).
    private const byte Data = 0x0, Headers = 0x1, RstStream = 0x3, Settings = 0x4, Ping = 0x6, GoAway = 0x7;
    private const byte EndHeaders = 0x4, Ack = 0x1;

    private static void WriteFrameHeader(Span<byte> into, int length, byte type, byte flags, int streamId)
    {
        into[0] = (byte)(length >> 16);
        into[1] = (byte)(length >> 8);
        into[2] = (byte)length;
        into[3] = type;
        into[4] = flags;
        BinaryPrimitives.WriteInt32BigEndian(into[5..], streamId & 0x7fffffff);
    }

    /// <summary>An HPACK header block of literals without indexing, new names, no Huffman: the same bytes for every stream.</summary>
    private static byte[] HeaderBlock(string authority)
    {
        var block = new List<byte>();
        void Literal(string name, string value)
        {
            block.Add(0x00);
            block.Add((byte)name.Length);
            block.AddRange(Encoding.ASCII.GetBytes(name));
            block.Add((byte)value.Length);
            block.AddRange(Encoding.ASCII.GetBytes(value));
        }

        Literal(":method", "POST");
        Literal(":scheme", "https");
        Literal(":path", "/sitelink.v1.Tunnel/Control");
        Literal(":authority", authority);
        Literal("content-type", "application/grpc");
        Literal("te", "trailers");
        return [.. block];
    }

    private static string ErrorName(uint code) => code switch
    {
        0 => "NO_ERROR",
        1 => "PROTOCOL_ERROR",
        2 => "INTERNAL_ERROR",
        3 => "FLOW_CONTROL_ERROR",
        5 => "STREAM_CLOSED",
        6 => "FRAME_SIZE_ERROR",
        7 => "REFUSED_STREAM",
        8 => "CANCEL",
        11 => "ENHANCE_YOUR_CALM",
        _ => $"0x{code:x}",
    };

    /// <summary>
    /// rapid-reset: one TLS connection with ALPN h2; the preface, SETTINGS, then HEADERS + RST_STREAM(CANCEL) pairs on
    /// streams 1, 3, 5, ... as fast as possible, until the server closes the connection or sends GOAWAY.
    /// </summary>
    public static async Task<int> RapidResetAsync(AttackOptions options)
    {
        var pairs = options.Int("count", 100_000);
        if (options.Int("reconnect", 0) == 0)
        {
            var (single, _, _) = await OneConnectionAsync(options, pairs, options.Duration, catchUp: true);
            single.Print();
            return 0;
        }

        // --reconnect 1: a new connection each time the relay closes one, until the duration or the pairs run out.
        var report = new AttackReport();
        var watch = Stopwatch.StartNew();
        var sent = 0;
        var connections = 0;
        var stopped = new Tally();
        var failedConnects = new Tally();
        while (sent < pairs && watch.Elapsed < options.Duration)
        {
            try
            {
                var (_, n, why) = await OneConnectionAsync(options, pairs - sent, options.Duration - watch.Elapsed, catchUp: false);
                connections++;
                sent += n;
                stopped.Add(why);
            }
            catch (Exception ex)
            {
                failedConnects.Add(AttackClient.Describe(ex));
                await Task.Delay(10);
            }
        }

        report["pairs_sent"] = sent;
        report["connections"] = connections;
        report["connections_stopped_by"] = stopped.Counts;
        report["failed_connects"] = failedConnects.Counts;
        report["elapsed_s"] = watch.Seconds();
        report.Print();
        return 0;
    }

    private static async Task<(AttackReport Report, int Pairs, string Stopped)> OneConnectionAsync(AttackOptions options, int pairs, TimeSpan duration, bool catchUp)
    {
        var report = new AttackReport();
        var port = options.Int("port", 0);
        const int Batch = 100;
        var socket = await AttackClient.ConnectAsync(options.Source, "127.0.0.1", port, CancellationToken.None);
        await using var tls = new SslStream(new NetworkStream(socket, ownsSocket: true));
        await tls.AuthenticateAsClientAsync(TlsOptions());
        report["alpn"] = tls.NegotiatedApplicationProtocol.ToString();
        using var writeLock = new SemaphoreSlim(1);
        var watch = Stopwatch.StartNew();
        var sentPairs = 0;
        var stop = new CancellationTokenSource(duration);
        var responseHeaders = 0;
        var resets = new Tally();
        var goAwaySeen = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var closedSeen = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var goAways = new List<string>();
        var pingAnswered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var firstGoAway = -1.0;
        var pairsAtGoAway = -1;

        async Task WriteAsync(byte[] bytes, int length)
        {
            await writeLock.WaitAsync();
            try
            {
                await tls.WriteAsync(bytes.AsMemory(0, length));
            }
            finally
            {
                writeLock.Release();
            }
        }

        var reader = Task.Run(async () =>
        {
            var header = new byte[9];
            try
            {
                while (true)
                {
                    await tls.ReadExactlyAsync(header);
                    var length = (header[0] << 16) | (header[1] << 8) | header[2];
                    var type = header[3];
                    var flags = header[4];
                    var payload = new byte[length];
                    await tls.ReadExactlyAsync(payload);
                    switch (type)
                    {
                        case Settings when (flags & Ack) == 0:
                            var ack = new byte[9];
                            WriteFrameHeader(ack, 0, Settings, Ack, 0);
                            await WriteAsync(ack, 9);
                            break;
                        case Ping when (flags & Ack) == 0:
                            var pong = new byte[9 + 8];
                            WriteFrameHeader(pong, 8, Ping, Ack, 0);
                            payload.CopyTo(pong, 9);
                            await WriteAsync(pong, pong.Length);
                            break;
                        case Ping:
                            pingAnswered.TrySetResult();
                            break;
                        case Headers:
                            Interlocked.Increment(ref responseHeaders);
                            break;
                        case RstStream:
                            resets.Add(ErrorName(BinaryPrimitives.ReadUInt32BigEndian(payload)));
                            break;
                        case GoAway:
                            var last = BinaryPrimitives.ReadInt32BigEndian(payload) & 0x7fffffff;
                            var code = ErrorName(BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(4)));
                            var debug = Encoding.UTF8.GetString(payload, 8, length - 8);
                            lock (goAways)
                            {
                                if (goAways.Count == 0)
                                {
                                    firstGoAway = watch.Elapsed.TotalSeconds;
                                    pairsAtGoAway = Volatile.Read(ref sentPairs);
                                }

                                goAways.Add($"{code} last-stream {last}{(debug.Length > 0 ? " \"" + debug + "\"" : "")}");
                            }

                            goAwaySeen.TrySetResult(code);
                            break;
                        case Data:
                            break;
                    }
                }
            }
            catch (EndOfStreamException)
            {
                closedSeen.TrySetResult("closed (FIN)");
            }
            catch (Exception ex)
            {
                closedSeen.TrySetResult("closed: " + AttackClient.Describe(ex));
            }
        });

        // Preface and an empty SETTINGS frame.
        var preface = Encoding.ASCII.GetBytes("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").Concat(new byte[9]).ToArray();
        WriteFrameHeader(preface.AsSpan(24), 0, Settings, 0, 0);
        await WriteAsync(preface, preface.Length);

        var block = HeaderBlock($"127.0.0.1:{port}");
        var pairSize = 9 + block.Length + 9 + 4;
        var buffer = new byte[pairSize * Batch];
        string? writeFailure = null;
        var closedAtPairs = -1;
        var closedAt = -1.0;
        try
        {
            var streamId = 1;
            while (sentPairs < pairs && !stop.IsCancellationRequested && !closedSeen.Task.IsCompleted && !goAwaySeen.Task.IsCompleted)
            {
                var n = Math.Min(Batch, pairs - sentPairs);
                var at = 0;
                for (var i = 0; i < n; i++, streamId += 2)
                {
                    WriteFrameHeader(buffer.AsSpan(at), block.Length, Headers, EndHeaders, streamId);
                    block.CopyTo(buffer, at + 9);
                    at += 9 + block.Length;
                    WriteFrameHeader(buffer.AsSpan(at), 4, RstStream, 0, streamId);
                    BinaryPrimitives.WriteUInt32BigEndian(buffer.AsSpan(at + 9), 8); // CANCEL
                    at += 13;
                }

                await WriteAsync(buffer, at);
                Interlocked.Add(ref sentPairs, n);
            }
        }
        catch (Exception ex)
        {
            writeFailure = AttackClient.Describe(ex);
        }

        var sendingStopped = watch.Seconds();
        if (catchUp && writeFailure is null && !closedSeen.Task.IsCompleted && !goAwaySeen.Task.IsCompleted)
        {
            // Everything went into socket buffers: a PING after the last pair is answered once the server has read them all.
            try
            {
                var ping = new byte[9 + 8];
                WriteFrameHeader(ping, 8, Ping, 0, 0);
                "caughtup"u8.CopyTo(ping.AsSpan(9));
                await WriteAsync(ping, ping.Length);
                await Task.WhenAny(pingAnswered.Task, closedSeen.Task, goAwaySeen.Task, Task.Delay(TimeSpan.FromSeconds(60)));
                report["server_caught_up_s"] = pingAnswered.Task.IsCompleted ? watch.Seconds() : -1;
            }
            catch (Exception ex)
            {
                writeFailure = AttackClient.Describe(ex);
            }
        }

        // After GOAWAY the server finishes and closes: wait a moment to see it.
        await Task.WhenAny(closedSeen.Task, Task.Delay(TimeSpan.FromSeconds(!catchUp ? 0.2 : goAwaySeen.Task.IsCompleted || writeFailure is not null ? 5 : 2)));
        if (closedSeen.Task.IsCompleted)
        {
            closedAt = watch.Seconds();
            closedAtPairs = Volatile.Read(ref sentPairs);
        }

        var stoppedBecause = goAwaySeen.Task.IsCompleted ? "GOAWAY" : closedSeen.Task.IsCompleted ? "connection closed" : writeFailure is not null ? "write failed" : sentPairs >= pairs ? "all pairs sent" : "duration";
        report["pairs_sent"] = sentPairs;
        report["sending_stopped_s"] = sendingStopped;
        report["stopped_because"] = stoppedBecause;
        report["write_failure"] = writeFailure;
        report["goaway"] = goAways;
        report["goaway_after_s"] = Math.Round(firstGoAway, 3);
        report["pairs_sent_before_goaway"] = pairsAtGoAway;
        report["closed"] = closedSeen.Task.IsCompleted ? closedSeen.Task.Result : "still open";
        report["closed_after_s"] = closedAt;
        report["response_headers"] = Volatile.Read(ref responseHeaders);
        report["rst_from_server"] = resets.Counts;
        report["elapsed_s"] = watch.Seconds();
        stop.Dispose();
        return (report, sentPairs, stoppedBecause);
    }
}
