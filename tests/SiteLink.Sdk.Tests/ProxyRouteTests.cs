using System.IO.Pipelines;
using System.Text;

namespace SiteLink.Sdk.Tests;

/// <summary>
/// Which proxy a relay connection uses (explicit, HTTPS_PROXY, NO_PROXY, opt-out), and how the CONNECT answer of a
/// proxy is read: every answer a proxy can give maps to a typed error that says what happened, and nothing unbounded is
/// read. The real proxy (tinyproxy) is in the functional tests.
/// </summary>
[TestFixture]
[Category("Proxy")]
public sealed class ProxyRouteTests
{
    private static readonly Uri Relay = new("https://connect.vendor.example:443");

    private static Func<string, string?> Env(params (string Name, string Value)[] variables) =>
        name => variables.FirstOrDefault(v => v.Name == name).Value;

    [Test]
    public void ExplicitAddress_WinsOverTheEnvironment_AndCarriesItsCredentials()
    {
        var options = new TunnelProxyOptions { Address = new Uri("http://proxy.corp:3128"), UserName = "alice", Password = "pw" };

        var route = ProxyRoute.For(Relay, options, Env(("HTTPS_PROXY", "http://other:8080")))!;

        Assert.Multiple(() =>
        {
            Assert.That(route.Address, Is.EqualTo(new Uri("http://proxy.corp:3128")));
            Assert.That(route.Source, Is.EqualTo("Proxy.Address"));
            Assert.That(route.HasCredentials, Is.True);
        });
    }

    [Test]
    public void CredentialsInTheAddress_AreDecoded_AndNotShownInTheAddress()
    {
        var options = new TunnelProxyOptions { Address = new Uri("http://bob:p%40ss%3Aword@proxy.corp:3128") };

        var route = ProxyRoute.For(Relay, options)!;

        Assert.Multiple(() =>
        {
            Assert.That(route.Address.ToString(), Is.EqualTo("http://proxy.corp:3128/"));
            Assert.That(route.HasCredentials, Is.True);
        });
        Assert.That(ConnectRequest(route), Does.Contain("Proxy-Authorization: Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes("bob:p@ss:word")) + "\r\n"));
    }

    [TestCase("HTTPS_PROXY")]
    [TestCase("https_proxy")]
    [TestCase("ALL_PROXY")]
    [TestCase("all_proxy")]
    public void HttpsRelay_UsesTheEnvironmentsProxy(string variable)
    {
        var route = ProxyRoute.For(Relay, new TunnelProxyOptions(), Env((variable, "proxy.corp:3128")))!;

        Assert.Multiple(() =>
        {
            Assert.That(route.Address, Is.EqualTo(new Uri("http://proxy.corp:3128")), "a value without a scheme is http://");
            Assert.That(route.Source, Is.EqualTo(variable));
        });
    }

    [Test]
    public void HttpRelay_IgnoresUpperCaseHttpProxy_AsCurlDoes()
    {
        var relay = new Uri("http://127.0.0.1:5000");

        Assert.Multiple(() =>
        {
            Assert.That(ProxyRoute.For(relay, new TunnelProxyOptions(), Env(("HTTP_PROXY", "http://p:1"))), Is.Null);
            Assert.That(ProxyRoute.For(relay, new TunnelProxyOptions(), Env(("http_proxy", "http://p:1")))?.Source, Is.EqualTo("http_proxy"));
        });
    }

    [Test]
    public void UseEnvironmentFalse_IsDirect()
    {
        Assert.That(ProxyRoute.For(Relay, new TunnelProxyOptions { UseEnvironment = false }, Env(("HTTPS_PROXY", "http://proxy:3128"))), Is.Null);
    }

    [TestCase("*", true)]
    [TestCase("vendor.example", true)]
    [TestCase(".vendor.example", true)]
    [TestCase("*.vendor.example", true)]
    [TestCase("connect.vendor.example", true)]
    [TestCase("CONNECT.Vendor.Example", true)]
    [TestCase("connect.vendor.example:443", true)]
    [TestCase("connect.vendor.example:8443", false)]
    [TestCase("other.example, vendor.example", true)]
    [TestCase("ndor.example", false)]
    [TestCase("example.com", false)]
    [TestCase("10.0.0.0/8", false)]
    [TestCase("", false)]
    public void NoProxy_ByHostName(string noProxy, bool bypassed)
    {
        Assert.That(ProxyRoute.Bypasses(noProxy, Relay), Is.EqualTo(bypassed));
    }

    [TestCase("https://10.1.2.3:443", "10.0.0.0/8", true)]
    [TestCase("https://10.1.2.3:443", "10.1.2.3", true)]
    [TestCase("https://10.1.2.3:443", "10.1.2.4", false)]
    [TestCase("https://10.1.2.3:443", "10.1.2.3:443", true)]
    [TestCase("https://10.1.2.3:443", "10.1.2.3:80", false)]
    [TestCase("https://11.1.2.3:443", "10.0.0.0/8", false)]
    [TestCase("https://[fd00::5]:443", "fd00::/8", true)]
    [TestCase("https://[fd00::5]:443", "[fd00::5]:443", true)]
    [TestCase("https://[fd00::5]:443", "fd00::5", true)]
    [TestCase("https://127.0.0.1:443", "localhost", false)]
    public void NoProxy_ByAddress(string relay, string noProxy, bool bypassed)
    {
        Assert.That(ProxyRoute.Bypasses(noProxy, new Uri(relay)), Is.EqualTo(bypassed));
    }

    [Test]
    public void NoProxy_AppliesToTheEnvironmentsProxyOnly()
    {
        var env = Env(("HTTPS_PROXY", "http://proxy:3128"), ("NO_PROXY", "vendor.example"));

        Assert.Multiple(() =>
        {
            Assert.That(ProxyRoute.For(Relay, new TunnelProxyOptions(), env), Is.Null);
            Assert.That(ProxyRoute.For(Relay, new TunnelProxyOptions { Address = new Uri("http://explicit:3128") }, env), Is.Not.Null);
            Assert.That(ProxyRoute.For(Relay, new TunnelProxyOptions(), Env(("HTTPS_PROXY", "http://proxy:3128"), ("no_proxy", "vendor.example"))), Is.Null);
        });
    }

    [TestCase("https://secure-proxy:3128")]
    [TestCase("socks5://proxy:1080")]
    [TestCase("http://proxy:3128/some/path")]
    public void UnusableEnvironmentProxy_IsAPermanentTypedError_ThatDoesNotEchoCredentials(string value)
    {
        var withPassword = value.Replace("://", "://user:hunter2@", StringComparison.Ordinal);

        var ex = Assert.Throws<TunnelConnectionException>(() => ProxyRoute.For(Relay, new TunnelProxyOptions(), Env(("HTTPS_PROXY", withPassword))));

        Assert.Multiple(() =>
        {
            Assert.That(ex!.TunnelError, Is.EqualTo(TunnelError.ProxyFailed));
            Assert.That(ex.IsTransient, Is.False);
            Assert.That(ex.Message, Does.Contain("HTTPS_PROXY").And.Contain("UseEnvironment").And.Not.Contain("hunter2"));
        });
    }

    [Test]
    public void OptionsValidation_NamesEachProblem_WithoutThePassword()
    {
        var options = new TunnelSessionOptions { RelayUrl = Relay, AuthToken = "t" };
        options.Proxy.Address = new Uri("https://proxy:3128");
        options.Proxy.Password = "hunter2";

        var errors = options.Validate();

        Assert.Multiple(() =>
        {
            Assert.That(errors, Has.Some.StartsWith("Proxy.Address uses https://"));
            Assert.That(errors, Has.Some.StartsWith("Proxy.Password is set without Proxy.UserName"));
            Assert.That(string.Join("\n", errors), Does.Not.Contain("hunter2"));
        });
    }

    [Test]
    public async Task Connect_SendsAnAuthorityFormRequest_AndReturnsOn2xx()
    {
        var route = ProxyRoute.For(Relay, new TunnelProxyOptions { Address = new Uri("http://proxy:3128") })!;
        var (stream, written) = Answering("HTTP/1.1 200 Connection established\r\nProxy-Agent: test\r\n\r\nTLS-BYTES");

        await route.HandshakeAsync(stream, "connect.vendor.example", 443, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
        var rest = new byte[9];
        await stream.ReadExactlyAsync(rest).AsTask().WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Multiple(() =>
        {
            Assert.That(Encoding.ASCII.GetString(written()), Does.StartWith("CONNECT connect.vendor.example:443 HTTP/1.1\r\nHost: connect.vendor.example:443\r\n").And.EndWith("\r\n\r\n").And.Not.Contain("Proxy-Authorization"));
            Assert.That(Encoding.ASCII.GetString(rest), Is.EqualTo("TLS-BYTES"), "nothing after the proxy's answer is consumed by the handshake");
        });
    }

    [Test]
    public async Task Connect_ToAnIPv6Relay_BracketsTheAddress()
    {
        var route = ProxyRoute.For(Relay, new TunnelProxyOptions { Address = new Uri("http://proxy:3128") })!;
        var (stream, written) = Answering("HTTP/1.0 200 OK\r\n\r\n");

        await route.HandshakeAsync(stream, "fd00::5", 8443, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.That(Encoding.ASCII.GetString(written()), Does.StartWith("CONNECT [fd00::5]:8443 HTTP/1.1\r\n"));
    }

    [TestCase("HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\n\r\n", TunnelError.ProxyAuthenticationFailed, false, "requires authentication")]
    [TestCase("HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Negotiate\r\nProxy-Authenticate: NTLM\r\n\r\n", TunnelError.ProxyAuthenticationFailed, false, "requires Negotiate or NTLM authentication")]
    [TestCase("HTTP/1.1 403 Forbidden\r\n\r\n", TunnelError.ProxyFailed, false, "refused to open a tunnel to connect.vendor.example:443 (403 Forbidden)")]
    [TestCase("HTTP/1.1 502 Bad Gateway\r\n\r\n", TunnelError.ProxyFailed, true, "could not open a tunnel")]
    [TestCase("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nbusy!", TunnelError.ProxyFailed, true, "(503 Service Unavailable)")]
    [TestCase("SSH-2.0-OpenSSH_9.2\r\n\r\n", TunnelError.ProxyFailed, false, "not an HTTP status line")]
    [TestCase("HTTP/1.1 302 Found\r\nLocation: http://login.corp.example/\r\n\r\n", TunnelError.ProxyFailed, false, "with 302 Found, not a tunnel")]
    [TestCase("HTTP/1.1 100 Continue\r\n\r\n", TunnelError.ProxyFailed, false, "not a tunnel")]
    [TestCase("HTTP/1.1 200", TunnelError.ProxyFailed, true, "closed the connection without answering CONNECT")]
    [TestCase("", TunnelError.ProxyFailed, true, "closed the connection without answering CONNECT")]
    public void Connect_EachAnswer_IsATypedErrorThatSaysWhatTheProxyDid(string answer, TunnelError error, bool transient, string words)
    {
        var route = ProxyRoute.For(Relay, new TunnelProxyOptions { Address = new Uri("http://proxy:3128") })!;
        var (stream, _) = Answering(answer);

        var ex = Assert.ThrowsAsync<TunnelConnectionException>(() => route.HandshakeAsync(stream, "connect.vendor.example", 443, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10)));

        Assert.Multiple(() =>
        {
            Assert.That(ex!.TunnelError, Is.EqualTo(error));
            Assert.That(ex.IsTransient, Is.EqualTo(transient));
            Assert.That(ex.Message, Does.Contain(words).And.Contain("http://proxy:3128/"));
        });
    }

    [Test]
    public void Connect_AnEndlessHeader_IsCutAtTheLimit()
    {
        var route = ProxyRoute.For(Relay, new TunnelProxyOptions { Address = new Uri("http://proxy:3128") })!;
        var (stream, _) = Answering("HTTP/1.1 200 OK\r\n" + new string('x', ProxyRoute.MaxResponseHeaderBytes * 2));

        var ex = Assert.ThrowsAsync<TunnelConnectionException>(() => route.HandshakeAsync(stream, "connect.vendor.example", 443, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10)));

        Assert.That(ex!.Message, Does.Contain($"more than {ProxyRoute.MaxResponseHeaderBytes} bytes"));
    }

    [Test]
    public void Connect_AProxyThatNeverAnswers_EndsWithTheCallersToken()
    {
        var route = ProxyRoute.For(Relay, new TunnelProxyOptions { Address = new Uri("http://proxy:3128") })!;
        var pipe = new Pipe();
        var stream = new DuplexStream(pipe.Reader.AsStream(), Stream.Null);
        using var timeout = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));

        Assert.That(async () => await route.HandshakeAsync(stream, "connect.vendor.example", 443, timeout.Token).WaitAsync(TimeSpan.FromSeconds(10)),
            Throws.InstanceOf<OperationCanceledException>());
    }

    private static string ConnectRequest(ProxyRoute route)
    {
        var (stream, written) = Answering("HTTP/1.1 200 OK\r\n\r\n");
        route.HandshakeAsync(stream, "connect.vendor.example", 443, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10)).GetAwaiter().GetResult();
        return Encoding.ASCII.GetString(written());
    }

    /// <summary>A stream whose reads return <paramref name="answer"/> then end, and whose writes are recorded.</summary>
    private static (Stream Stream, Func<byte[]> Written) Answering(string answer)
    {
        var sink = new MemoryStream();
        return (new DuplexStream(new MemoryStream(Encoding.Latin1.GetBytes(answer)), sink), sink.ToArray);
    }

    /// <summary>Reads from one stream, writes to another (a proxy's answer, and what the agent sent it).</summary>
    internal sealed class DuplexStream(Stream reads, Stream writes) : Stream
    {
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() => writes.Flush();
        public override int Read(byte[] buffer, int offset, int count) => reads.Read(buffer, offset, count);
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => reads.ReadAsync(buffer, cancellationToken);
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => writes.Write(buffer, offset, count);
        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) => writes.WriteAsync(buffer, cancellationToken);
    }
}
