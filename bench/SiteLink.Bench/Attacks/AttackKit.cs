using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text.Json;
using Grpc.Core;
using Grpc.Net.Client;
using SiteLink.Protocol.V1;

namespace SiteLink.Bench.Attacks;

/// <summary>The command line of one attack: <c>--key value</c> pairs.</summary>
internal sealed class AttackOptions
{
    private readonly Dictionary<string, string> _values = new(StringComparer.OrdinalIgnoreCase);

    public static AttackOptions Parse(IEnumerable<string> args)
    {
        var options = new AttackOptions();
        var list = args.ToList();
        for (var i = 0; i < list.Count; i++)
        {
            if (!list[i].StartsWith("--", StringComparison.Ordinal) || i + 1 >= list.Count)
            {
                throw new ArgumentException($"expected --key value, got '{list[i]}'");
            }

            options._values[list[i][2..]] = list[++i];
        }

        return options;
    }

    public string Text(string key, string? fallback = null) =>
        _values.TryGetValue(key, out var value) ? value : fallback ?? throw new ArgumentException($"--{key} is required");

    public int Int(string key, int fallback) => _values.TryGetValue(key, out var value) ? int.Parse(value, CultureInfo.InvariantCulture) : fallback;

    public double Double(string key, double fallback) => _values.TryGetValue(key, out var value) ? double.Parse(value, CultureInfo.InvariantCulture) : fallback;

    /// <summary>The relay's agent URL, e.g. https://127.0.0.1:1234.</summary>
    public Uri Relay => new(Text("relay"));

    /// <summary>The address the attacker's sockets are bound to (another loopback address than the good agent's).</summary>
    public IPAddress Source => IPAddress.Parse(Text("source", "127.0.0.2"));

    public string Token => Text("token");

    public TimeSpan Duration => TimeSpan.FromSeconds(Double("seconds", 12));
}

/// <summary>The one line an attack ends with, which bench/hostile.py parses: <c>RESULT {json}</c>.</summary>
internal sealed class AttackReport
{
    private readonly Dictionary<string, object?> _values = [];

    public object? this[string key]
    {
        set => _values[key] = value;
    }

    public void Print()
    {
        Console.Out.Flush();
        Console.WriteLine("RESULT " + JsonSerializer.Serialize(_values));
    }
}

/// <summary>Counts outcomes by name, from many tasks at once, and keeps the first detail seen for each.</summary>
internal sealed class Tally
{
    private readonly ConcurrentDictionary<string, int> _counts = new();
    private readonly ConcurrentDictionary<string, string> _details = new();

    public void Add(string outcome, string? detail = null)
    {
        _counts.AddOrUpdate(outcome, 1, (_, n) => n + 1);
        if (detail is not null)
        {
            _details.TryAdd(outcome, detail);
        }
    }

    public int Count(string outcome) => _counts.TryGetValue(outcome, out var n) ? n : 0;

    public int Total => _counts.Values.Sum();

    public Dictionary<string, int> Counts => _counts.OrderByDescending(p => p.Value).ToDictionary(p => p.Key, p => p.Value);

    public Dictionary<string, string> Details => _details.ToDictionary(p => p.Key, p => p.Value);
}

/// <summary>Channels and sockets of a hostile client, bound to its own source address.</summary>
internal static class AttackClient
{
    private static int s_connections;

    /// <summary>TCP connections the attack's channels opened (a channel reconnects after the relay closes one).</summary>
    public static int ConnectionsOpened => Volatile.Read(ref s_connections);

    public const string CallIdHeader = "x-bench-call";

    /// <summary>
    /// A channel on its own HTTP/2 connection (one SocketsHttpHandler, no extra connections). <paramref name="onSent"/>
    /// hears the <see cref="CallIdHeader"/> of each call whose HEADERS went out (the client queues calls beyond the
    /// server's SETTINGS_MAX_CONCURRENT_STREAMS without sending them).
    /// </summary>
    public static GrpcChannel Channel(AttackOptions options, Action<long>? onSent = null)
    {
        var source = options.Source;
        var sockets = new SocketsHttpHandler
        {
            EnableMultipleHttp2Connections = false,
            SslOptions = new SslClientAuthenticationOptions { RemoteCertificateValidationCallback = (_, _, _, _) => true },
            PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
            ConnectTimeout = TimeSpan.FromSeconds(10),
            ConnectCallback = async (context, cancellationToken) =>
            {
                var socket = await ConnectAsync(source, context.DnsEndPoint.Host, context.DnsEndPoint.Port, cancellationToken);
                Interlocked.Increment(ref s_connections);
                return new NetworkStream(socket, ownsSocket: true);
            },
        };
        HttpMessageHandler handler = onSent is null ? sockets : new SentSignalHandler(sockets, onSent);
        return GrpcChannel.ForAddress(options.Relay, new GrpcChannelOptions
        {
            HttpHandler = handler,
            DisposeHttpClient = true,
            MaxReceiveMessageSize = 16 * 1024 * 1024,
            MaxSendMessageSize = 16 * 1024 * 1024,
        });
    }

    public static async Task<Socket> ConnectAsync(IPAddress source, string host, int port, CancellationToken cancellationToken)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            socket.Bind(new IPEndPoint(source, 0));
            await socket.ConnectAsync(new IPEndPoint(IPAddress.Parse(host == "localhost" ? "127.0.0.1" : host), port), cancellationToken);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    public static Metadata Auth(string token, long? callId = null)
    {
        var metadata = new Metadata { { "authorization", "Bearer " + token } };
        if (callId is { } id)
        {
            metadata.Add(CallIdHeader, id.ToString(CultureInfo.InvariantCulture));
        }

        return metadata;
    }

    public static AgentMessage Hello(string clientId) => new()
    {
        Hello = new Hello { ProtocolVersion = 1, ClientId = clientId, SdkVersion = "hostile/1.0" },
    };

    /// <summary>A short description of how a call or connection ended: the gRPC status, else the exception.</summary>
    public static string Describe(Exception ex) => ex switch
    {
        RpcException rpc => rpc.StatusCode.ToString(),
        OperationCanceledException => "cancelled",
        _ when ex.InnerException is { } inner && ex is not SocketException => $"{ex.GetType().Name}/{Describe(inner)}",
        SocketException socket => socket.SocketErrorCode.ToString(),
        _ => ex.GetType().Name,
    };

    public static string Detail(Exception ex)
    {
        var text = ex is RpcException rpc ? rpc.Status.Detail : ex.Message;
        return text.Length > 160 ? text[..160] + "…" : text;
    }

    /// <summary>The status of a finished call, or null while it runs.</summary>
    public static Status? StatusOf<TRequest, TResponse>(AsyncDuplexStreamingCall<TRequest, TResponse> call)
    {
        try
        {
            return call.GetStatus();
        }
        catch (InvalidOperationException)
        {
            return null;
        }
    }

    /// <summary>Reads a control stream until it ends (answering nothing); returns the Welcome.</summary>
    public static async Task<(Welcome Welcome, Task Drain)> OpenSessionAsync(Tunnel.TunnelClient client, AsyncDuplexStreamingCall<AgentMessage, RelayMessage> call, string clientId, Action<RelayMessage>? onMessage = null)
    {
        await call.RequestStream.WriteAsync(Hello(clientId));
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        if (!await call.ResponseStream.MoveNext(timeout.Token) || call.ResponseStream.Current.KindCase != RelayMessage.KindOneofCase.Welcome)
        {
            throw new InvalidOperationException("no Welcome");
        }

        var welcome = call.ResponseStream.Current.Welcome;
        var drain = Task.Run(async () =>
        {
            try
            {
                while (await call.ResponseStream.MoveNext())
                {
                    onMessage?.Invoke(call.ResponseStream.Current);
                }
            }
            catch (RpcException)
            {
            }
            catch (IOException)
            {
            }
            catch (OperationCanceledException)
            {
            }
            catch (ObjectDisposedException)
            {
            }
        });
        _ = client;
        return (welcome, drain);
    }

    public static double Seconds(this Stopwatch watch) => Math.Round(watch.Elapsed.TotalSeconds, 3);
}

/// <summary>Wraps each request's content so the first moment the client writes its body (its HEADERS are out) is heard.</summary>
internal sealed class SentSignalHandler : DelegatingHandler
{
    private readonly Action<long> _onSent;

    public SentSignalHandler(HttpMessageHandler inner, Action<long> onSent)
        : base(inner)
    {
        _onSent = onSent;
    }

    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        if (request.Content is { } content && request.Headers.TryGetValues(AttackClient.CallIdHeader, out var ids)
            && long.TryParse(ids.First(), CultureInfo.InvariantCulture, out var id))
        {
            request.Content = new SignalContent(content, () => _onSent(id));
        }

        return base.SendAsync(request, cancellationToken);
    }

    private sealed class SignalContent : HttpContent
    {
        private readonly HttpContent _inner;
        private readonly Action _onSent;

        public SignalContent(HttpContent inner, Action onSent)
        {
            _inner = inner;
            _onSent = onSent;
            foreach (var header in inner.Headers)
            {
                Headers.TryAddWithoutValidation(header.Key, header.Value);
            }
        }

        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
            SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
        {
            _onSent();
            return _inner.CopyToAsync(stream, context, cancellationToken);
        }

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                _inner.Dispose();
            }

            base.Dispose(disposing);
        }
    }
}
