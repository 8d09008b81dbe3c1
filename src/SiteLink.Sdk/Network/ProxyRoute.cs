using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using SiteLink.Internal;
using SiteLink.Protocol;

namespace SiteLink;

/// <summary>
/// The HTTP proxy a relay connection goes through (<see cref="TunnelSessionOptions.Proxy"/> or the environment), and
/// the CONNECT handshake that opens the tunnel. Every failure is a <see cref="TunnelConnectionException"/> whose
/// <see cref="TunnelException.TunnelError"/> is <see cref="TunnelError.ProxyFailed"/> or
/// <see cref="TunnelError.ProxyAuthenticationFailed"/>, and whose message says what the proxy did.
/// </summary>
internal sealed class ProxyRoute
{
    /// <summary>The most bytes of a proxy's answer to CONNECT (status line and headers) the agent reads.</summary>
    internal const int MaxResponseHeaderBytes = 16 * 1024;

    private readonly string? _userName;
    private readonly string? _password;

    private ProxyRoute(Uri address, string? userName, string? password, string source)
    {
        Address = address;
        _userName = userName;
        _password = password;
        Source = source;
    }

    /// <summary>The proxy's address, without user information (safe to show).</summary>
    public Uri Address { get; }

    /// <summary>Where the proxy was named: <c>Proxy.Address</c> or the environment variable's name.</summary>
    public string Source { get; }

    public bool HasCredentials => _userName is not null;

    /// <summary>Null when <paramref name="address"/> can be a proxy's address; otherwise what is wrong with it.</summary>
    public static string? FindProblem(Uri address) =>
        !address.IsAbsoluteUri ? "must be an absolute URL such as http://proxy.example:3128."
        : address.Scheme != Uri.UriSchemeHttp ? $"uses {address.Scheme}://; only http:// proxies are supported (the agent sends CONNECT in plain HTTP and speaks TLS to the relay inside the tunnel)."
        : address.AbsolutePath is not ("/" or "") || address.Query.Length > 0 ? "must be only scheme, host and port (no path or query)."
        : null;

    /// <summary>
    /// The proxy for a connection to <paramref name="relayUrl"/>: <see cref="TunnelProxyOptions.Address"/>, else the
    /// environment's (when allowed and <c>NO_PROXY</c> does not exclude the relay), else none. Throws a permanent
    /// <see cref="TunnelConnectionException"/> when the environment names a proxy that cannot be used.
    /// </summary>
    public static ProxyRoute? For(Uri relayUrl, TunnelProxyOptions options, Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        if (options.Address is { } address)
        {
            var (user, password) = options.UserName is not null ? (options.UserName, options.Password ?? "") : FromUserInfo(address);
            return new ProxyRoute(WithoutUserInfo(address), user, password, "Proxy.Address");
        }

        if (!options.UseEnvironment)
        {
            return null;
        }

        string[] names = relayUrl.Scheme == Uri.UriSchemeHttps
            ? ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
            // Only the lower-case name for http: HTTP_PROXY can be set by a request header in CGI environments (httpoxy).
            : ["http_proxy", "ALL_PROXY", "all_proxy"];
        foreach (var name in names)
        {
            var value = environment(name)?.Trim();
            if (string.IsNullOrEmpty(value))
            {
                continue;
            }

            if (Bypasses(environment("NO_PROXY") ?? environment("no_proxy"), relayUrl))
            {
                return null;
            }

            var text = value.Contains("://", StringComparison.Ordinal) ? value : "http://" + value;
            var problem = Uri.TryCreate(text, UriKind.Absolute, out var parsed) ? FindProblem(parsed) : "is not a URL such as http://proxy.example:3128.";
            if (parsed is null || problem is not null)
            {
                // The value is not echoed whole: it may hold a password.
                throw new TunnelConnectionException($"The environment variable {name} does not name a usable proxy: its value {problem} Fix it, or set Proxy.UseEnvironment to false to connect directly.",
                    null, isTransient: false, TunnelError.ProxyFailed);
            }

            var (user, password) = FromUserInfo(parsed);
            return new ProxyRoute(WithoutUserInfo(parsed), user, password, name);
        }

        return null;
    }

    /// <summary>Whether a <c>NO_PROXY</c> value excludes <paramref name="url"/> (curl's rules, plus CIDR ranges).</summary>
    internal static bool Bypasses(string? noProxy, Uri url)
    {
        if (string.IsNullOrWhiteSpace(noProxy))
        {
            return false;
        }

        var host = url.IdnHost.Trim('[', ']').TrimEnd('.').ToLowerInvariant();
        var address = IPAddress.TryParse(host, out var ip) ? ip : null;
        foreach (var raw in noProxy.Split([',', ' ', '\t'], StringSplitOptions.RemoveEmptyEntries))
        {
            var entry = raw.Trim().ToLowerInvariant();
            if (entry == "*")
            {
                return true;
            }

            // An entry may name a port: host:port, 10.0.0.1:443, [::1]:443.
            // A port that is not one (host:, host:abc, host:99999) makes the entry match nothing rather than every port.
            int? port = null;
            if (entry.StartsWith('[') && entry.IndexOf(']', StringComparison.Ordinal) is > 0 and var close)
            {
                if (entry.Length > close + 1)
                {
                    port = entry[close + 1] == ':' ? ParsePort(entry.AsSpan(close + 2)) : -1;
                }

                entry = entry[1..close];
            }
            else if (entry.Count(c => c == ':') == 1 && !entry.Contains('/', StringComparison.Ordinal))
            {
                var colon = entry.IndexOf(':', StringComparison.Ordinal);
                port = ParsePort(entry.AsSpan(colon + 1));
                entry = entry[..colon];
            }

            if (port is { } only && only != url.Port)
            {
                continue;
            }

            if (entry.Contains('/', StringComparison.Ordinal))
            {
                if (address is not null && IPNetwork.TryParse(entry, out var network) && network.Contains(address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address))
                {
                    return true;
                }

                continue;
            }

            if (IPAddress.TryParse(entry, out var entryAddress))
            {
                if (address is not null && entryAddress.Equals(address))
                {
                    return true;
                }

                continue;
            }

            var suffix = entry.TrimStart('*').TrimStart('.').TrimEnd('.');
            if (suffix.Length > 0 && address is null && (host == suffix || host.EndsWith("." + suffix, StringComparison.Ordinal)))
            {
                return true;
            }
        }

        return false;
    }

    private static int ParsePort(ReadOnlySpan<char> text) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var port) && port is > 0 and <= 65535 ? port : -1;

    /// <summary>Connects to the proxy (TCP) and opens the tunnel to <paramref name="host"/>:<paramref name="port"/>.</summary>
    public async Task<Stream> ConnectAsync(string host, int port, CancellationToken cancellationToken)
    {
        var socket = await ConnectSocketAsync(cancellationToken).ConfigureAwait(false);
        var stream = new NetworkStream(socket, ownsSocket: true);
        try
        {
            await HandshakeAsync(stream, host, port, cancellationToken).ConfigureAwait(false);
            return stream;
        }
        catch
        {
            await stream.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>The TCP connection to the proxy.</summary>
    public async Task<Socket> ConnectSocketAsync(CancellationToken cancellationToken)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(new DnsEndPoint(Address.IdnHost.Trim('[', ']'), Address.Port), cancellationToken).ConfigureAwait(false);
            return socket;
        }
        catch (SocketException ex)
        {
            socket.Dispose();
            throw Unreachable(ex);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>The error for a proxy the agent could not connect to (transient: a proxy restarting comes back).</summary>
    public TunnelConnectionException Unreachable(SocketException ex)
    {
        var why = ex.SocketErrorCode switch
        {
            SocketError.HostNotFound or SocketError.NoData or SocketError.TryAgain => $"its name '{Address.IdnHost}' does not resolve",
            SocketError.ConnectionRefused => "it refused the connection (nothing listens on that port)",
            SocketError.TimedOut => "the connection timed out",
            SocketError.NetworkUnreachable or SocketError.HostUnreachable => "its network is unreachable from here",
            _ => SafeText.Clean(ex.Message),
        };
        return new TunnelConnectionException($"Could not reach the proxy at {Address} ({Source}): {why}.", ex, isTransient: true, TunnelError.ProxyFailed);
    }

    /// <summary>Sends CONNECT on <paramref name="stream"/> and reads the proxy's answer; returns when the tunnel is open.</summary>
    public async Task HandshakeAsync(Stream stream, string host, int port, CancellationToken cancellationToken)
    {
        // The host comes from the relay's URL, which cannot hold these; checked anyway, as it is written into the request.
        if (host.Length == 0 || host.Any(c => c is <= ' ' or > '~' or '[' or ']' or '/' or '@'))
        {
            throw new TunnelConnectionException($"The relay host '{SafeText.Clean(host, 100)}' cannot be sent to the proxy at {Address} in a CONNECT request.", null, isTransient: false, TunnelError.ProxyFailed);
        }

        var authority = (host.Contains(':', StringComparison.Ordinal) ? "[" + host + "]" : host) + ":" + port.ToString(CultureInfo.InvariantCulture);
        var request = new StringBuilder()
            .Append("CONNECT ").Append(authority).Append(" HTTP/1.1\r\n")
            .Append("Host: ").Append(authority).Append("\r\n")
            .Append("User-Agent: SiteLink-Agent/").Append(ProtocolConstants.SdkVersion).Append("\r\n");
        if (_userName is not null)
        {
            var token = Convert.ToBase64String(Encoding.UTF8.GetBytes(_userName + ":" + _password));
            request.Append("Proxy-Authorization: Basic ").Append(token).Append("\r\n");
        }

        request.Append("\r\n");
        try
        {
            await stream.WriteAsync(Encoding.ASCII.GetBytes(request.ToString()), cancellationToken).ConfigureAwait(false);
            var header = await ReadHeaderAsync(stream, cancellationToken).ConfigureAwait(false);
            Check(header, authority);
        }
        catch (IOException ex)
        {
            throw new TunnelConnectionException($"The proxy at {Address} ({Source}) closed the connection during CONNECT {authority}: {SafeText.Clean(ex.Message)}", ex, isTransient: true, TunnelError.ProxyFailed);
        }
    }

    /// <summary>
    /// Reads the answer up to its blank line, one byte at a time so that nothing of the tunnel is read ahead (the
    /// answer is a few hundred bytes, once per connection), and at most <see cref="MaxResponseHeaderBytes"/>.
    /// </summary>
    private async Task<string> ReadHeaderAsync(Stream stream, CancellationToken cancellationToken)
    {
        var buffer = new byte[MaxResponseHeaderBytes];
        var length = 0;
        while (true)
        {
            if (length == buffer.Length)
            {
                throw new TunnelConnectionException($"The proxy at {Address} ({Source}) answered CONNECT with more than {MaxResponseHeaderBytes} bytes of header; it is not an HTTP proxy the agent can use.", null, isTransient: false, TunnelError.ProxyFailed);
            }

            if (await stream.ReadAsync(buffer.AsMemory(length, 1), cancellationToken).ConfigureAwait(false) == 0)
            {
                throw new TunnelConnectionException($"The proxy at {Address} ({Source}) closed the connection without answering CONNECT.", null, isTransient: true, TunnelError.ProxyFailed);
            }

            length++;
            if (length >= 4 && buffer[length - 1] == '\n' && buffer[length - 2] == '\r' && buffer[length - 3] == '\n' && buffer[length - 4] == '\r')
            {
                return Encoding.Latin1.GetString(buffer, 0, length);
            }
        }
    }

    private void Check(string header, string authority)
    {
        var lines = header.Split("\r\n");
        var status = lines[0].Split(' ', 3);
        if (status.Length < 2 || !status[0].StartsWith("HTTP/1.", StringComparison.Ordinal) || !int.TryParse(status[1], NumberStyles.None, CultureInfo.InvariantCulture, out var code) || code is < 100 or > 999)
        {
            throw new TunnelConnectionException($"The proxy at {Address} ({Source}) answered CONNECT with '{SafeText.Clean(lines[0], 120)}', not an HTTP status line; it is not an HTTP proxy.", null, isTransient: false, TunnelError.ProxyFailed);
        }

        if (code is >= 200 and < 300)
        {
            return;
        }

        var reason = status.Length > 2 ? " " + SafeText.Clean(status[2], 120) : "";
        var answer = $"{code.ToString(CultureInfo.InvariantCulture)}{reason}";
        // 407 is the proxy's own; some proxies (tinyproxy among them) answer a CONNECT with bad credentials 401.
        if (code is 407 or 401)
        {
            var schemes = lines.Skip(1)
                .Where(l => l.StartsWith("Proxy-Authenticate:", StringComparison.OrdinalIgnoreCase))
                .Select(l => l["Proxy-Authenticate:".Length..].Trim().Split(' ', 2)[0])
                .Where(s => s.Length > 0)
                .Select(s => SafeText.Clean(s, 32))
                .Distinct(StringComparer.OrdinalIgnoreCase)
                .ToList();
            var basic = schemes.Count == 0 || schemes.Contains("Basic", StringComparer.OrdinalIgnoreCase);
            // A few are enough to say what the proxy wants; a proxy listing hundreds does not fill the message.
            var named = string.Join(" or ", schemes.Take(4)) + (schemes.Count > 4 ? " (or another of its schemes)" : "");
            var message = !basic
                ? $"The proxy at {Address} ({Source}) requires {named} authentication ({answer}); the agent supports Basic only. Ask the network team for a Basic account or an exception for the relay."
                : _userName is null
                    ? $"The proxy at {Address} ({Source}) requires authentication ({answer}); set Proxy.UserName and Proxy.Password (or user:password@ in {Source})."
                    : $"The proxy at {Address} ({Source}) rejected the credentials of user '{SafeText.Clean(_userName, 64)}' ({answer}); check Proxy.UserName and Proxy.Password.";
            throw new TunnelConnectionException(message, null, isTransient: false, TunnelError.ProxyAuthenticationFailed);
        }

        if (code is < 200 or (>= 300 and < 400))
        {
            // An informational or redirect answer is not a tunnel: whatever answered is not a CONNECT proxy the agent can use.
            throw new TunnelConnectionException($"The proxy at {Address} ({Source}) answered CONNECT {authority} with {answer}, not a tunnel: it does not act as an HTTP CONNECT proxy here. Check the proxy's address with the network team.", null, isTransient: false, TunnelError.ProxyFailed);
        }

        // 5xx: the proxy could not reach the relay (down, restarting): retried. 4xx: its policy refuses the tunnel.
        throw code >= 500
            ? new TunnelConnectionException($"The proxy at {Address} ({Source}) could not open a tunnel to {authority} ({answer}): the relay may be down or unreachable from the proxy.", null, isTransient: true, TunnelError.ProxyFailed)
            : new TunnelConnectionException($"The proxy at {Address} ({Source}) refused to open a tunnel to {authority} ({answer}): its policy does not allow it. Ask the network team to allow CONNECT to {authority}.", null, isTransient: false, TunnelError.ProxyFailed);
    }

    private static (string? User, string? Password) FromUserInfo(Uri address)
    {
        if (string.IsNullOrEmpty(address.UserInfo))
        {
            return (null, null);
        }

        var colon = address.UserInfo.IndexOf(':', StringComparison.Ordinal);
        return colon < 0
            ? (Uri.UnescapeDataString(address.UserInfo), "")
            : (Uri.UnescapeDataString(address.UserInfo[..colon]), Uri.UnescapeDataString(address.UserInfo[(colon + 1)..]));
    }

    private static Uri WithoutUserInfo(Uri address) =>
        string.IsNullOrEmpty(address.UserInfo) ? address : new UriBuilder(address) { UserName = "", Password = "" }.Uri;
}
