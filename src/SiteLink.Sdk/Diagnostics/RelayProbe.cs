using System.Globalization;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using Grpc.Core;
using SiteLink.Internal;
using SiteLink.Protocol;
using SiteLink.Protocol.V1;

namespace SiteLink.Diagnostics;

/// <summary>
/// The diagnosis of one relay (<see cref="TunnelDiagnostics"/>): the way a session takes, one step at a time, each
/// timed and bounded, stopping at the first failure. DNS, TCP, the proxy's CONNECT and TLS run on a connection of the
/// probe's own (so each failure is named precisely); the authtoken and the heartbeat then go through a real
/// <see cref="RelayConnection"/>, exactly as a session connects.
/// </summary>
internal sealed class RelayProbe : IAsyncDisposable
{
    /// <summary>The most addresses of one name the probe tries (and shows).</summary>
    private const int MaxAddresses = 8;

    /// <summary>A relay certificate expiring sooner than this is a warning.</summary>
    private static readonly TimeSpan ExpiryWarning = TimeSpan.FromDays(14);

    private readonly TunnelSessionOptions _options;
    private readonly Uri _url;
    private readonly string _clientId;
    private readonly Func<string, CancellationToken, Task<IPAddress[]>> _resolve;
    private readonly TimeProvider _time;
    private ProxyRoute? _proxy;
    private IPAddress[] _addresses = [];
    private Socket? _socket;
    private Stream? _stream;
    private SslStream? _tls;
    private RelayConnection? _connection;

    private RelayProbe(TunnelSessionOptions options, string clientId, Func<string, CancellationToken, Task<IPAddress[]>> resolve)
    {
        _options = options;
        _url = options.RelayUrl!;
        _clientId = clientId;
        _resolve = resolve;
        _time = options.TimeProvider;
    }

    private string RelayHost => HostOf(_url);

    /// <summary>The first host the agent connects to: the proxy, or the relay.</summary>
    private Uri FirstHop => _proxy?.Address ?? _url;

    /// <summary>Diagnoses the relay of <paramref name="options"/> (a session's options for one relay, validated).</summary>
    public static async Task<TunnelRelayDiagnosis> RunAsync(TunnelSessionOptions options, string clientId, Func<string, CancellationToken, Task<IPAddress[]>> resolve, CancellationToken cancellationToken)
    {
        var probe = new RelayProbe(options, clientId, resolve);
        await using (probe.ConfigureAwait(false))
        {
            return await probe.RunAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task<TunnelRelayDiagnosis> RunAsync(CancellationToken cancellationToken)
    {
        var started = _time.GetTimestamp();
        var steps = new List<TunnelDiagnosticStep>();
        List<(TunnelDiagnosticStepKind Kind, Func<CancellationToken, Task<Outcome>> Run)> plan =
        [
            (TunnelDiagnosticStepKind.Dns, ResolveAsync),
            (TunnelDiagnosticStepKind.TcpConnect, ConnectAsync),
        ];
        try
        {
            _proxy = ProxyRoute.For(_url, _options.Proxy);
        }
        catch (TunnelConnectionException ex)
        {
            // The environment names a proxy that cannot be used: nothing else can run (every step below is skipped).
            steps.Add(new TunnelDiagnosticStep(TunnelDiagnosticStepKind.ProxyConnect, TunnelDiagnosticVerdict.Failed, TimeSpan.Zero, ex.Message, ProxyAdvice(ex.TunnelError), ex.TunnelError));
        }

        if (_proxy is not null)
        {
            plan.Add((TunnelDiagnosticStepKind.ProxyConnect, ProxyConnectAsync));
        }

        plan.Add((TunnelDiagnosticStepKind.TlsHandshake, HandshakeTlsAsync));
        plan.Add((TunnelDiagnosticStepKind.Http2, CheckHttp2Async));
        plan.Add((TunnelDiagnosticStepKind.Authentication, AuthenticateAsync));
        plan.Add((TunnelDiagnosticStepKind.Heartbeat, HeartbeatAsync));
        foreach (var (kind, run) in plan)
        {
            if (steps.Any(s => s.Verdict == TunnelDiagnosticVerdict.Failed))
            {
                steps.Add(new TunnelDiagnosticStep(kind, TunnelDiagnosticVerdict.Skipped, TimeSpan.Zero, "not run: an earlier step failed", null, null));
                continue;
            }

            var stepStarted = _time.GetTimestamp();
            Outcome outcome;
            try
            {
                outcome = await run(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                throw;
            }
#pragma warning disable CA1031 // A diagnosis reports what went wrong instead of throwing it, even what nobody foresaw.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                outcome = Outcome.Fail(TunnelError.Unknown, $"unexpected failure: {ex.GetType().Name}: {SafeText.Clean(ex.Message)}", "send this report to the vendor's support.");
            }

            steps.Add(new TunnelDiagnosticStep(kind, outcome.Verdict, _time.GetElapsedTime(stepStarted), outcome.Detail, outcome.Advice, outcome.Error));
        }

        return new TunnelRelayDiagnosis(_url, _proxy?.Address, _proxy?.Source, _time.GetElapsedTime(started), steps.AsReadOnly());
    }

    private async Task<Outcome> ResolveAsync(CancellationToken cancellationToken)
    {
        var host = HostOf(FirstHop);
        var byProxy = _proxy is null ? "" : $" (the proxy's name; the relay's name {RelayHost} is resolved by the proxy)";
        if (IPAddress.TryParse(host, out var literal))
        {
            _addresses = [literal];
            return Outcome.Pass($"{host} is an IP address: nothing to resolve{byProxy}");
        }

        var notResolved = Outcome.Fail(HopError, $"the name {host} does not resolve",
            $"check the spelling of {host} in {Where}, or ask your network team for DNS of {host} from this machine.");
        using var deadline = new Deadline(_options.ConnectTimeout, _time, cancellationToken);
        IPAddress[] addresses;
        try
        {
            addresses = await _resolve(host, deadline.Token).ConfigureAwait(false);
        }
        catch (SocketException ex) when (ex.SocketErrorCode is SocketError.HostNotFound or SocketError.NoData)
        {
            return notResolved;
        }
        catch (SocketException ex)
        {
            return Outcome.Fail(HopError, $"resolving {host} failed: {SafeText.Clean(ex.Message)} ({ex.SocketErrorCode})",
                $"this machine's DNS did not answer for {host}: ask your network team to check its DNS servers.");
        }
        catch (OperationCanceledException) when (deadline.Expired)
        {
            return Outcome.Fail(HopError, $"no answer from DNS for {host} within {Seconds(_options.ConnectTimeout)}",
                $"this machine's DNS did not answer for {host}: ask your network team to check its DNS servers.");
        }

        if (addresses.Length == 0)
        {
            return notResolved;
        }

        _addresses = [.. addresses.Take(MaxAddresses)];
        var more = addresses.Length > MaxAddresses ? $" and {(addresses.Length - MaxAddresses).ToString(CultureInfo.InvariantCulture)} more" : "";
        return Outcome.Pass($"{host} resolves to {string.Join(", ", _addresses.Select(a => a.ToString()))}{more}{byProxy}");
    }

    private async Task<Outcome> ConnectAsync(CancellationToken cancellationToken)
    {
        var host = HostOf(FirstHop);
        var port = FirstHop.Port;
        var failures = new List<string>();
        var (refused, timedOut) = (0, 0);
        foreach (var address in _addresses)
        {
            var endpoint = new IPEndPoint(address, port);
            var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            using var deadline = new Deadline(_options.ConnectTimeout, _time, cancellationToken);
            try
            {
                await socket.ConnectAsync(endpoint, deadline.Token).ConfigureAwait(false);
                _socket = socket;
                var before = failures.Count == 0 ? "" : $" (before: {string.Join("; ", failures)})";
                return Outcome.Pass($"connected to {(_proxy is null ? "" : "the proxy at ")}{endpoint}{before}");
            }
            catch (SocketException ex)
            {
                socket.Dispose();
                refused += ex.SocketErrorCode == SocketError.ConnectionRefused ? 1 : 0;
                failures.Add($"{endpoint} {(ex.SocketErrorCode == SocketError.ConnectionRefused ? "refused" : SafeText.Clean(ex.Message))}");
            }
            catch (OperationCanceledException) when (deadline.Expired)
            {
                socket.Dispose();
                timedOut++;
                failures.Add($"{endpoint} no answer");
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        }

        var on = _proxy is null ? host : $"the proxy {host} ({_proxy.Source})";
        var tried = _addresses is [var only] && only.ToString() == host ? "" : $" [{string.Join("; ", failures)}]";
        if (timedOut > 0)
        {
            return Outcome.Fail(HopError, $"port {port} blocked: no answer within {Seconds(_options.ConnectTimeout)} from {on}{tried}",
                $"ask your network team to allow outbound TCP {port} to {host}{(_proxy is null ? "" : " (the proxy)")}.");
        }

        if (refused == failures.Count)
        {
            return Outcome.Fail(HopError, $"port {port} refused on {on}: nothing listens there or a firewall rejects it{tried}", _proxy is null
                ? $"check the port in RelayUrl ({_url}) and that the relay is running there; if it is, ask your network team whether a firewall rejects outbound TCP {port} to {host}."
                : $"check the proxy's address and port ({_proxy.Source}) and that the proxy is running; ask your network team which proxy to use.");
        }

        return Outcome.Fail(HopError, $"cannot connect to port {port} on {on}{tried}",
            $"this machine has no way to {host} on TCP {port}: check its network settings, or ask your network team.");
    }

    private async Task<Outcome> ProxyConnectAsync(CancellationToken cancellationToken)
    {
        _stream = new NetworkStream(TakeSocket(), ownsSocket: true);
        using var deadline = new Deadline(_options.ConnectTimeout, _time, cancellationToken);
        try
        {
            await _proxy!.HandshakeAsync(_stream, RelayHost, _url.Port, deadline.Token).ConfigureAwait(false);
            return Outcome.Pass($"the proxy opened a tunnel to {RelayHost}:{_url.Port.ToString(CultureInfo.InvariantCulture)}");
        }
        catch (TunnelConnectionException ex)
        {
            return Outcome.Fail(ex.TunnelError, ex.Message, ProxyAdvice(ex.TunnelError));
        }
        catch (OperationCanceledException) when (deadline.Expired)
        {
            return Outcome.Fail(TunnelError.ProxyFailed, $"the proxy at {_proxy!.Address} ({_proxy.Source}) did not answer CONNECT within {Seconds(_options.ConnectTimeout)}", ProxyAdvice(TunnelError.ProxyFailed));
        }
    }

    private async Task<Outcome> HandshakeTlsAsync(CancellationToken cancellationToken)
    {
        if (_url.Scheme == Uri.UriSchemeHttp)
        {
            return Outcome.Warn("no TLS: development only (an http:// relay, allowed by AllowInsecureTransport); the authtoken crosses the connection unencrypted",
                "use the relay's https:// address outside development on one machine.");
        }

        _stream ??= new NetworkStream(TakeSocket(), ownsSocket: true);
        string? rejection = null;
        string? presented = null;
        SslClientAuthenticationOptions ssl;
        try
        {
            // The session's own trust: the pin, the custom roots' chain policy, or the system store.
            ssl = CertificatePin.CreateSslOptions(_options, reason => rejection = reason);
        }
        catch (TunnelConnectionException ex)
        {
            return Outcome.Fail(ex.TunnelError, ex.Message, FaultAdvice.For(ex.TunnelError));
        }

        var validate = ssl.RemoteCertificateValidationCallback!;
        ssl.RemoteCertificateValidationCallback = (sender, certificate, chain, errors) =>
        {
            // The fingerprint is what an administrator compares with what the relay's operator gives (or pins).
            presented = certificate is null ? null : CertificatePin.Fingerprint(certificate);
            return validate(sender, certificate, chain, errors);
        };
        ssl.TargetHost = RelayHost;
        ssl.ApplicationProtocols = [SslApplicationProtocol.Http2];
        _tls = new SslStream(_stream, leaveInnerStreamOpen: false);
        var notTls = $"check that {RelayHost}:{_url.Port.ToString(CultureInfo.InvariantCulture)} is the relay's agent port; a firewall or proxy that inspects or blocks TLS can also cause this (ask your network team).";
        using var deadline = new Deadline(_options.ConnectTimeout, _time, cancellationToken);
        try
        {
            await _tls.AuthenticateAsClientAsync(ssl, deadline.Token).ConfigureAwait(false);
        }
        catch (AuthenticationException) when (rejection is not null)
        {
            var fingerprint = presented is null || rejection.Contains(presented, StringComparison.Ordinal) ? "" : $" (its SHA-256 is {presented})";
            return Outcome.Fail(TunnelError.CertificateRejected, rejection + fingerprint, FaultAdvice.For(TunnelError.CertificateRejected));
        }
        catch (Exception ex) when (ex is AuthenticationException or IOException)
        {
            var inner = ex.InnerException is { } cause ? $" ({SafeText.Clean(cause.Message)})" : "";
            return Outcome.Fail(TunnelError.ConnectionFailed, $"the TLS handshake failed: {SafeText.Clean(ex.Message)}{inner}", notTls);
        }
        catch (OperationCanceledException) when (deadline.Expired)
        {
            return Outcome.Fail(TunnelError.ConnectionFailed, $"no TLS answer within {Seconds(_options.ConnectTimeout)}", notTls);
        }

        if (_tls.RemoteCertificate is not X509Certificate2 certificate)
        {
            return Outcome.Pass($"{Protocol(_tls.SslProtocol)}; the relay's certificate was accepted");
        }

        var trust = _options.PinnedCertificateSha256 is not null ? "it matches PinnedCertificateSha256"
            : _options.HasTrustedAuthorities ? "its chain leads to TrustedCertificateAuthorities"
            : "this machine's certificate store trusts it";
        var expires = certificate.NotAfter.ToUniversalTime();
        var detail = $"{Protocol(_tls.SslProtocol)}; certificate {CertificatePin.Describe(certificate)}, valid until {expires:yyyy-MM-dd HH:mm} UTC, SHA-256 {CertificatePin.Fingerprint(certificate)}; {trust}";
        var left = expires - _time.GetUtcNow().UtcDateTime;
        if (left < ExpiryWarning)
        {
            var pinned = _options.PinnedCertificateSha256 is null ? "" : " The renewed certificate has a new SHA-256: update PinnedCertificateSha256 (--pin) then.";
            return Outcome.Warn($"{detail}; it expires in {Math.Max(0, (int)left.TotalDays).ToString(CultureInfo.InvariantCulture)} days",
                $"ask the relay's operator to renew its certificate before {expires:yyyy-MM-dd}: after that, agents stop connecting.{pinned}");
        }

        return Outcome.Pass(detail);
    }

    private Task<Outcome> CheckHttp2Async(CancellationToken cancellationToken)
    {
        if (_tls is null)
        {
            return Task.FromResult(new Outcome(TunnelDiagnosticVerdict.Skipped, "an http:// relay has no ALPN: HTTP/2 without TLS is checked by the next step"));
        }

        var alpn = _tls.NegotiatedApplicationProtocol;
        if (alpn == SslApplicationProtocol.Http2)
        {
            return Task.FromResult(Outcome.Pass("the relay agreed to HTTP/2 (ALPN h2)"));
        }

        var got = alpn.Protocol.IsEmpty ? "none" : SafeText.Clean(alpn.ToString(), 32);
        return Task.FromResult(Outcome.Fail(TunnelError.ConnectionFailed, $"the server did not agree to HTTP/2 (ALPN: {got})",
            $"a TLS-inspecting proxy or a load balancer in front of the relay may be downgrading to HTTP/1.1: ask your network team to exempt {RelayHost} from TLS inspection, or the relay's operator to pass HTTP/2 (or plain TCP) through to the relay."));
    }

    private async Task<Outcome> AuthenticateAsync(CancellationToken cancellationToken)
    {
        // The probe's own connection has said what it could; the session's handshake goes on a connection of its own.
        await CloseProbeConnectionAsync().ConfigureAwait(false);
        try
        {
            _connection = await RelayConnection.ConnectAsync(_options, _clientId, null, cancellationToken).ConfigureAwait(false);
        }
        catch (TunnelException ex) when (!cancellationToken.IsCancellationRequested)
        {
            return Outcome.Fail(ex.TunnelError, ex.Message, HandshakeAdvice(ex.TunnelError));
        }

        var welcome = _connection.Welcome;
        var limits = welcome.Limits is { } l
            ? $"; limits: {l.MaxBinds.ToString(CultureInfo.InvariantCulture)} endpoints, {l.MaxConcurrentStreams.ToString(CultureInfo.InvariantCulture)} connections at once, frames up to {l.MaxFrameSize.ToString(CultureInfo.InvariantCulture)} bytes"
            : "";
        return Outcome.Pass($"the relay accepted the authtoken: relay '{SafeText.Clean(welcome.RelayId, SafeText.MaxIdLength)}', region '{SafeText.Clean(welcome.Region, SafeText.MaxIdLength)}', session '{SafeText.Clean(welcome.SessionId, SafeText.MaxIdLength)}'{limits}");
    }

    private async Task<Outcome> HeartbeatAsync(CancellationToken cancellationToken)
    {
        var connection = _connection!;
        var silent = $"something between this machine and the relay holds back the control stream (a proxy or load balancer that buffers HTTP/2?): ask your network team, or the relay's operator.";
        using var deadline = new Deadline(_options.RequestTimeout, _time, cancellationToken);
        var sentAt = _time.GetTimestamp();
        if (!connection.Send(new AgentMessage { Heartbeat = new Heartbeat { Sequence = 1, SentAtUnixMs = _time.GetUtcNow().ToUnixTimeMilliseconds() } }))
        {
            return Outcome.Fail(TunnelError.ConnectionFailed, "the control stream closed before a heartbeat could be sent", silent);
        }

        try
        {
            while (await connection.Incoming.MoveNext(deadline.Token).ConfigureAwait(false))
            {
                var message = connection.Incoming.Current;
                if (message.KindCase == RelayMessage.KindOneofCase.HeartbeatAck && message.HeartbeatAck.Sequence == 1)
                {
                    var roundTrip = _time.GetElapsedTime(sentAt);
                    await CloseGracefullyAsync(connection, cancellationToken).ConfigureAwait(false);
                    return Outcome.Pass($"the relay answered a heartbeat: round trip {TunnelDiagnosticStep.FormatDuration(roundTrip)}; the session was closed gracefully");
                }

                if (message.KindCase == RelayMessage.KindOneofCase.Heartbeat)
                {
                    connection.Send(new AgentMessage { HeartbeatAck = new HeartbeatAck { Sequence = message.Heartbeat.Sequence } });
                }
            }

            return Outcome.Fail(TunnelError.ConnectionFailed, "the relay ended the session before it answered the heartbeat", silent);
        }
        catch (Exception ex) when (deadline.Expired && ex is OperationCanceledException or RpcException)
        {
            return Outcome.Fail(TunnelError.ConnectionFailed, $"the relay did not answer a heartbeat within {Seconds(_options.RequestTimeout)}", silent);
        }
        catch (RpcException ex) when (!cancellationToken.IsCancellationRequested)
        {
            var error = ErrorMapping.FromRpc(ex, _url, null);
            return Outcome.Fail(error.TunnelError, error.Message, HandshakeAdvice(error.TunnelError));
        }
    }

    /// <summary>Goodbye, the end of the control stream, and the relay's end of the call (bounded), so the relay sees a clean close.</summary>
    private async Task CloseGracefullyAsync(RelayConnection connection, CancellationToken cancellationToken)
    {
        connection.Send(new AgentMessage { Goodbye = new Goodbye { Reason = "diagnose finished" } });
        using var deadline = new Deadline(_options.RequestTimeout, _time, cancellationToken);
        await connection.CompleteAsync(deadline.Token).ConfigureAwait(false);
        try
        {
            while (await connection.Incoming.MoveNext(deadline.Token).ConfigureAwait(false))
            {
            }
        }
        catch (Exception ex) when (ex is RpcException or OperationCanceledException or IOException or InvalidOperationException)
        {
            // Disposing the connection (below, in DisposeAsync) ends it in any case.
        }
    }

    private Socket TakeSocket()
    {
        var socket = _socket ?? throw new InvalidOperationException("No TCP connection to continue on.");
        _socket = null;
        return socket;
    }

    private async Task CloseProbeConnectionAsync()
    {
        if (_tls is not null)
        {
            await _tls.DisposeAsync().ConfigureAwait(false);
            _tls = null;
        }

        if (_stream is not null)
        {
            await _stream.DisposeAsync().ConfigureAwait(false);
            _stream = null;
        }

        _socket?.Dispose();
        _socket = null;
    }

    public async ValueTask DisposeAsync()
    {
        await CloseProbeConnectionAsync().ConfigureAwait(false);
        if (_connection is not null)
        {
            await _connection.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>What kind of failure a DNS or TCP failure is: the proxy's, or the relay's.</summary>
    private TunnelError HopError => _proxy is null ? TunnelError.ConnectionFailed : TunnelError.ProxyFailed;

    /// <summary>The setting that names the first host.</summary>
    private string Where => _proxy is null ? $"RelayUrl ({_url})" : $"the proxy's address ({_proxy.Source})";

    private string ProxyAdvice(TunnelError error) => error == TunnelError.ProxyAuthenticationFailed
        ? FaultAdvice.For(error)
        : $"ask your network team to allow HTTPS CONNECT to {RelayHost}:{_url.Port.ToString(CultureInfo.InvariantCulture)} through the proxy; if this machine may connect directly, remove the proxy setting ({_proxy?.Source ?? "HTTPS_PROXY"}) or set Proxy.UseEnvironment=false (sitelink-agent --no-proxy).";

    private string HandshakeAdvice(TunnelError error) => error switch
    {
        TunnelError.ConnectionFailed when _url.Scheme == Uri.UriSchemeHttp =>
            "the relay did not speak HTTP/2 without TLS here: check that RelayUrl is the relay's agent address and that the relay runs without TLS (Tls:Disabled), or use its https:// address.",
        TunnelError.ConnectionFailed or TunnelError.ProtocolError =>
            "TCP and TLS work, but the session handshake did not: check that RelayUrl is the relay's agent address (not its admin API or a cloud endpoint), and that nothing on the way rewrites HTTP/2; ask the relay's operator.",
        TunnelError.ProxyFailed or TunnelError.ProxyAuthenticationFailed => ProxyAdvice(error),
        _ => FaultAdvice.For(error),
    };

    private static string HostOf(Uri url) => url.IdnHost.Trim('[', ']');

    private static string Seconds(TimeSpan timeout) => TunnelDiagnosticStep.FormatDuration(timeout);

    private static string Protocol(SslProtocols protocol) => protocol switch
    {
        SslProtocols.Tls13 => "TLS 1.3",
        SslProtocols.Tls12 => "TLS 1.2",
        _ => protocol.ToString(),
    };

    private readonly record struct Outcome(TunnelDiagnosticVerdict Verdict, string Detail, string? Advice = null, TunnelError? Error = null)
    {
        public static Outcome Pass(string detail) => new(TunnelDiagnosticVerdict.Passed, detail);

        public static Outcome Warn(string detail, string advice) => new(TunnelDiagnosticVerdict.Warning, detail, advice);

        public static Outcome Fail(TunnelError error, string detail, string advice) => new(TunnelDiagnosticVerdict.Failed, detail, advice, error);
    }

    /// <summary>A step's time limit joined to the caller's token; <see cref="Expired"/> tells the limit from the caller.</summary>
    private sealed class Deadline : IDisposable
    {
        private readonly CancellationTokenSource _limit;
        private readonly CancellationTokenSource _linked;

        public Deadline(TimeSpan after, TimeProvider time, CancellationToken cancellationToken)
        {
            _limit = new CancellationTokenSource(after, time);
            _linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _limit.Token);
        }

        public CancellationToken Token => _linked.Token;

        public bool Expired => _limit.IsCancellationRequested;

        public void Dispose()
        {
            _linked.Dispose();
            _limit.Dispose();
        }
    }
}
