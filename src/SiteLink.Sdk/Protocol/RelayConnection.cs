using System.Net.Security;
using System.Threading.Channels;
using Grpc.Core;
using Grpc.Net.Client;
using SiteLink.Internal;
using SiteLink.Protocol.V1;

namespace SiteLink.Protocol;

/// <summary>
/// One connection to a relay: the HTTP/2 channel, the session's control call with its single writer, and the
/// factory for data streams. Disposing it cancels every call and disposes the channel and its HTTP handler, which
/// closes the TCP connection itself.
/// </summary>
internal sealed class RelayConnection : IAsyncDisposable
{
    private readonly GrpcChannel _channel;
    private readonly Tunnel.TunnelClient _client;
    private readonly CallInvoker _invoker;
    private readonly AsyncDuplexStreamingCall<AgentMessage, RelayMessage> _control;
    // Bounded: a relay that stops reading the control stream (while it keeps sending heartbeats or offers the agent
    // answers) cannot grow the agent's memory; when it is full the connection is dropped and re-established.
    private readonly Channel<AgentMessage> _outbox = Channel.CreateBounded<AgentMessage>(new BoundedChannelOptions(ProtocolConstants.MaxControlQueue)
    {
        SingleReader = true,
        FullMode = BoundedChannelFullMode.Wait,
    });
    private readonly CancellationTokenSource _lifetime = new();
    private readonly Metadata _authHeaders;
    private readonly TunnelSessionOptions _options;
    private Task _writer = Task.CompletedTask;
    private int _disposed;

    private RelayConnection(TunnelSessionOptions options, GrpcChannel channel, Metadata authHeaders)
    {
        _options = options;
        _channel = channel;
        _authHeaders = authHeaders;
        _invoker = channel.CreateCallInvoker();
        _client = new Tunnel.TunnelClient(_invoker);
        _control = _client.Control(authHeaders, cancellationToken: _lifetime.Token);
    }

    public Welcome Welcome { get; private set; } = null!;

    public Uri RelayUrl => _options.RelayUrl!;

    public int MaxFrameSize { get; private set; } = ProtocolConstants.DefaultMaxFrameSize;

    /// <summary>Messages from the relay after Welcome. Read by one loop only.</summary>
    public IAsyncStreamReader<RelayMessage> Incoming => _control.ResponseStream;

    /// <summary>Signalled when the connection is being torn down.</summary>
    public CancellationToken Lifetime => _lifetime.Token;

    /// <summary>Ends when the writer stops (connection failed or disposed).</summary>
    public Task Writer => _writer;

    /// <summary>Why the agent gave up on this connection itself (null when it did not).</summary>
    public string? AbortReason { get; private set; }

    /// <summary>Connects, says Hello and waits for Welcome. Throws a typed <see cref="TunnelException"/> on failure.</summary>
    public static async Task<RelayConnection> ConnectAsync(TunnelSessionOptions options, string clientId, string? previousSessionId, CancellationToken cancellationToken)
    {
        var relayUrl = options.RelayUrl!;
        var proxy = ProxyRoute.For(relayUrl, options.Proxy);
        var attempt = new AttemptFailures();
        var handler = CreateHandler(options, proxy, attempt);
        if (options.ConfigureHttpHandler is { } configure)
        {
            Configure(handler, configure, relayUrl);
            // A fresh chain policy after the application's hook, which thus cannot loosen it in place (a trust store,
            // flags); a hook that replaced it was refused above.
            handler.SslOptions.CertificateChainPolicy = CertificatePin.CreateChainPolicy(options);
        }

        var channel = GrpcChannel.ForAddress(relayUrl, new GrpcChannelOptions
        {
            HttpHandler = handler,
            DisposeHttpClient = true,
            MaxReceiveMessageSize = ProtocolConstants.MaxMessageSize,
            MaxSendMessageSize = ProtocolConstants.MaxMessageSize,
        });

        var headers = new Metadata { { WireNames.AuthorizationHeader, "Bearer " + options.AuthToken } };
        var connection = new RelayConnection(options, channel, headers);
        using var timeout = new CancellationTokenSource(options.ConnectTimeout, options.TimeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        try
        {
            var hello = new Hello
            {
                ProtocolVersion = WireNames.ProtocolVersion,
                MaxProtocolVersion = WireNames.MultiplexedProtocolVersion,
                SdkVersion = ProtocolConstants.SdkVersion,
                ClientId = clientId,
                PreviousSessionId = previousSessionId ?? "",
                HeartbeatIntervalMs = (uint)options.HeartbeatInterval.TotalMilliseconds,
                HeartbeatToleranceMs = (uint)options.HeartbeatTolerance.TotalMilliseconds,
            };
            hello.Metadata.Add(options.Metadata);
            try
            {
                await connection._control.RequestStream.WriteAsync(new AgentMessage { Hello = hello }, linked.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is RpcException or IOException or InvalidOperationException && !linked.IsCancellationRequested)
            {
                // The relay may have refused the call (a bad token) before the Hello went out: its status says why,
                // not the failed write. Reading the response surfaces it (or fails the same way if there is none).
                await connection._control.ResponseStream.MoveNext(linked.Token).ConfigureAwait(false);
                throw;
            }
            if (!await connection._control.ResponseStream.MoveNext(linked.Token).ConfigureAwait(false))
            {
                throw new TunnelProtocolException($"The relay at {relayUrl} ended the session before welcoming it.");
            }

            var first = connection._control.ResponseStream.Current;
            if (first.KindCase != RelayMessage.KindOneofCase.Welcome)
            {
                throw new TunnelProtocolException($"The relay at {relayUrl} sent {first.KindCase} before Welcome.");
            }

            connection.Welcome = first.Welcome;
            if (first.Welcome.Limits is { MaxFrameSize: > 0 } limits)
            {
                connection.MaxFrameSize = (int)Math.Min(limits.MaxFrameSize, ProtocolConstants.DefaultMaxFrameSize);
            }

            connection._writer = connection.WriteLoopAsync();
            return connection;
        }
        catch (Exception ex)
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            if (ex is TunnelException)
            {
                throw;
            }

            if (ex is RpcException rpc)
            {
                if (rpc.StatusCode == StatusCode.Cancelled && timeout.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
                {
                    throw TimedOut(relayUrl, proxy, options.ConnectTimeout, ex);
                }

                cancellationToken.ThrowIfCancellationRequested();
                // The proxy's own answer says more than the HTTP stack's wrapping of it.
                throw attempt.ProxyFailure ?? ErrorMapping.FromRpc(rpc, relayUrl, attempt.CertificateRejection);
            }

            if (ex is OperationCanceledException && !cancellationToken.IsCancellationRequested)
            {
                throw TimedOut(relayUrl, proxy, options.ConnectTimeout, ex);
            }

            throw;
        }
    }

    private static TunnelConnectionException TimedOut(Uri relayUrl, ProxyRoute? proxy, TimeSpan after, Exception ex) =>
        new(proxy is null
            ? $"Connecting to the relay at {relayUrl} timed out after {after}."
            : $"Connecting to the relay at {relayUrl} through the proxy at {proxy.Address} ({proxy.Source}) timed out after {after}.", ex);

    /// <summary>What went wrong in one connection attempt, as the callbacks saw it (they run inside the HTTP stack, which wraps errors).</summary>
    private sealed class AttemptFailures
    {
        public string? CertificateRejection { get; set; }

        public TunnelException? ProxyFailure { get; set; }
    }

    /// <summary>Runs the application's adjustments, then checks it kept what the SDK's trust and protocol depend on.</summary>
    private static void Configure(SocketsHttpHandler handler, Action<SocketsHttpHandler> configure, Uri relayUrl)
    {
        var validation = handler.SslOptions.RemoteCertificateValidationCallback;
        var chainPolicy = handler.SslOptions.CertificateChainPolicy;
        var connect = handler.ConnectCallback;
        try
        {
            configure(handler);
        }
        catch (Exception ex)
        {
            handler.Dispose();
            throw new TunnelConnectionException($"ConfigureHttpHandler failed for the relay at {relayUrl}: {ex.Message}", ex, isTransient: false);
        }

        string? problem = null;
        if (!ReferenceEquals(handler.SslOptions.RemoteCertificateValidationCallback, validation) || !ReferenceEquals(handler.SslOptions.CertificateChainPolicy, chainPolicy))
        {
            problem = "it replaced the relay's certificate validation; trust the relay with PinnedCertificateSha256 or TrustedCertificateAuthorities (or the system trust store) instead";
        }
        else if (handler.SslOptions.TargetHost is not null)
        {
            problem = "it set SslOptions.TargetHost; the relay's certificate is checked against the host of its URL (use a RelayUrl with the name the certificate is for)";
        }
        else if (handler.EnableMultipleHttp2Connections)
        {
            problem = "it enabled several HTTP/2 connections; a session's streams must share its one connection";
        }
        else if (connect is not null && !ReferenceEquals(handler.ConnectCallback, connect))
        {
            problem = "it replaced ConnectCallback, which carries the connection through the HTTP proxy (Proxy, or HTTPS_PROXY); set the proxy in Proxy, or Proxy.UseEnvironment = false to connect directly with a callback of your own";
        }

        if (problem is not null)
        {
            handler.Dispose();
            throw new TunnelConnectionException($"ConfigureHttpHandler cannot be used as set: {problem}.", null, isTransient: false);
        }
    }

    private static SocketsHttpHandler CreateHandler(TunnelSessionOptions options, ProxyRoute? proxy, AttemptFailures attempt)
    {
        // First: it throws when the trust bundle cannot be used, before there is a handler to dispose.
        var ssl = CertificatePin.CreateSslOptions(options, reason => attempt.CertificateRejection = reason);
        var handler = new SocketsHttpHandler
        {
            ConnectTimeout = options.ConnectTimeout,
            PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
            PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
            // One HTTP/2 connection per relay carries the control stream and every tunnelled connection.
            EnableMultipleHttp2Connections = false,
            // The receive window per tunnelled connection starts large (it also grows by itself with the round trip).
            InitialHttp2StreamWindowSize = 4 * 1024 * 1024,
            SslOptions = ssl,
            // The SDK decides about proxies itself (ProxyRoute): the handler never applies a system proxy of its own.
            UseProxy = false,
        };
        if (proxy is not null)
        {
            // CONNECT through the proxy; the handler then speaks TLS (and HTTP/2) to the relay inside the tunnel.
            handler.ConnectCallback = async (context, cancellationToken) =>
            {
                try
                {
                    return await proxy.ConnectAsync(context.DnsEndPoint.Host, context.DnsEndPoint.Port, cancellationToken).ConfigureAwait(false);
                }
                catch (TunnelException ex)
                {
                    attempt.ProxyFailure = ex;
                    throw;
                }
                catch (OperationCanceledException ex)
                {
                    // The handler's ConnectTimeout (or the attempt's own) ended a proxy that was slow to open the tunnel:
                    // say so, whichever of the two timers fired first. A caller's cancellation still wins (ConnectAsync).
                    attempt.ProxyFailure = new TunnelConnectionException(
                        $"Opening the tunnel through the proxy at {proxy.Address} ({proxy.Source}) to {context.DnsEndPoint.Host}:{context.DnsEndPoint.Port} timed out after {options.ConnectTimeout}.",
                        ex, isTransient: true, TunnelError.ProxyFailed);
                    throw;
                }
            };
        }

        return handler;
    }

    /// <summary>
    /// Queues a message for the relay. Returns false when the connection is closing, or when the queue is full: the
    /// relay has not read the control stream for <see cref="ProtocolConstants.MaxControlQueue"/> messages, and the
    /// connection is then closed so the session reconnects.
    /// </summary>
    public bool Send(AgentMessage message)
    {
        if (_outbox.Writer.TryWrite(message))
        {
            return true;
        }

        if (Volatile.Read(ref _disposed) == 0 && !_lifetime.IsCancellationRequested && _outbox.Reader.Count >= ProtocolConstants.MaxControlQueue)
        {
            AbortReason ??= $"the relay did not read the control stream ({ProtocolConstants.MaxControlQueue} messages queued)";
            try
            {
                _lifetime.Cancel();
            }
            catch (ObjectDisposedException)
            {
            }
        }

        return false;
    }

    /// <summary>Opens the data stream of a connection the relay offered.</summary>
    public TunnelStream OpenStream(string sessionId, string streamId, Action onAbort, Action onReleased, CancellationToken cancellationToken)
    {
        var headers = new Metadata
        {
            _authHeaders[0],
            { WireNames.StreamIdHeader, streamId },
            { WireNames.SessionIdHeader, sessionId },
        };
        var call = _invoker.AsyncDuplexStreamingCall(DataFrame.StreamMethod, null, new CallOptions(headers, cancellationToken: cancellationToken));
        return WrapStream(call, onAbort, onReleased);
    }

    /// <summary>Whether the relay agreed to multiplex this session's connections on one data call (protocol version 2).</summary>
    public bool CanMultiplex => Welcome.ProtocolVersion >= WireNames.MultiplexedProtocolVersion && Welcome.Limits is { MuxWindow: > 0 };

    /// <summary>Opens the session's multiplexed data call (protocol version 2).</summary>
    public AsyncDuplexStreamingCall<MuxBatch, MuxBatch> OpenMux(string sessionId, CancellationToken cancellationToken)
    {
        var headers = new Metadata
        {
            _authHeaders[0],
            { WireNames.SessionIdHeader, sessionId },
            { WireNames.WindowHeader, ProtocolConstants.MuxWindow.ToString(System.Globalization.CultureInfo.InvariantCulture) },
        };
        return _invoker.AsyncDuplexStreamingCall(MuxBatch.MuxMethod, null, new CallOptions(headers, cancellationToken: cancellationToken));
    }

    /// <summary>Opens a data stream that waits at the relay until it is given a connection (see Limits.max_parked_streams).</summary>
    public AsyncDuplexStreamingCall<DataFrame, DataFrame> OpenParked(string sessionId, CancellationToken cancellationToken)
    {
        var headers = new Metadata
        {
            _authHeaders[0],
            { WireNames.SessionIdHeader, sessionId },
            { WireNames.ParkedHeader, "1" },
        };
        return _invoker.AsyncDuplexStreamingCall(DataFrame.StreamMethod, null, new CallOptions(headers, cancellationToken: cancellationToken));
    }

    /// <summary>The byte stream over a data call.</summary>
    public TunnelStream WrapStream(AsyncDuplexStreamingCall<DataFrame, DataFrame> call, Action? onAbort, Action onReleased) =>
        new(call.RequestStream, call.ResponseStream, call, MaxFrameSize, _options.StreamCloseTimeout, _options.TimeProvider, onAbort, onReleased);

    private async Task WriteLoopAsync()
    {
        try
        {
            await foreach (var message in _outbox.Reader.ReadAllAsync(_lifetime.Token).ConfigureAwait(false))
            {
                await _control.RequestStream.WriteAsync(message, _lifetime.Token).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is RpcException or OperationCanceledException or InvalidOperationException or IOException)
        {
            // The connection failed or is closing; the read loop sees it too and reports why.
        }
        finally
        {
            _outbox.Writer.TryComplete();
        }
    }

    /// <summary>Sends what is queued (bounded by <paramref name="cancellationToken"/>) and half-closes the control call.</summary>
    public async Task CompleteAsync(CancellationToken cancellationToken)
    {
        _outbox.Writer.TryComplete();
        try
        {
            await _writer.WaitAsync(cancellationToken).ConfigureAwait(false);
            await _control.RequestStream.CompleteAsync().WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is RpcException or OperationCanceledException or InvalidOperationException or IOException)
        {
            // Best effort: disposal follows.
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _outbox.Writer.TryComplete();
        await _lifetime.CancelAsync().ConfigureAwait(false);
        try
        {
            await _writer.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }

        _control.Dispose();
        // Disposing the channel disposes its HttpClient and handler, closing the TCP connection.
        _channel.Dispose();
        _lifetime.Dispose();
    }
}
