using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using System.Text.RegularExpressions;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>
/// docs/customer-guide.md, read cold: every command it marks runnable works as written against the quickstart's relay,
/// with the agent's settings exported as the quickstart prints them (the agent's configuration, as an installation would
/// give it) and a real tinyproxy as the customer's proxy. The guide's example names are read as the local ones:
/// <c>connect.vendor.example:443</c> is the quickstart relay's address, <c>proxy.corp.example:3128</c> the tinyproxy.
/// </summary>
[TestFixture]
[Category("CustomerGuide")]
[Category("Diagnose")]
public sealed partial class CustomerGuideTests
{
    [Test]
    public async Task EveryRunnableCommand_WorksAsWritten_AgainstTheQuickstartRelay()
    {
        var guide = await File.ReadAllTextAsync(Path.Combine(ProcessRunner.RepositoryRoot, "docs/customer-guide.md"));
        var commands = RunnableBlock().Matches(guide).Select(m => m.Groups[1].Value.Trim()).ToList();
        var token = QuickstartToken().Match(guide);
        Assert.Multiple(() =>
        {
            Assert.That(commands, Has.Count.EqualTo(5), "the guide marks its runnable commands");
            Assert.That(token.Success, Is.True, "the guide says how to start the quickstart with a token");
        });

        await using var proxy = await TinyproxyServer.StartAsync();
        using var folder = new TemporaryFolder();
        var environment = new Dictionary<string, string>
        {
            ["SITELINK_AUTHTOKEN"] = token.Groups[1].Value,
            // The machine's own proxy settings stay out of it: the guide names its proxy explicitly.
            ["HTTPS_PROXY"] = "", ["https_proxy"] = "", ["ALL_PROXY"] = "", ["all_proxy"] = "", ["NO_PROXY"] = "", ["no_proxy"] = "",
        };
        // A smaller demo than the default (the guide's commands are what is tested, not the demo's traffic).
        await using var quickstart = ProcessRunner.Dotnet(ProcessRunner.QuickstartDll, ["--size-mib", "1", "--round-trips", "20"], folder.Path, environment);
        var exports = await quickstart.WaitForLineAsync(@"^\s*export SiteLink__RelayUrl=(https://127\.0\.0\.1:(\d+)/) SiteLink__PinnedCertificateSha256=([0-9A-F]{64})\s*$", TimeSpan.FromSeconds(120));
        var (relayUrl, relayPort, pin) = (exports.Groups[1].Value, exports.Groups[2].Value, exports.Groups[3].Value);
        environment["SiteLink__RelayUrl"] = relayUrl;
        environment["SiteLink__PinnedCertificateSha256"] = pin;

        var outputs = new List<string>();
        foreach (var command in commands)
        {
            var script = command
                .Replace("connect.vendor.example:443", $"127.0.0.1:{relayPort}", StringComparison.Ordinal)
                .Replace("connect.vendor.example", "localhost", StringComparison.Ordinal)
                .Replace("proxy.corp.example:3128", $"127.0.0.1:{proxy.Port}", StringComparison.Ordinal);
            // 'sitelink-agent' is the installed standalone agent: here, the one this repository built. No pipefail, as in
            // a reader's shell: a pipeline's status is its last command's (openssl s_client may exit 1 when the relay
            // closes without close_notify, after printing the certificate that openssl x509 reads).
            var prelude = $"set -e\nsitelink-agent() {{ dotnet '{ProcessRunner.AgentDll}' \"$@\"; }}\n";
            await using var run = ProcessRunner.Bash(prelude + script, folder.Path, environment);
            var exit = await run.WaitForExitAsync(TimeSpan.FromMinutes(2));
            Assert.That(exit, Is.Zero, $"'{command}' failed:{Environment.NewLine}{run.AllOutput}");
            outputs.Add(run.AllOutput);
        }

        var json = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(folder.Path, "sitelink-diagnosis.json")));
        Assert.Multiple(() =>
        {
            Assert.That(outputs[0], Does.StartWith("sitelink-agent "), "--version");
            Assert.That(outputs[1], Does.Contain("PASS  Heartbeat").And.Contain("Result: the agent can connect."), "diagnose");
            Assert.That(outputs[2], Does.Contain("PASS  Proxy CONNECT").And.Contain("Result: the agent can connect."), "diagnose through the proxy");
            // The proxied diagnosis alone went through the proxy: its own probe (TCP, CONNECT, TLS, HTTP/2), then the real handshake.
            Assert.That(proxy.ConnectRequests, Has.Count.EqualTo(2), proxy.Log);
            Assert.That(json.RootElement.GetProperty("succeeded").GetBoolean(), Is.True, "diagnose --json");
            Assert.That(outputs[4], Does.Contain("subject=").And.Contain("notAfter=").And.Contain(FingerprintLine(pin)), "openssl sees the relay's certificate");
            Assert.That(string.Concat(outputs) + json.RootElement.GetRawText(), Does.Not.Contain(environment["SITELINK_AUTHTOKEN"]), "no output holds the token");
        });
    }

    /// <summary>openssl's fingerprint line: the SHA-256 in colon-separated pairs.</summary>
    private static string FingerprintLine(string sha256) =>
        "Fingerprint=" + string.Join(':', Enumerable.Range(0, sha256.Length / 2).Select(i => sha256.Substring(i * 2, 2)));

    /// <summary>The guide's runnable commands: the bash block after each marker comment.</summary>
    [GeneratedRegex(@"<!-- customer-guide: runnable -->\n```bash\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex RunnableBlock();

    /// <summary>The token the guide's last section exports before starting the quickstart.</summary>
    [GeneratedRegex(@"^export SITELINK_AUTHTOKEN=(\S+)$", RegexOptions.Multiline)]
    private static partial Regex QuickstartToken();

    private sealed class TemporaryFolder : IDisposable
    {
        private readonly DirectoryInfo _folder = Directory.CreateTempSubdirectory("sitelink-guide-");

        public string Path => _folder.FullName;

        public void Dispose() => _folder.Delete(recursive: true);
    }
}
