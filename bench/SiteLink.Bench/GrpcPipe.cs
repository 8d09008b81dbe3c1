using System.Buffers;
using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Grpc.AspNetCore.Server.Model;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace SiteLink.Bench;

/// <summary>
/// SiteLink's transport with nothing of SiteLink: one gRPC bidirectional-streaming call over HTTP/2 and TLS between a
/// Kestrel server and a SocketsHttpHandler/GrpcChannel client in another process, carrying 64 KiB messages one way.
/// The HTTP/2 settings are the relay's (src/SiteLink.Relay/Hosting/RelayApplication.cs: Kestrel's receive windows
/// 8 MiB per stream and 32 MiB per connection, 64 KiB frames, keep-alive pings, gRPC's receive limit of a frame plus
/// 1 KiB) and the SDK's (src/SiteLink.Sdk/Protocol/RelayConnection.cs: one HTTP/2 connection, a 4 MiB initial stream
/// window, no proxy, infinite pooled-connection lifetimes, a pinned certificate, 1 MiB + 1 KiB message limits); the
/// certificate is made like the relay's development certificate (self-signed ECDSA P-256). Each message is copied once
/// into the transport when sent and once out of it into a pooled buffer when received, as the data path's DataFrame
/// marshaller does. This is the ceiling of one tunnelled connection: what the relay and the agent add comes on top.
/// </summary>
internal static class GrpcPipe
{
    public const int MessageSize = 64 * 1024;

    /// <summary>The server sends, the client reads: the direction of a tunnelled connection's upload (relay → agent).</summary>
    public const string ServerToClient = "server-to-client";

    /// <summary>The client sends, the server reads: the direction of a tunnelled connection's download (agent → relay).</summary>
    public const string ClientToServer = "client-to-server";

    private const string DirectionHeader = "pipe-direction";
    private const string SecondsHeader = "pipe-seconds";

    /// <summary>Bytes of one message: a buffer (rented from the shared pool when received) and its length.</summary>
    internal sealed class Chunk(byte[] buffer, int length, bool rented)
    {
        public byte[] Buffer { get; } = buffer;

        public int Length { get; } = length;

        public void Release()
        {
            if (rented)
            {
                ArrayPool<byte>.Shared.Return(Buffer);
            }
        }
    }

    private static readonly Marshaller<Chunk> ChunkMarshaller = new(Serialize, Deserialize);

    internal static readonly Method<Chunk, Chunk> PipeMethod = new(MethodType.DuplexStreaming, "sitelink.bench.Pipe", "Pipe", ChunkMarshaller, ChunkMarshaller);

    private static void Serialize(Chunk chunk, SerializationContext context)
    {
        context.SetPayloadLength(chunk.Length);
        var writer = context.GetBufferWriter();
        var data = chunk.Buffer.AsSpan(0, chunk.Length);
        while (!data.IsEmpty)
        {
            var span = writer.GetSpan();
            var n = Math.Min(span.Length, data.Length);
            data[..n].CopyTo(span);
            writer.Advance(n);
            data = data[n..];
        }

        context.Complete();
    }

    private static Chunk Deserialize(DeserializationContext context)
    {
        var payload = context.PayloadAsReadOnlySequence();
        var length = checked((int)payload.Length);
        var buffer = ArrayPool<byte>.Shared.Rent(Math.Max(length, 1));
        payload.CopyTo(buffer);
        return new Chunk(buffer, length, rented: true);
    }

    // ------------------------------------------------------------------------------------------------------------
    // Server
    // ------------------------------------------------------------------------------------------------------------

    /// <summary>
    /// Serves the pipe on 127.0.0.1:<paramref name="port"/> until killed; prints "grpc-pipe-server listening PORT pin
    /// SHA256 gc server|workstation" (the relay runs with server GC: start it with DOTNET_gcServer=1 to match).
    /// </summary>
    public static async Task<int> ServeAsync(int port)
    {
        using var certificate = CreateCertificate();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddGrpc(grpc =>
        {
            // The relay's: a frame plus protobuf overhead.
            grpc.MaxReceiveMessageSize = MessageSize + 1024;
            grpc.EnableDetailedErrors = false;
        });
        builder.Services.TryAddEnumerable(ServiceDescriptor.Singleton<IServiceMethodProvider<PipeService>, PipeServiceMethods>());
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            var http2 = kestrel.Limits.Http2;
            // The relay's defaults (RelayLimits.AgentStreamWindow, AgentConnectionWindow) and settings.
            http2.InitialStreamWindowSize = 8 * 1024 * 1024;
            http2.InitialConnectionWindowSize = 32 * 1024 * 1024;
            http2.MaxFrameSize = 64 * 1024;
            http2.KeepAlivePingDelay = TimeSpan.FromSeconds(30);
            http2.KeepAlivePingTimeout = TimeSpan.FromSeconds(20);
            kestrel.Limits.MaxRequestHeadersTotalSize = 8 * 1024;
            http2.MaxRequestHeaderFieldSize = 8 * 1024;
            kestrel.Limits.KeepAliveTimeout = TimeSpan.FromSeconds(30);
            kestrel.Listen(IPAddress.Loopback, port, listen =>
            {
                listen.Protocols = HttpProtocols.Http2;
                listen.UseHttps(https => https.ServerCertificate = certificate);
            });
        });
        var app = builder.Build();
        app.MapGrpcService<PipeService>();
        await app.StartAsync();
        Console.WriteLine($"grpc-pipe-server listening {port} pin {Convert.ToHexString(SHA256.HashData(certificate.RawData))}"
            + $" gc {(System.Runtime.GCSettings.IsServerGC ? "server" : "workstation")}");
        await app.WaitForShutdownAsync();
        return 0;
    }

    internal sealed class PipeService
    {
        public static async Task Pipe(IAsyncStreamReader<Chunk> requests, IServerStreamWriter<Chunk> responses, ServerCallContext call)
        {
            var direction = call.RequestHeaders.GetValue(DirectionHeader);
            if (direction == ServerToClient)
            {
                // Send for the seconds asked, then end the call; the client measures what it received.
                var seconds = double.Parse(call.RequestHeaders.GetValue(SecondsHeader) ?? "5", System.Globalization.CultureInfo.InvariantCulture);
                var chunk = new Chunk(RandomNumberGenerator.GetBytes(MessageSize), MessageSize, rented: false);
                var clock = Stopwatch.StartNew();
                while (clock.Elapsed.TotalSeconds < seconds && !call.CancellationToken.IsCancellationRequested)
                {
                    await responses.WriteAsync(chunk);
                }
            }
            else
            {
                // Read until the client ends its stream, then answer with what arrived: the bytes after the first
                // message and the time from the first message to the last (16 bytes).
                var (bytes, elapsed) = await ReceiveAsync(requests, call.CancellationToken);
                var answer = new byte[16];
                BitConverter.TryWriteBytes(answer.AsSpan(0, 8), bytes);
                BitConverter.TryWriteBytes(answer.AsSpan(8, 8), elapsed.Ticks);
                await responses.WriteAsync(new Chunk(answer, answer.Length, rented: false));
            }
        }
    }

    private sealed class PipeServiceMethods : IServiceMethodProvider<PipeService>
    {
        public void OnServiceMethodDiscovery(ServiceMethodProviderContext<PipeService> context) =>
            context.AddDuplexStreamingMethod(PipeMethod, [], (_, requests, responses, call) => PipeService.Pipe(requests, responses, call));
    }

    /// <summary>Reads every message; returns the bytes after the first one and the time from the first to the last.</summary>
    private static async Task<(long Bytes, TimeSpan Elapsed)> ReceiveAsync(IAsyncStreamReader<Chunk> reader, CancellationToken cancellationToken)
    {
        long bytes = 0;
        var first = 0L;
        var last = 0L;
        var any = false;
        while (await reader.MoveNext(cancellationToken))
        {
            var chunk = reader.Current;
            last = Stopwatch.GetTimestamp();
            if (!any)
            {
                any = true;
                first = last;
            }
            else
            {
                bytes += chunk.Length;
            }

            chunk.Release();
        }

        return (bytes, Stopwatch.GetElapsedTime(first, last));
    }

    private static X509Certificate2 CreateCertificate()
    {
        // As the relay's development certificate (RelayCertificate.CreateDevelopmentCertificate).
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=SiteLink bench gRPC pipe", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName("localhost");
        names.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        var now = DateTimeOffset.UtcNow;
        using var certificate = request.CreateSelfSigned(now.AddDays(-1), now.AddDays(2));
        return X509CertificateLoader.LoadPkcs12(certificate.Export(X509ContentType.Pkcs12), null);
    }

    // ------------------------------------------------------------------------------------------------------------
    // Client
    // ------------------------------------------------------------------------------------------------------------

    /// <summary>
    /// One connection to the server; an unrecorded warm-up call of <paramref name="warmUp"/> in the same direction (the
    /// relay and the agent are long-running processes whose code is compiled and tiered up; this process is new), then
    /// the measured call of <paramref name="seconds"/>. Prints
    /// "grpc-pipe DIRECTION bytes B seconds S bytes/s R Gbit/s G", the receiver's count.
    /// </summary>
    public static async Task<int> ClientAsync(int port, string pin, string direction, double seconds, double warmUp)
    {
        if (direction is not (ServerToClient or ClientToServer))
        {
            Console.Error.WriteLine($"direction must be {ServerToClient} or {ClientToServer}");
            return 2;
        }

        var expected = Convert.FromHexString(pin);
        var handler = new SocketsHttpHandler
        {
            // The SDK's handler (RelayConnection.CreateHandler).
            ConnectTimeout = TimeSpan.FromSeconds(10),
            PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
            PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
            EnableMultipleHttp2Connections = false,
            InitialHttp2StreamWindowSize = 4 * 1024 * 1024,
            UseProxy = false,
            SslOptions = new SslClientAuthenticationOptions
            {
                // A pin, as the bench's agents use: the certificate's SHA-256.
                RemoteCertificateValidationCallback = (_, certificate, _, _) =>
                    certificate is not null && SHA256.HashData(certificate.GetRawCertData()).AsSpan().SequenceEqual(expected),
            },
        };
        using var channel = GrpcChannel.ForAddress($"https://127.0.0.1:{port}", new GrpcChannelOptions
        {
            HttpHandler = handler,
            DisposeHttpClient = true,
            MaxReceiveMessageSize = (1024 * 1024) + 1024,
            MaxSendMessageSize = (1024 * 1024) + 1024,
        });
        var invoker = channel.CreateCallInvoker();
        if (warmUp > 0)
        {
            await CallAsync(invoker, direction, warmUp);
        }

        var (bytes, elapsed) = await CallAsync(invoker, direction, seconds);
        var rate = elapsed.TotalSeconds > 0 ? bytes / elapsed.TotalSeconds : 0;
        Console.WriteLine(FormattableString.Invariant(
            $"grpc-pipe {direction} bytes {bytes} seconds {elapsed.TotalSeconds:F3} bytes/s {rate:F0} Gbit/s {rate * 8 / 1e9:F3}"));
        return bytes > 0 ? 0 : 1;
    }

    private static async Task<(long Bytes, TimeSpan Elapsed)> CallAsync(CallInvoker invoker, string direction, double seconds)
    {
        var headers = new Metadata
        {
            { DirectionHeader, direction },
            { SecondsHeader, seconds.ToString(System.Globalization.CultureInfo.InvariantCulture) },
        };
        using var call = invoker.AsyncDuplexStreamingCall(PipeMethod, null, new CallOptions(headers));
        if (direction == ServerToClient)
        {
            await call.RequestStream.CompleteAsync();
            return await ReceiveAsync(call.ResponseStream, CancellationToken.None);
        }

        var chunk = new Chunk(RandomNumberGenerator.GetBytes(MessageSize), MessageSize, rented: false);
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed.TotalSeconds < seconds)
        {
            await call.RequestStream.WriteAsync(chunk);
        }

        await call.RequestStream.CompleteAsync();
        if (!await call.ResponseStream.MoveNext(CancellationToken.None))
        {
            throw new IOException("the server did not report what it received");
        }

        var answer = call.ResponseStream.Current;
        var bytes = BitConverter.ToInt64(answer.Buffer, 0);
        var elapsed = TimeSpan.FromTicks(BitConverter.ToInt64(answer.Buffer, 8));
        answer.Release();
        return (bytes, elapsed);
    }
}
