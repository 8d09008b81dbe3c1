using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>
/// <c>TunnelDiagnostics.RunAsync</c> and <c>sitelink-agent diagnose</c> against a real relay and a real proxy
/// (tinyproxy), on loopback only: every step passing, directly and through the proxy, and each way it can fail (a
/// refused port, a black-holed port, a wrong or missing pin, a proxy that wants credentials or is down, a bad token),
/// each naming the failed step, its kind of error, what to do, and skipping the rest, with no secret in the report.
/// </summary>
[TestFixture]
[Category("Diagnose")]
public sealed class DiagnoseTests
{
    private const string ProxyPassword = "correct-horse-7f3a";
    private const string WrongProxyPassword = "battery-staple-9c1e";
    private const string BadToken = "not-a-token-of-this-relay-0123456789";

    private static TunnelDiagnosticStepKind[] DirectSteps =>
    [
        TunnelDiagnosticStepKind.Dns, TunnelDiagnosticStepKind.TcpConnect, TunnelDiagnosticStepKind.TlsHandshake,
        TunnelDiagnosticStepKind.Http2, TunnelDiagnosticStepKind.Authentication, TunnelDiagnosticStepKind.Heartbeat,
    ];

    private static TunnelDiagnosticStepKind[] ProxySteps =>
    [
        TunnelDiagnosticStepKind.Dns, TunnelDiagnosticStepKind.TcpConnect, TunnelDiagnosticStepKind.ProxyConnect,
        TunnelDiagnosticStepKind.TlsHandshake, TunnelDiagnosticStepKind.Http2, TunnelDiagnosticStepKind.Authentication,
        TunnelDiagnosticStepKind.Heartbeat,
    ];

    private static TunnelSessionOptions Direct(TestRelay relay, string token = TestRelay.AcmeToken)
    {
        var options = relay.AgentOptions(token);
        options.Proxy.UseEnvironment = false;
        return options;
    }

    [Test]
    public async Task EveryStepPasses_Direct_AndTheHeartbeatRoundTripIsReported()
    {
        await using var relay = await TestRelay.StartAsync([]);

        var report = await TunnelDiagnostics.RunAsync(Direct(relay)).DefaultTimeout();

        var section = report.Relays.Single();
        Assert.Multiple(() =>
        {
            Assert.That(report.Succeeded, Is.True, report.ToString());
            Assert.That(report.FailedStep, Is.Null);
            Assert.That(section.RelayUrl, Is.EqualTo(relay.Server.AgentUrl));
            Assert.That(section.ProxyAddress, Is.Null);
            Assert.That(section.Steps.Select(s => s.Kind), Is.EqualTo(DirectSteps));
            Assert.That(section.Steps.Select(s => s.Verdict), Is.All.EqualTo(TunnelDiagnosticVerdict.Passed), report.ToString());
            Assert.That(Step(report, TunnelDiagnosticStepKind.TlsHandshake).Detail,
                Does.Contain("SHA-256 " + relay.Server.CertificateSha256).And.Contain("it matches PinnedCertificateSha256").And.Contain("valid until"));
            Assert.That(Step(report, TunnelDiagnosticStepKind.Http2).Detail, Does.Contain("ALPN h2"));
            Assert.That(Step(report, TunnelDiagnosticStepKind.Authentication).Detail, Does.Contain("relay 'test-relay'").And.Contain("region 'loopback'"));
            Assert.That(Step(report, TunnelDiagnosticStepKind.Heartbeat).Detail, Does.Match("round trip [0-9.]+ m?s"));
            Assert.That(report.ToString(), Does.Contain("Result: the agent can connect."));
        });
        AssertNoSecrets(report, TestRelay.AcmeToken);
        // The diagnosis closed its session: the relay holds none.
        await Eventually.WaitUntilAsync(() => relay.Server.SessionCount == 0, "the diagnosis's session ended at the relay");
    }

    [Test]
    [Category("Trust")]
    public async Task PrivateCa_TheTlsStepTrustsExactlyWhatTheSessionTrusts()
    {
        // The TLS step builds the chain as the session does: against TrustedCertificateAuthorities only.
        using var pki = new TestPki("Vendor");
        using var other = new TestPki("Other");
        var (certificate, key) = pki.IssueServer("relay");
        await using var relay = await TestRelay.StartAsync([], o =>
        {
            o.Tls.CertificatePath = certificate;
            o.Tls.KeyPath = key;
        });
        TunnelSessionOptions Trusting(string root)
        {
            var options = Direct(relay);
            options.PinnedCertificateSha256 = null;
            options.TrustedCertificateAuthorities = root;
            return options;
        }

        var trusted = await TunnelDiagnostics.RunAsync(Trusting(pki.RootPem)).DefaultTimeout();
        var refused = await TunnelDiagnostics.RunAsync(Trusting(other.RootPem)).DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(trusted.Succeeded, Is.True, trusted.ToString());
            Assert.That(Step(trusted, TunnelDiagnosticStepKind.TlsHandshake).Detail, Does.Contain("its chain leads to TrustedCertificateAuthorities"));
            Assert.That(refused.FailedStep?.Kind, Is.EqualTo(TunnelDiagnosticStepKind.TlsHandshake), refused.ToString());
            Assert.That(refused.FailedStep?.Error, Is.EqualTo(TunnelError.CertificateRejected));
            Assert.That(refused.FailedStep?.Detail, Does.Contain("does not lead to one of TrustedCertificateAuthorities"));
        });
    }

    [Test]
    public async Task EveryStepPasses_ThroughTinyproxy_WithTheProxyStep()
    {
        await using var proxy = await TinyproxyServer.StartAsync("alice", ProxyPassword);
        await using var relay = await TestRelay.StartAsync([]);
        var options = Direct(relay);
        options.Proxy.Address = proxy.Address;
        options.Proxy.UserName = "alice";
        options.Proxy.Password = ProxyPassword;

        var report = await TunnelDiagnostics.RunAsync(options).DefaultTimeout();

        var section = report.Relays.Single();
        Assert.Multiple(() =>
        {
            Assert.That(report.Succeeded, Is.True, report.ToString());
            Assert.That(section.ProxyAddress, Is.EqualTo(proxy.Address));
            Assert.That(section.ProxySource, Is.EqualTo("Proxy.Address"));
            Assert.That(section.Steps.Select(s => s.Kind), Is.EqualTo(ProxySteps));
            Assert.That(Step(report, TunnelDiagnosticStepKind.TcpConnect).Detail, Does.Contain("the proxy at 127.0.0.1:" + proxy.Port));
            Assert.That(Step(report, TunnelDiagnosticStepKind.ProxyConnect).Detail, Does.Contain("opened a tunnel to 127.0.0.1:" + relay.Server.AgentUrl.Port));
            Assert.That(Step(report, TunnelDiagnosticStepKind.Heartbeat).Detail, Does.Contain("round trip"));
            // The probe's own tunnel (DNS to TLS), then the session's handshake: both through the proxy.
            Assert.That(proxy.ConnectRequests, Has.Count.EqualTo(2), proxy.Log);
        });
        AssertNoSecrets(report, TestRelay.AcmeToken, ProxyPassword);
    }

    [Test]
    public async Task RefusedPort_FailsAtTcp_NamingThePort_AndSkipsTheRest()
    {
        // A loopback port nothing listens on: bound, noted, closed.
        var port = RealServers.FreePort();
        var options = new TunnelSessionOptions { RelayUrl = new Uri($"https://127.0.0.1:{port}"), AuthToken = TestRelay.AcmeToken };
        options.Proxy.UseEnvironment = false;

        var report = await TunnelDiagnostics.RunAsync(options).DefaultTimeout();

        AssertFailedAt(report, TunnelDiagnosticStepKind.TcpConnect, TunnelError.ConnectionFailed,
            $"port {port} refused on 127.0.0.1: nothing listens there or a firewall rejects it", "check the port in RelayUrl");
        AssertNoSecrets(report, TestRelay.AcmeToken);
    }

    [Test]
    public async Task BlackHoledPort_TimesOutAtTcp_WithinTheConnectTimeout_AndSaysWhatToAskTheNetworkTeam()
    {
        using var hole = BlackHole.Open();
        var options = new TunnelSessionOptions
        {
            RelayUrl = new Uri($"https://127.0.0.1:{hole.Port}"),
            AuthToken = TestRelay.AcmeToken,
            ConnectTimeout = TimeSpan.FromSeconds(1),
        };
        options.Proxy.UseEnvironment = false;

        var report = await TunnelDiagnostics.RunAsync(options).DefaultTimeout();

        AssertFailedAt(report, TunnelDiagnosticStepKind.TcpConnect, TunnelError.ConnectionFailed,
            $"port {hole.Port} blocked: no answer within 1 s", $"ask your network team to allow outbound TCP {hole.Port} to 127.0.0.1");
        Assert.That(report.FailedStep!.Duration, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(900)).And.LessThan(TimeSpan.FromSeconds(10)));
    }

    [Test]
    public async Task WrongPin_FailsAtTls_WithThePresentedFingerprint()
    {
        await using var relay = await TestRelay.StartAsync([]);
        var options = Direct(relay);
        options.PinnedCertificateSha256 = new string('a', 64);

        var report = await TunnelDiagnostics.RunAsync(options).DefaultTimeout();

        AssertFailedAt(report, TunnelDiagnosticStepKind.TlsHandshake, TunnelError.CertificateRejected,
            "does not match PinnedCertificateSha256", "--pin");
        Assert.That(report.FailedStep!.Detail, Does.Contain(relay.Server.CertificateSha256));
        AssertNoSecrets(report, TestRelay.AcmeToken);
    }

    [Test]
    public async Task NoPin_AgainstTheRelaysSelfSignedCertificate_FailsAtTls()
    {
        await using var relay = await TestRelay.StartAsync([]);
        var options = Direct(relay);
        options.PinnedCertificateSha256 = null;

        var report = await TunnelDiagnostics.RunAsync(options).DefaultTimeout();

        AssertFailedAt(report, TunnelDiagnosticStepKind.TlsHandshake, TunnelError.CertificateRejected,
            "is not trusted by this machine's certificate store", "PinnedCertificateSha256 (--pin)");
        Assert.That(report.FailedStep!.Detail, Does.Contain("its SHA-256 is " + relay.Server.CertificateSha256), "what to compare with the relay's operator");
    }

    [Test]
    public async Task CertificateExpiringWithinTwoWeeks_IsAWarning_AndTheAgentStillConnects()
    {
        await using var relay = await TestRelay.StartAsync([]);
        var options = Direct(relay);
        // The relay's certificate is valid for a year: move the diagnosis's clock (only its dates) to 5 days before it ends.
        var notAfter = await ReadNotAfterAsync(relay);
        options.TimeProvider = new ShiftedClock(notAfter - DateTimeOffset.UtcNow - TimeSpan.FromDays(5));

        var report = await TunnelDiagnostics.RunAsync(options).DefaultTimeout();

        var tls = Step(report, TunnelDiagnosticStepKind.TlsHandshake);
        Assert.Multiple(() =>
        {
            Assert.That(report.Succeeded, Is.True, report.ToString());
            Assert.That(tls.Verdict, Is.EqualTo(TunnelDiagnosticVerdict.Warning));
            Assert.That(tls.Detail, Does.Contain("it expires in 4 days").Or.Contain("it expires in 5 days"));
            Assert.That(tls.Advice, Does.Contain("renew").And.Contain("update PinnedCertificateSha256"));
            Assert.That(report.ToString(), Does.Contain("WARN  TLS handshake").And.Contain("with warnings"));
        });
    }

    [Test]
    public async Task ProxyWantingCredentials_NoneGiven_FailsAtProxyConnect()
    {
        await using var proxy = await TinyproxyServer.StartAsync("alice", ProxyPassword);
        await using var relay = await TestRelay.StartAsync([]);
        var options = Direct(relay);
        options.Proxy.Address = proxy.Address;

        var report = await TunnelDiagnostics.RunAsync(options).DefaultTimeout();

        AssertFailedAt(report, TunnelDiagnosticStepKind.ProxyConnect, TunnelError.ProxyAuthenticationFailed,
            "requires authentication", "SiteLink:Proxy:UserName");
        AssertNoSecrets(report, TestRelay.AcmeToken);
    }

    [Test]
    public async Task ProxyWantingCredentials_WrongPassword_FailsAtProxyConnect_NamingTheUserNotThePassword()
    {
        await using var proxy = await TinyproxyServer.StartAsync("alice", ProxyPassword);
        await using var relay = await TestRelay.StartAsync([]);
        var options = Direct(relay);
        options.Proxy.Address = new UriBuilder(proxy.Address) { UserName = "alice", Password = WrongProxyPassword }.Uri;

        var report = await TunnelDiagnostics.RunAsync(options).DefaultTimeout();

        AssertFailedAt(report, TunnelDiagnosticStepKind.ProxyConnect, TunnelError.ProxyAuthenticationFailed,
            "rejected the credentials of user 'alice'", "SiteLink:Proxy:Password");
        Assert.That(report.Relays[0].ProxyAddress, Is.EqualTo(proxy.Address), "shown without its user information");
        AssertNoSecrets(report, TestRelay.AcmeToken, WrongProxyPassword, ProxyPassword);
    }

    [Test]
    public async Task ProxyDown_FailsAtTcpToTheProxy_AsAProxyFailure()
    {
        await using var proxy = await TinyproxyServer.StartAsync();
        await using var relay = await TestRelay.StartAsync([]);
        await proxy.StopAsync();
        var options = Direct(relay);
        options.Proxy.Address = proxy.Address;

        var report = await TunnelDiagnostics.RunAsync(options).DefaultTimeout();

        AssertFailedAt(report, TunnelDiagnosticStepKind.TcpConnect, TunnelError.ProxyFailed,
            $"port {proxy.Port} refused on the proxy 127.0.0.1 (Proxy.Address)", "that the proxy is running");
        Assert.That(report.Relays[0].Steps.Select(s => s.Kind), Is.EqualTo(ProxySteps));
    }

    [Test]
    public async Task BadToken_FailsAtAuthentication()
    {
        await using var relay = await TestRelay.StartAsync([]);

        var report = await TunnelDiagnostics.RunAsync(Direct(relay, BadToken)).DefaultTimeout();

        AssertFailedAt(report, TunnelDiagnosticStepKind.Authentication, TunnelError.AuthenticationFailed,
            "rejected the authtoken", "check the authtoken");
        AssertNoSecrets(report, BadToken);
    }

    [Test]
    public async Task Cli_EveryStepPasses_PrintsTheReportAndWhatToSend_Exit0()
    {
        await using var relay = await TestRelay.StartAsync([]);

        var (code, agent) = await DiagnoseAsync(relay, TestRelay.AcmeToken, ["--endpoint", "web=127.0.0.1:8080"]);

        await using (agent)
        {
            var output = string.Join(Environment.NewLine, agent.Output);
            Assert.Multiple(() =>
            {
                Assert.That(code, Is.EqualTo(0), agent.AllOutput);
                Assert.That(output, Does.Contain("SiteLink connectivity diagnosis (SDK ").And.Contain(" UTC"));
                Assert.That(output, Does.Contain("Relay: " + relay.Server.AgentUrl).And.Contain("Proxy: none (direct connection)"));
                foreach (var name in new[] { "DNS", "TCP connect", "TLS handshake", "HTTP/2", "Authentication", "Heartbeat" })
                {
                    Assert.That(agent.Output.Any(l => l.TrimStart().StartsWith("PASS  " + name, StringComparison.Ordinal)), Is.True, $"a PASS line for {name}:{Environment.NewLine}{output}");
                }

                Assert.That(agent.Output.Last(), Does.Contain("support").And.Contain("it contains no secrets"));
                Assert.That(agent.AllOutput, Does.Not.Contain(TestRelay.AcmeToken));
            });
        }
    }

    [Test]
    public async Task Cli_Json_IsTheReportAlone()
    {
        await using var relay = await TestRelay.StartAsync([]);

        var (code, agent) = await DiagnoseAsync(relay, TestRelay.AcmeToken, ["--json"]);

        await using (agent)
        {
            using var json = JsonDocument.Parse(string.Join('\n', agent.Output));
            var section = json.RootElement.GetProperty("relays")[0];
            var steps = section.GetProperty("steps").EnumerateArray().ToList();
            Assert.Multiple(() =>
            {
                Assert.That(code, Is.EqualTo(0), agent.AllOutput);
                Assert.That(json.RootElement.GetProperty("succeeded").GetBoolean(), Is.True);
                Assert.That(json.RootElement.GetProperty("sdkVersion").GetString(), Is.Not.Empty);
                Assert.That(section.GetProperty("relayUrl").GetString(), Is.EqualTo(relay.Server.AgentUrl.ToString()));
                Assert.That(section.GetProperty("proxy").ValueKind, Is.EqualTo(JsonValueKind.Null));
                Assert.That(steps.Select(s => s.GetProperty("step").GetString()), Is.EqualTo(DirectSteps.Select(k => k.ToString())));
                Assert.That(steps.Select(s => s.GetProperty("verdict").GetString()), Is.All.EqualTo("Passed"));
                Assert.That(steps[^1].GetProperty("detail").GetString(), Does.Contain("round trip"));
                Assert.That(agent.AllOutput, Does.Not.Contain(TestRelay.AcmeToken));
            });
        }
    }

    [TestCase("token", 3, "Authentication")]
    [TestCase("pin", 4, "TLS handshake")]
    [TestCase("port", 8, "TCP connect")]
    public async Task Cli_ExitCode_SaysWhatFailed(string fault, int expected, string failedStep)
    {
        await using var relay = await TestRelay.StartAsync([]);
        var relayUrl = fault == "port" ? $"https://127.0.0.1:{RealServers.FreePort()}" : relay.Server.AgentUrl.ToString();
        var pin = fault == "pin" ? new string('b', 64) : relay.Server.CertificateSha256!;
        var token = fault == "token" ? BadToken : TestRelay.AcmeToken;

        var (code, agent) = await DiagnoseAsync(relay, token, [], relayUrl, pin);

        await using (agent)
        {
            Assert.Multiple(() =>
            {
                Assert.That(code, Is.EqualTo(expected), agent.AllOutput);
                Assert.That(agent.Output.Any(l => l.TrimStart().StartsWith("FAIL  " + failedStep, StringComparison.Ordinal)), Is.True, agent.AllOutput);
                Assert.That(agent.Output.Any(l => l.Contains("what to do: ", StringComparison.Ordinal)), Is.True, agent.AllOutput);
                Assert.That(agent.Output.Any(l => l.TrimStart().StartsWith("SKIP  Heartbeat", StringComparison.Ordinal)), Is.True, agent.AllOutput);
                Assert.That(agent.AllOutput, Does.Not.Contain(token));
            });
        }
    }

    private static async Task<(int Code, ProcessRunner Agent)> DiagnoseAsync(TestRelay relay, string token, string[] extra, string? relayUrl = null, string? pin = null)
    {
        string[] args = ["diagnose", "--relay", relayUrl ?? relay.Server.AgentUrl.ToString(), "--pin", pin ?? relay.Server.CertificateSha256!, "--no-proxy", .. extra];
        var agent = ProcessRunner.Dotnet(ProcessRunner.AgentDll, args, null, new Dictionary<string, string> { ["SITELINK_AUTHTOKEN"] = token });
        var code = await agent.WaitForExitAsync(TimeSpan.FromSeconds(60));
        return (code, agent);
    }

    private static TunnelDiagnosticStep Step(TunnelDiagnosticReport report, TunnelDiagnosticStepKind kind) =>
        report.Relays.Single().Steps.Single(s => s.Kind == kind);

    private static void AssertFailedAt(TunnelDiagnosticReport report, TunnelDiagnosticStepKind kind, TunnelError error, string detail, string advice)
    {
        var steps = report.Relays.Single().Steps;
        var failed = steps.ToList().FindIndex(s => s.Kind == kind);
        Assert.Multiple(() =>
        {
            Assert.That(report.Succeeded, Is.False, report.ToString());
            Assert.That(report.FailedStep?.Kind, Is.EqualTo(kind), report.ToString());
            Assert.That(report.FailedStep?.Error, Is.EqualTo(error), report.ToString());
            Assert.That(report.FailedStep?.Detail, Does.Contain(detail));
            Assert.That(report.FailedStep?.Advice, Does.Contain(advice));
            Assert.That(steps.Take(failed).Select(s => s.Verdict), Is.All.EqualTo(TunnelDiagnosticVerdict.Passed), report.ToString());
            Assert.That(steps.Skip(failed + 1).Select(s => s.Verdict), Is.Not.Empty.And.All.EqualTo(TunnelDiagnosticVerdict.Skipped), report.ToString());
            Assert.That(steps.Skip(failed + 1).Select(s => s.Detail), Is.All.EqualTo("not run: an earlier step failed"));
            Assert.That(report.ToString(), Does.Contain($"FAIL  {report.FailedStep?.Name}").And.Contain("what to do: "));
        });
    }

    private static void AssertNoSecrets(TunnelDiagnosticReport report, params string[] secrets)
    {
        var text = report.ToString();
        var json = report.ToJson();
        foreach (var secret in secrets)
        {
            Assert.That(text, Does.Not.Contain(secret));
            Assert.That(json, Does.Not.Contain(secret));
        }
    }

    private static async Task<DateTimeOffset> ReadNotAfterAsync(TestRelay relay)
    {
        using var client = new TcpClient();
        await client.ConnectAsync(IPAddress.Loopback, relay.Server.AgentUrl.Port).DefaultTimeout();
        await using var tls = new System.Net.Security.SslStream(client.GetStream(), false,
            (_, certificate, _, _) => certificate is not null && Convert.ToHexString(SHA256.HashData(certificate.GetRawCertData())) == relay.Server.CertificateSha256);
        await tls.AuthenticateAsClientAsync("127.0.0.1").DefaultTimeout();
        return new DateTimeOffset(((X509Certificate2)tls.RemoteCertificate!).NotAfter.ToUniversalTime(), TimeSpan.Zero);
    }

    /// <summary>The system clock with its dates moved; its timers and timestamps are the system's.</summary>
    private sealed class ShiftedClock(TimeSpan shift) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => base.GetUtcNow() + shift;
    }

    /// <summary>
    /// A loopback port that accepts no TCP handshake: a listener with a backlog of 1 whose accept queue is filled with
    /// connections never accepted, so Linux drops further SYNs and a connect times out, as behind a firewall that drops.
    /// </summary>
    private sealed class BlackHole : IDisposable
    {
        private readonly Socket _listener;
        private readonly List<Socket> _fillers = [];

        private BlackHole(Socket listener) => _listener = listener;

        public int Port => ((IPEndPoint)_listener.LocalEndPoint!).Port;

        public static BlackHole Open()
        {
            var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            listener.Listen(1);
            var hole = new BlackHole(listener);
            for (var i = 0; i < 16; i++)
            {
                var filler = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                using var quick = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
                try
                {
                    filler.ConnectAsync(new IPEndPoint(IPAddress.Loopback, hole.Port), quick.Token).AsTask().GetAwaiter().GetResult();
                    hole._fillers.Add(filler);
                }
                catch (OperationCanceledException)
                {
                    // The queue is full: this SYN was dropped. The port is a black hole now.
                    filler.Dispose();
                    return hole;
                }
            }

            hole.Dispose();
            Assert.Fail("Could not fill the listener's accept queue: connects to a full backlog still complete here.");
            return hole;
        }

        public void Dispose()
        {
            foreach (var filler in _fillers)
            {
                filler.Dispose();
            }

            _listener.Dispose();
        }
    }
}
