using System.Net;
using System.Net.Sockets;
using System.Text.Json;

namespace SiteLink.Sdk.Tests;

/// <summary>
/// <see cref="TunnelDiagnostics"/> without a relay: a name that does not resolve (an injected resolver, so no DNS query
/// leaves the machine), a DNS server that does not answer, invalid options, and the report's text and JSON. The real
/// relay, proxy and network failures are in the functional tests (DiagnoseTests).
/// </summary>
[TestFixture]
[Category("Diagnose")]
public sealed class TunnelDiagnosticsTests
{
    private const string Token = "diag-secret-token-0123456789abcdef";
    private const string ProxyPassword = "proxy-secret-pw-42";

    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    private static TunnelSessionOptions Options(string relay = "https://connect.vendor.invalid")
    {
        var options = new TunnelSessionOptions { RelayUrl = new Uri(relay), AuthToken = Token, ConnectTimeout = TimeSpan.FromSeconds(2) };
        options.Proxy.UseEnvironment = false;
        return options;
    }

    private static Func<string, CancellationToken, Task<IPAddress[]>> NotFound(List<string> asked) => (host, _) =>
    {
        asked.Add(host);
        return Task.FromException<IPAddress[]>(new SocketException((int)SocketError.HostNotFound));
    };

    [Test]
    public async Task NameThatDoesNotResolve_FailsAtDns_NamesTheHost_AndSkipsEveryLaterStep()
    {
        var asked = new List<string>();

        var report = await TunnelDiagnostics.RunAsync(Options(), NotFound(asked), CancellationToken.None).WaitAsync(Limit);

        var relay = report.Relays.Single();
        var failed = report.FailedStep!;
        Assert.Multiple(() =>
        {
            Assert.That(asked, Is.EqualTo(new[] { "connect.vendor.invalid" }));
            Assert.That(report.Succeeded, Is.False);
            Assert.That(relay.ProxyAddress, Is.Null);
            Assert.That(failed.Kind, Is.EqualTo(TunnelDiagnosticStepKind.Dns));
            Assert.That(failed.Verdict, Is.EqualTo(TunnelDiagnosticVerdict.Failed));
            Assert.That(failed.Error, Is.EqualTo(TunnelError.ConnectionFailed));
            Assert.That(failed.Detail, Does.Contain("connect.vendor.invalid does not resolve"));
            Assert.That(failed.Advice, Does.Contain("check the spelling of connect.vendor.invalid").And.Contain("DNS of connect.vendor.invalid"));
            Assert.That(relay.Steps.Select(s => s.Kind), Is.EqualTo(new[]
            {
                TunnelDiagnosticStepKind.Dns, TunnelDiagnosticStepKind.TcpConnect, TunnelDiagnosticStepKind.TlsHandshake,
                TunnelDiagnosticStepKind.Http2, TunnelDiagnosticStepKind.Authentication, TunnelDiagnosticStepKind.Heartbeat,
            }));
            Assert.That(relay.Steps.Skip(1).Select(s => (s.Verdict, s.Detail, s.Error)),
                Is.All.EqualTo((TunnelDiagnosticVerdict.Skipped, "not run: an earlier step failed", (TunnelError?)null)));
            Assert.That(report.ToString(), Does.Contain("FAIL  DNS").And.Contain("SKIP  TCP connect").And.Not.Contain(Token));
            Assert.That(report.ToJson(), Does.Not.Contain(Token));
        });
    }

    [Test]
    public async Task ProxyNameThatDoesNotResolve_IsResolvedFirst_AndFailsAsAProxyFailure_WithoutItsCredentials()
    {
        var asked = new List<string>();
        var options = Options();
        options.Proxy.Address = new Uri("http://proxy.corp.invalid:3128");
        options.Proxy.UserName = "alice";
        options.Proxy.Password = ProxyPassword;

        var report = await TunnelDiagnostics.RunAsync(options, NotFound(asked), CancellationToken.None).WaitAsync(Limit);

        var relay = report.Relays.Single();
        Assert.Multiple(() =>
        {
            Assert.That(asked, Is.EqualTo(new[] { "proxy.corp.invalid" }), "with a proxy, the agent resolves the proxy's name; the proxy resolves the relay's");
            Assert.That(relay.ProxyAddress, Is.EqualTo(new Uri("http://proxy.corp.invalid:3128")));
            Assert.That(relay.ProxySource, Is.EqualTo("Proxy.Address"));
            Assert.That(report.FailedStep!.Kind, Is.EqualTo(TunnelDiagnosticStepKind.Dns));
            Assert.That(report.FailedStep.Error, Is.EqualTo(TunnelError.ProxyFailed));
            Assert.That(report.FailedStep.Advice, Does.Contain("proxy.corp.invalid").And.Contain("Proxy.Address"));
            Assert.That(relay.Steps.Select(s => s.Kind), Does.Contain(TunnelDiagnosticStepKind.ProxyConnect));
            Assert.That(report.ToString(), Does.Contain("Proxy: http://proxy.corp.invalid:3128/ (from Proxy.Address)").And.Not.Contain(ProxyPassword).And.Not.Contain(Token));
            Assert.That(report.ToJson(), Does.Not.Contain(ProxyPassword).And.Not.Contain(Token));
        });
    }

    [Test]
    public async Task DnsThatDoesNotAnswer_FailsWithinTheConnectTimeout()
    {
        var options = Options();
        options.ConnectTimeout = TimeSpan.FromMilliseconds(300);

        var report = await TunnelDiagnostics.RunAsync(options, async (_, ct) =>
        {
            await Task.Delay(Timeout.Infinite, ct);
            return [];
        }, CancellationToken.None).WaitAsync(Limit);

        Assert.Multiple(() =>
        {
            Assert.That(report.FailedStep!.Kind, Is.EqualTo(TunnelDiagnosticStepKind.Dns));
            Assert.That(report.FailedStep.Detail, Does.Contain("no answer from DNS for connect.vendor.invalid within 300 ms"));
            Assert.That(report.FailedStep.Duration, Is.LessThan(TimeSpan.FromSeconds(10)));
        });
    }

    [Test]
    public void InvalidOptions_ThrowArgumentException_ListingTheProblems_AsConnectAsyncDoes()
    {
        var options = Options();
        options.AuthToken = null;

        var ex = Assert.ThrowsAsync<ArgumentException>(() => TunnelDiagnostics.RunAsync(options));

        Assert.That(ex!.Message, Does.Contain("AuthToken is required."));
    }

    [Test]
    public async Task Json_IsOneDocument_WithTheReportsFields()
    {
        var report = await TunnelDiagnostics.RunAsync(Options(), NotFound([]), CancellationToken.None).WaitAsync(Limit);

        using var json = JsonDocument.Parse(report.ToJson());
        var root = json.RootElement;
        var relay = root.GetProperty("relays")[0];
        var dns = relay.GetProperty("steps")[0];
        Assert.Multiple(() =>
        {
            Assert.That(root.GetProperty("sdkVersion").GetString(), Is.EqualTo(report.SdkVersion));
            Assert.That(root.GetProperty("startedAt").GetDateTimeOffset(), Is.EqualTo(report.StartedAt).Within(TimeSpan.FromMilliseconds(1)));
            Assert.That(root.GetProperty("succeeded").GetBoolean(), Is.False);
            Assert.That(relay.GetProperty("relayUrl").GetString(), Is.EqualTo("https://connect.vendor.invalid/"));
            Assert.That(relay.GetProperty("proxy").ValueKind, Is.EqualTo(JsonValueKind.Null));
            Assert.That(relay.GetProperty("steps").GetArrayLength(), Is.EqualTo(6));
            Assert.That(dns.GetProperty("step").GetString(), Is.EqualTo("Dns"));
            Assert.That(dns.GetProperty("verdict").GetString(), Is.EqualTo("Failed"));
            Assert.That(dns.GetProperty("error").GetString(), Is.EqualTo("ConnectionFailed"));
            Assert.That(dns.GetProperty("advice").GetString(), Is.EqualTo(report.FailedStep!.Advice));
            Assert.That(relay.GetProperty("steps")[1].GetProperty("verdict").GetString(), Is.EqualTo("Skipped"));
        });
    }

    [Test]
    public async Task SeveralRelays_EachHasItsSection_InTheOrderOfTheOptions()
    {
        var options = Options();
        options.RelayUrls.Add(new Uri("https://eu.connect.vendor.invalid"));
        var asked = new List<string>();

        var report = await TunnelDiagnostics.RunAsync(options, NotFound(asked), CancellationToken.None).WaitAsync(Limit);

        Assert.Multiple(() =>
        {
            Assert.That(report.Relays.Select(r => r.RelayUrl.Host), Is.EqualTo(new[] { "connect.vendor.invalid", "eu.connect.vendor.invalid" }));
            Assert.That(asked, Is.EqualTo(new[] { "connect.vendor.invalid", "eu.connect.vendor.invalid" }));
            Assert.That(report.FailedStep, Is.SameAs(report.Relays[0].FailedStep));
        });
    }
}
