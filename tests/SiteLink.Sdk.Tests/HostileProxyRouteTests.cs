using System.IO.Pipelines;
using System.Text;

namespace SiteLink.Sdk.Tests;

/// <summary>
/// A hostile proxy (or a hostile environment) against the CONNECT client: what the proxy answers is bounded and cleaned
/// before it is echoed, the request cannot be forged through the credentials, the password shows nowhere, and NO_PROXY's
/// odd entries neither throw nor bypass more than they say.
/// </summary>
[TestFixture]
[Category("Hostile")]
[Category("Proxy")]
public sealed class HostileProxyRouteTests
{
    private const string Password = "hunter2-SECRET";
    private static readonly Uri Relay = new("https://connect.vendor.example:443");
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(10);

    private static ProxyRoute Route(string user = "alice") =>
        ProxyRoute.For(Relay, new TunnelProxyOptions { Address = new Uri("http://proxy:3128"), UserName = user, Password = Password })!;

    private static TunnelConnectionException Refusal(ProxyRoute route, string answer)
    {
        var (stream, _) = Answering(Encoding.Latin1.GetBytes(answer));
        return Assert.ThrowsAsync<TunnelConnectionException>(() => route.HandshakeAsync(stream, "connect.vendor.example", 443, CancellationToken.None).WaitAsync(Limit))!;
    }

    private static void AssertFitToShow(string message, int max)
    {
        Assert.Multiple(() =>
        {
            Assert.That(message.Length, Is.LessThanOrEqualTo(max), "what the proxy said is capped");
            Assert.That(message.Any(c => char.IsControl(c) || c is '\u202e' or '\u2028'), Is.False, "no control or bidi characters reach the message");
            Assert.That(message, Does.Not.Contain(Password));
        });
    }

    [Test]
    public void A407_WithThousandsOfAuthenticationSchemes_GivesACappedMessage()
    {
        var header = new StringBuilder("HTTP/1.1 407 Proxy Authentication Required\r\n");
        for (var i = 0; header.Length < ProxyRoute.MaxResponseHeaderBytes - 200; i++)
        {
            header.Append("Proxy-Authenticate: Scheme").Append(i).Append("\r\n");
        }

        var ex = Refusal(Route(), header.Append("\r\n").ToString());

        Assert.That(ex.TunnelError, Is.EqualTo(TunnelError.ProxyAuthenticationFailed));
        AssertFitToShow(ex.Message, 1024);
    }

    [Test]
    public void A407_OfferingBasicAfterManyOtherSchemes_IsStillARequestForBasicCredentials()
    {
        var header = new StringBuilder("HTTP/1.1 407 Proxy Authentication Required\r\n");
        for (var i = 0; i < 50; i++)
        {
            header.Append("Proxy-Authenticate: Scheme").Append(i).Append("\r\n");
        }

        var ex = Refusal(Route(), header.Append("Proxy-Authenticate: Basic realm=\"corp\"\r\n\r\n").ToString());

        Assert.That(ex.Message, Does.Contain("rejected the credentials of user 'alice'"));
    }

    [Test]
    public void A407_WithAnEnormousControlCharacterReason_AndScheme_IsCleanedAndCapped()
    {
        var junk = "\u001b[31mFAKE\r\u0000\u202e\u2028" + new string('r', 8000);
        var ex = Refusal(Route(), $"HTTP/1.1 407 {junk}\r\nProxy-Authenticate: \u001b]0;{junk}\r\n\r\n");

        Assert.That(ex.TunnelError, Is.EqualTo(TunnelError.ProxyAuthenticationFailed));
        AssertFitToShow(ex.Message, 1024);
    }

    [TestCase("HTTP/1.1 403 \u001b[2J\u0007forbidden\u0085{0}\r\n\r\n")]
    [TestCase("HTTP/1.1 502 {0}\u0000\r\n\r\n")]
    [TestCase("\u001b[2J{0}\r\n\r\n")]
    public void OtherRefusals_WithHostileReasonPhrases_AreCleanedAndCapped(string answer)
    {
        var ex = Refusal(Route(), string.Format(System.Globalization.CultureInfo.InvariantCulture, answer, new string('x', 10000)));

        AssertFitToShow(ex.Message, 1024);
    }

    [Test]
    public void RejectedCredentials_NameTheUser_NeverThePassword_AndTheRouteHidesIt()
    {
        var route = Route();

        var ex = Refusal(route, "HTTP/1.1 407 Nope\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n");

        Assert.Multiple(() =>
        {
            Assert.That(ex.Message, Does.Contain("'alice'").And.Not.Contain(Password));
            Assert.That(ex.ToString(), Does.Not.Contain(Password));
            Assert.That(route.ToString(), Does.Not.Contain(Password));
            Assert.That(route.Address.ToString(), Does.Not.Contain(Password));
            Assert.That(route.Unreachable(new System.Net.Sockets.SocketException((int)System.Net.Sockets.SocketError.ConnectionRefused)).Message, Does.Not.Contain(Password));
        });
    }

    [TestCase("http://alice:" + Password + "@proxy.corp:3128")]
    [TestCase("alice:" + Password + "@proxy.corp:3128")]
    [TestCase("http://alice:" + Password + "@proxy.corp:3128/")]
    public void EnvironmentCredentials_NeverShowInTheRoute(string value)
    {
        var route = ProxyRoute.For(Relay, new TunnelProxyOptions(), name => name == "HTTPS_PROXY" ? value : null)!;

        Assert.Multiple(() =>
        {
            Assert.That(route.HasCredentials, Is.True);
            Assert.That(route.Address.ToString(), Is.EqualTo("http://proxy.corp:3128/"));
            Assert.That(route.Unreachable(new System.Net.Sockets.SocketException((int)System.Net.Sockets.SocketError.HostNotFound)).Message, Does.Not.Contain(Password));
        });
    }

    [TestCase("http://alice:" + Password + "@")]
    [TestCase("http://alice:" + Password + "@proxy:3128:99")]
    [TestCase("http://alice:" + Password + "@proxy:99999")]
    [TestCase("alice:" + Password)]
    [TestCase("http://[::1")]
    [TestCase("http://alice:" + Password + "@proxy:3128/\r\nX-Injected: 1")]
    [TestCase("\u0001\u0002\u0003")]
    [TestCase("ftp://alice:" + Password + "@proxy:21")]
    [TestCase("http://alice:" + Password + "@proxy:3128?x=" + Password)]
    public void GarbageInHttpsProxy_IsAPermanentTypedError_OrAUsableRoute_NeverEchoingThePassword(string value)
    {
        ProxyRoute? route = null;
        TunnelConnectionException? error = null;
        try
        {
            route = ProxyRoute.For(Relay, new TunnelProxyOptions(), name => name == "HTTPS_PROXY" ? value : null);
        }
        catch (TunnelConnectionException ex)
        {
            error = ex;
        }

        Assert.Multiple(() =>
        {
            if (error is not null)
            {
                Assert.That(error.TunnelError, Is.EqualTo(TunnelError.ProxyFailed));
                Assert.That(error.IsTransient, Is.False);
                Assert.That(error.Message, Does.Not.Contain(Password));
            }
            else
            {
                Assert.That(route, Is.Not.Null);
                Assert.That(route!.Address.ToString(), Does.Not.Contain(Password).And.Not.Contain("\n"));
            }
        });
    }

    [Test]
    public async Task CrLfInTheUserInfo_CannotAddHeadersToTheConnectRequest()
    {
        var value = "http://al%0D%0AX-Injected:%201%0D%0A:pw%0D%0AX-Two:%202@proxy:3128";
        var route = ProxyRoute.For(Relay, new TunnelProxyOptions(), name => name == "HTTPS_PROXY" ? value : null)!;
        var (stream, written) = Answering("HTTP/1.1 200 OK\r\n\r\n"u8.ToArray());

        await route.HandshakeAsync(stream, "connect.vendor.example", 443, CancellationToken.None).WaitAsync(Limit);
        var lines = Encoding.ASCII.GetString(written.ToArray()).Split("\r\n");

        Assert.Multiple(() =>
        {
            Assert.That(lines.Select(l => l.Split(':')[0]), Is.EqualTo(new[] { "CONNECT connect.vendor.example", "Host", "User-Agent", "Proxy-Authorization", "", "" }));
            Assert.That(lines.Any(l => l.Contains("Injected", StringComparison.Ordinal) || l.Contains("X-Two", StringComparison.Ordinal)), Is.False);
        });
    }

    [Test]
    public void AHostileRelayHost_CannotAddHeadersToTheConnectRequest()
    {
        var route = Route();
        var (stream, written) = Answering("HTTP/1.1 200 OK\r\n\r\n"u8.ToArray());

        Assert.That(async () => await route.HandshakeAsync(stream, "relay.example\r\nX-Injected: 1", 443, CancellationToken.None).WaitAsync(Limit),
            Throws.InstanceOf<TunnelException>().Or.InstanceOf<ArgumentException>());
        Assert.That(Encoding.ASCII.GetString(written.ToArray()), Does.Not.Contain("X-Injected"));
    }

    [Test]
    public void ASlowlorisProxy_TricklingItsAnswer_EndsWithTheCallersToken()
    {
        var route = Route();
        var pipe = new Pipe();
        var (stream, _) = Answering(pipe.Reader.AsStream());
        using var stop = new CancellationTokenSource();
        var trickle = Task.Run(async () =>
        {
            // One byte at a time of an answer that never ends its headers.
            await pipe.Writer.WriteAsync("HTTP/1.1 200 OK\r\n"u8.ToArray());
            while (!stop.IsCancellationRequested)
            {
                await pipe.Writer.WriteAsync("X"u8.ToArray());
                await Task.Yield();
            }
        });
        using var timeout = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));

        var ex = Assert.CatchAsync(async () => await route.HandshakeAsync(stream, "connect.vendor.example", 443, timeout.Token).WaitAsync(Limit));
        stop.Cancel();

        // Either the token ended it, or the header limit did first: both are bounded, neither waits for the proxy.
        Assert.That(ex, Is.InstanceOf<OperationCanceledException>().Or.InstanceOf<TunnelConnectionException>());
    }

    [TestCase(",,, ,\t,", "https://connect.vendor.example:443", false)]
    [TestCase(" , vendor.example ,", "https://connect.vendor.example:443", true)]
    [TestCase("a.example, *", "https://connect.vendor.example:443", true)]
    [TestCase("[fd00::5", "https://[fd00::5]:443", false)]
    [TestCase("[fd00::5]", "https://[fd00::5]:443", true)]
    [TestCase("[fd00::5]:", "https://[fd00::5]:443", false)]
    [TestCase("[fd00::5]x", "https://[fd00::5]:443", false)]
    [TestCase("connect.vendor.example:", "https://connect.vendor.example:443", false)]
    [TestCase("connect.vendor.example:0", "https://connect.vendor.example:443", false)]
    [TestCase("[fd00::5]:8443", "https://[fd00::5]:443", false)]
    [TestCase("[::1]", "https://[::1]:443", true)]
    [TestCase("::1", "https://[::1]:443", true)]
    [TestCase("0:0:0:0:0:0:0:1", "https://[::1]:443", true)]
    [TestCase("fd00::/999", "https://[fd00::5]:443", false)]
    [TestCase("10.0.0.0/99", "https://10.1.2.3:443", false)]
    [TestCase("10.1.2.3/32", "https://10.1.2.3:443", true)]
    [TestCase("1", "https://10.1.2.1:443", false)]
    [TestCase("2.3", "https://10.1.2.3:443", false)]
    [TestCase("*.", "https://connect.vendor.example:443", false)]
    [TestCase(".", "https://connect.vendor.example:443", false)]
    [TestCase("**", "https://connect.vendor.example:443", false)]
    [TestCase("example", "https://connect.vendor.example:443", true)]
    [TestCase("le", "https://connect.vendor.example:443", false)]
    [TestCase("connect.vendor.example.", "https://connect.vendor.example:443", true)]
    [TestCase("connect.vendor.example:99999999999", "https://connect.vendor.example:443", false)]
    [TestCase("connect.vendor.example:-443", "https://connect.vendor.example:443", false)]
    [TestCase("[]:443", "https://connect.vendor.example:443", false)]
    public void NoProxy_OddEntries_NeitherThrowNorBypassMoreThanTheySay(string noProxy, string relay, bool bypassed)
    {
        Assert.That(ProxyRoute.Bypasses(noProxy, new Uri(relay)), Is.EqualTo(bypassed));
    }

    [Test]
    public void NoProxy_AHugeList_IsReadQuickly()
    {
        var list = string.Join(",", Enumerable.Range(0, 200_000).Select(i => $"host{i}.internal.example")) + ",10.0.0.0/8,vendor.example";
        var watch = System.Diagnostics.Stopwatch.StartNew();

        var bypassed = ProxyRoute.Bypasses(list, Relay);

        Assert.Multiple(() =>
        {
            Assert.That(bypassed, Is.True);
            Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)));
        });
    }

    /// <summary>Reads come from <paramref name="reads"/>; writes are recorded (the second item).</summary>
    private static (Stream Stream, MemoryStream Written) Answering(Stream reads)
    {
        var written = new MemoryStream();
        return (new ProxyRouteTests.DuplexStream(reads, written), written);
    }

    private static (Stream Stream, MemoryStream Written) Answering(byte[] answer) => Answering(new MemoryStream(answer));
}
