using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Text;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>
/// A minimal HTTP/2 client over TLS (to 127.0.0.1 only) that writes frames by hand, to attack the agent port the way
/// no HTTP library would: streams opened and reset at once, connections that never make a call. Headers are HPACK
/// "literal without indexing, new name" (no Huffman, no dynamic table). A background reader answers the server's
/// SETTINGS and PINGs and records what it sends: its SETTINGS, GOAWAY, RST_STREAMs, and how the connection ended.
/// </summary>
internal sealed class RawHttp2Client : IAsyncDisposable
{
    public const int SettingsMaxConcurrentStreams = 0x3;

    private const byte HeadersFrame = 0x1, RstStreamFrame = 0x3, SettingsFrame = 0x4, PingFrame = 0x6, GoAwayFrame = 0x7;
    private const byte EndHeaders = 0x4, Ack = 0x1, Cancel = 0x8;
    private static readonly byte[] Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray();

    private readonly SslStream _tls;
    private readonly string _authority;
    private readonly SemaphoreSlim _writing = new(1, 1);
    private readonly TaskCompletionSource<IReadOnlyDictionary<int, long>?> _settings = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly ConcurrentDictionary<long, TaskCompletionSource<bool>> _pings = new();
    private readonly ConcurrentQueue<(int StreamId, int ErrorCode)> _resets = new();
    private Task _reader = Task.CompletedTask;
    private int _nextStreamId = 1;
    private long _nextPing;

    private RawHttp2Client(SslStream tls, string authority)
    {
        _tls = tls;
        _authority = authority;
    }

    /// <summary>The server's first SETTINGS (identifier to value); null when the connection closed before it came.</summary>
    public Task<IReadOnlyDictionary<int, long>?> ServerSettings => _settings.Task;

    /// <summary>Completes when the connection ended: end of stream, reset, or an error reading it.</summary>
    public Task Closed => _closed.Task;

    /// <summary>How the connection ended ("EOF", or the exception), once <see cref="Closed"/> completed.</summary>
    public string? CloseReason { get; private set; }

    /// <summary>The error code of the server's GOAWAY, if it sent one.</summary>
    public int? GoAwayErrorCode { get; private set; }

    /// <summary>The server's RST_STREAM frames: stream id and error code.</summary>
    public IReadOnlyCollection<(int StreamId, int ErrorCode)> Resets => _resets;

    /// <summary>
    /// Opens a TCP connection to the agent port on 127.0.0.1 (whatever the URL's host), from <paramref name="from"/>
    /// (another loopback address, to be another client to the relay's per-address limits) when given.
    /// </summary>
    public static async Task<Socket> OpenTcpAsync(Uri agentUrl, IPAddress? from = null)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            if (from is not null)
            {
                socket.Bind(new IPEndPoint(from, 0));
            }

            await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, agentUrl.Port));
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>TLS (pinned certificate, ALPN h2) on <paramref name="socket"/>, then the connection preface and an empty SETTINGS.</summary>
    /// <exception cref="IOException">The server closed the connection, or the handshake failed; the socket is disposed.</exception>
    public static async Task<RawHttp2Client> StartAsync(Socket socket, Uri agentUrl, string pinnedCertificateSha256)
    {
        var pin = Convert.FromHexString(pinnedCertificateSha256);
        SslStream tls;
        try
        {
            tls = new SslStream(new NetworkStream(socket, ownsSocket: true));
        }
        catch (IOException)
        {
            socket.Dispose();
            throw;
        }

        try
        {
            await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
            {
                TargetHost = "127.0.0.1",
                ApplicationProtocols = [SslApplicationProtocol.Http2],
                RemoteCertificateValidationCallback = (_, certificate, _, _) =>
                    certificate is not null && SHA256.HashData(certificate.GetRawCertData()).AsSpan().SequenceEqual(pin),
            });
            if (tls.NegotiatedApplicationProtocol != SslApplicationProtocol.Http2)
            {
                throw new IOException($"ALPN selected '{tls.NegotiatedApplicationProtocol}', not h2");
            }

            var client = new RawHttp2Client(tls, $"127.0.0.1:{agentUrl.Port}");
            await client.WriteAsync(frames =>
            {
                frames.Write(Preface);
                AppendFrame(frames, SettingsFrame, 0, 0, []);
            });
            client._reader = client.ReadLoopAsync();
            return client;
        }
        catch (Exception ex) when (ex is IOException or SocketException or AuthenticationException)
        {
            await tls.DisposeAsync();
            throw ex as IOException ?? new IOException("the connection failed before HTTP/2 started", ex);
        }
    }

    public static async Task<RawHttp2Client> ConnectAsync(Uri agentUrl, string pinnedCertificateSha256, IPAddress? from = null) =>
        await StartAsync(await OpenTcpAsync(agentUrl, from), agentUrl, pinnedCertificateSha256);

    /// <summary>
    /// Opens <paramref name="count"/> gRPC calls to <paramref name="path"/> (HEADERS without END_STREAM, with
    /// "authorization: Bearer <paramref name="token"/>" unless it is null), each followed at once by RST_STREAM(CANCEL)
    /// when <paramref name="reset"/>, all in one write.
    /// </summary>
    public Task SendCallsAsync(int count, string path, string? token, bool reset)
    {
        using var block = new MemoryStream();
        AppendHeader(block, ":method", "POST");
        AppendHeader(block, ":scheme", "https");
        AppendHeader(block, ":path", path);
        AppendHeader(block, ":authority", _authority);
        AppendHeader(block, "content-type", "application/grpc");
        AppendHeader(block, "te", "trailers");
        if (token is not null)
        {
            AppendHeader(block, "authorization", "Bearer " + token);
        }

        var headers = block.ToArray();
        return WriteAsync(frames =>
        {
            for (var i = 0; i < count; i++, _nextStreamId += 2)
            {
                AppendFrame(frames, HeadersFrame, EndHeaders, _nextStreamId, headers);
                if (reset)
                {
                    AppendFrame(frames, RstStreamFrame, 0, _nextStreamId, [0, 0, 0, Cancel]);
                }
            }
        });
    }

    /// <summary>Sends a PING: true when its ACK came back (the server read everything sent before it), false when the connection ended first.</summary>
    public async Task<bool> PingAsync()
    {
        var id = Interlocked.Increment(ref _nextPing);
        var acked = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pings[id] = acked;
        if (Closed.IsCompleted)
        {
            acked.TrySetResult(false);
        }

        var payload = new byte[8];
        BinaryPrimitives.WriteInt64BigEndian(payload, id);
        try
        {
            await WriteAsync(frames => AppendFrame(frames, PingFrame, 0, 0, payload));
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException)
        {
            acked.TrySetResult(false);
        }

        return await acked.Task;
    }

    /// <summary>Builds frames and writes them, one writer at a time (so stream ids reach the server in order).</summary>
    private async Task WriteAsync(Action<MemoryStream> build)
    {
        using var frames = new MemoryStream();
        await _writing.WaitAsync();
        try
        {
            build(frames);
            await _tls.WriteAsync(frames.GetBuffer().AsMemory(0, (int)frames.Length));
            await _tls.FlushAsync();
        }
        finally
        {
            _writing.Release();
        }
    }

    private async Task ReadLoopAsync()
    {
        var header = new byte[9];
        try
        {
            while (await _tls.ReadAtLeastAsync(header, header.Length, throwOnEndOfStream: false) == header.Length)
            {
                var payload = new byte[(header[0] << 16) | (header[1] << 8) | header[2]];
                await _tls.ReadExactlyAsync(payload);
                await OnFrameAsync(header[3], header[4], BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(5)) & 0x7FFFFFFF, payload);
            }

            CloseReason = "EOF";
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or SocketException)
        {
            CloseReason = $"{ex.GetType().Name}: {ex.Message}";
        }
        finally
        {
            // Closed first: a ping registered after the loop below sees it and does not wait for an ACK.
            _closed.TrySetResult();
            _settings.TrySetResult(null);
            foreach (var ping in _pings.Values)
            {
                ping.TrySetResult(false);
            }
        }
    }

    private async Task OnFrameAsync(byte type, byte flags, int streamId, byte[] payload)
    {
        switch (type)
        {
            case SettingsFrame when (flags & Ack) == 0:
                var values = new Dictionary<int, long>();
                for (var i = 0; i + 6 <= payload.Length; i += 6)
                {
                    values[BinaryPrimitives.ReadUInt16BigEndian(payload.AsSpan(i))] = BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(i + 2));
                }

                _settings.TrySetResult(values);
                await WriteAsync(frames => AppendFrame(frames, SettingsFrame, Ack, 0, []));
                break;
            case PingFrame when (flags & Ack) != 0:
                if (_pings.TryRemove(BinaryPrimitives.ReadInt64BigEndian(payload), out var acked))
                {
                    acked.TrySetResult(true);
                }

                break;
            case PingFrame:
                await WriteAsync(frames => AppendFrame(frames, PingFrame, Ack, 0, payload));
                break;
            case GoAwayFrame:
                GoAwayErrorCode = BinaryPrimitives.ReadInt32BigEndian(payload.AsSpan(4));
                break;
            case RstStreamFrame:
                _resets.Enqueue((streamId, BinaryPrimitives.ReadInt32BigEndian(payload)));
                break;
        }
    }

    private static void AppendFrame(MemoryStream output, byte type, byte flags, int streamId, ReadOnlySpan<byte> payload)
    {
        Span<byte> header = [(byte)(payload.Length >> 16), (byte)(payload.Length >> 8), (byte)payload.Length, type, flags, 0, 0, 0, 0];
        BinaryPrimitives.WriteInt32BigEndian(header[5..], streamId & 0x7FFFFFFF);
        output.Write(header);
        output.Write(payload);
    }

    /// <summary>HPACK literal header field without indexing, new name (RFC 7541 §6.2.2), strings without Huffman.</summary>
    private static void AppendHeader(MemoryStream block, string name, string value)
    {
        block.WriteByte(0x00);
        AppendString(block, name);
        AppendString(block, value);
    }

    /// <summary>A string literal: its length as a 7-bit prefix integer (RFC 7541 §5.1) with the H bit clear, then the bytes.</summary>
    private static void AppendString(MemoryStream block, string text)
    {
        var bytes = Encoding.ASCII.GetBytes(text);
        var length = bytes.Length;
        if (length < 0x7F)
        {
            block.WriteByte((byte)length);
        }
        else
        {
            block.WriteByte(0x7F);
            for (length -= 0x7F; length >= 0x80; length >>= 7)
            {
                block.WriteByte((byte)((length & 0x7F) | 0x80));
            }

            block.WriteByte((byte)length);
        }

        block.Write(bytes);
    }

    public async ValueTask DisposeAsync()
    {
        await _tls.DisposeAsync();
        await _reader.DefaultTimeout();
        _writing.Dispose();
    }
}
