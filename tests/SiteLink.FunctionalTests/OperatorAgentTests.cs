using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Grpc.Core;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>
/// The built sitelink-agent run as a process, as a newcomer and a service manager meet it: every mistake is one
/// message and exit code 2, every permanent fault stops it with its own exit code and a line saying what to do.
/// </summary>
[TestFixture]
[Category("Operator")]
public sealed class OperatorAgentTests
{
    private static readonly TimeSpan ExitTimeout = TimeSpan.FromSeconds(60);
    private string _folder = "";

    [SetUp]
    public void SetUp()
    {
        _folder = Directory.CreateTempSubdirectory("sitelink-agent-").FullName;
        File.WriteAllText(Path.Combine(_folder, "invalid.json"), "{ \"SiteLink\": { bad");
        File.WriteAllText(Path.Combine(_folder, "ten-seconds.json"), "{ \"SiteLink\": { \"HeartbeatInterval\": \"ten seconds\" } }");
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_folder, recursive: true);

    [TestCase("RelayUrl 'http://127.0.0.1:8443/' uses http://", "--relay", "http://127.0.0.1:8443", "--endpoint", "web=127.0.0.1:28080")]
    [TestCase("AuthToken is required. (SITELINK_AUTHTOKEN, or --token)", "--relay", "https://127.0.0.1:8443", "--endpoint", "web=127.0.0.1:28080")]
    [TestCase("PinnedCertificateSha256 must be 64 hexadecimal digits", "--relay", "https://127.0.0.1:8443", "--token", "t0123456789", "--pin", "xyz", "--endpoint", "web=127.0.0.1:1")]
    [TestCase("--endpoint 'web=127.0.0.1': '127.0.0.1' is not HOST:PORT", "--relay", "https://127.0.0.1:8443", "--endpoint", "web=127.0.0.1")]
    [TestCase("Unknown option --relya. Did you mean --relay?", "--relya", "https://127.0.0.1:8443")]
    [TestCase("Unknown option --endpiont. Did you mean --endpoint?", "--relay", "https://127.0.0.1:8443", "--endpiont=web=127.0.0.1:80")]
    [TestCase("Unknown option --tokn. Did you mean --token?", "--tokn=" + Secret)]
    [TestCase("Argument 3 is a value without an option before it", "--relay", "https://127.0.0.1:8443", Secret)]
    [TestCase("missing.json' (--config missing.json) does not exist", "--config", "missing.json")]
    [TestCase("invalid.json' is not valid JSON: line 1, column", "--config", "invalid.json")]
    [TestCase("at 'SiteLink:HeartbeatInterval' to type 'System.TimeSpan'. Durations are written hh:mm:ss", "--relay", "https://127.0.0.1:8443", "--token", "t0123456789", "--config", "ten-seconds.json")]
    public async Task AMistake_IsOneMessageAndExitCode2_WithoutAStackTrace(string expected, params string[] args)
    {
        await using var agent = ProcessRunner.Dotnet(ProcessRunner.AgentDll, args, _folder, new Dictionary<string, string> { ["SITELINK_AUTHTOKEN"] = "" });

        var exitCode = await agent.WaitForExitAsync(ExitTimeout);

        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.EqualTo(2), agent.AllOutput);
            Assert.That(agent.AllOutput, Does.Contain(expected));
            Assert.That(agent.Output, Is.Empty, "nothing on standard output: the message is on standard error");
            Assert.That(agent.Errors.Count, Is.LessThanOrEqualTo(4), agent.AllOutput);
            Assert.That(agent.AllOutput, Does.Not.Match(@"(?m)^\s+at "), "no stack trace");
            Assert.That(agent.AllOutput, Does.Not.Contain("Hosting failed"));
            Assert.That(agent.AllOutput, Does.Not.Contain(Secret), "a value given by mistake is never echoed: it may be the token");
        });
    }

    /// <summary>Stands for a token typed in the wrong place.</summary>
    private const string Secret = "s3cret-token-value-0123456789abcdef";

    [TestCase("wrong-token", 3, "AuthenticationFailed")]
    [TestCase("no-pin", 4, "CertificateRejected")]
    [TestCase("wrong-pin", 4, "CertificateRejected")]
    [TestCase("forbidden-endpoint", 6, "relay refused endpoint 'forbidden'")]
    public async Task APermanentFault_StopsTheAgentWithItsExitCode_AndSaysWhatToDo(string fault, int expectedExitCode, string expectedText)
    {
        await using var relay = await TestRelay.StartAsync(["web"]);
        var args = new List<string> { "--relay", relay.Server.AgentUrl.ToString(), "--endpoint", fault == "forbidden-endpoint" ? "forbidden=127.0.0.1:9" : "web=127.0.0.1:9" };
        if (fault != "no-pin")
        {
            args.AddRange(["--pin", fault == "wrong-pin" ? new string('A', 64) : relay.Server.CertificateSha256!]);
        }

        var token = fault == "wrong-token" ? "not-the-token-0123456789abcdef" : fault == "forbidden-endpoint" ? TestRelay.AcmeRestrictedToken : TestRelay.AcmeToken;
        await using var agent = ProcessRunner.Dotnet(ProcessRunner.AgentDll, args, _folder, new Dictionary<string, string> { ["SITELINK_AUTHTOKEN"] = token });

        var exitCode = await agent.WaitForExitAsync(ExitTimeout);

        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.EqualTo(expectedExitCode), agent.AllOutput);
            Assert.That(agent.AllOutput, Does.Contain(expectedText));
            Assert.That(agent.AllOutput, Does.Match(@"(?m)^(fail|crit): "), "logged at Error or Critical");
            Assert.That(agent.AllOutput, Does.Contain("What to do:"));
            Assert.That(agent.AllOutput, Does.Not.Match(@"(?m)^\s+at "), "no stack trace");
            Assert.That(agent.AllOutput, Does.Not.Contain(token), "the token is never printed");
        });
    }

    [Test]
    public async Task ARelayOfAnotherProtocolVersion_StopsTheAgentWithExitCode5()
    {
        await using var relay = await ScriptedRelay.StartAsync();
        relay.Control.RefuseControlWith = new Status(StatusCode.FailedPrecondition, "protocol version 1 is not supported; this relay speaks version 2");
        await using var agent = ProcessRunner.Dotnet(ProcessRunner.AgentDll,
            ["--relay", relay.Url.ToString(), "--insecure", "--endpoint", "web=127.0.0.1:9"], _folder,
            new Dictionary<string, string> { ["SITELINK_AUTHTOKEN"] = TestRelay.AcmeToken });

        var exitCode = await agent.WaitForExitAsync(ExitTimeout);

        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.EqualTo(5), agent.AllOutput);
            Assert.That(agent.AllOutput, Does.Contain("VersionNotSupported"));
            Assert.That(agent.AllOutput, Does.Contain("upgrade the agent"));
        });
    }

    [Test]
    [Category("VersionPolicy")]
    public async Task AnAgentOlderThanTheRelaysMinimum_SaysSoAndExitsWithCode5()
    {
        await using var relay = await TestRelay.StartAsync(["web"], o => o.MinimumAgentVersion = "999.0.0");
        await using var agent = ProcessRunner.Dotnet(ProcessRunner.AgentDll,
            ["--relay", relay.Server.AgentUrl.ToString(), "--pin", relay.Server.CertificateSha256!, "--endpoint", "web=127.0.0.1:9"], _folder,
            new Dictionary<string, string> { ["SITELINK_AUTHTOKEN"] = TestRelay.AcmeToken });

        var exitCode = await agent.WaitForExitAsync(ExitTimeout);

        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.EqualTo(5), agent.AllOutput);
            Assert.That(agent.AllOutput, Does.Match(@"The relay requires SiteLink SDK 999\.0\.0 or later; this agent runs \d+\.\d+\.\d+\S*\. Update the agent\."));
            Assert.That(agent.AllOutput, Does.Match(@"(?m)^(fail|crit): "), "logged at Error or Critical");
            Assert.That(agent.AllOutput, Does.Contain("What to do:"));
            Assert.That(agent.AllOutput, Does.Not.Match(@"(?m)^\s+at "), "no stack trace");
            Assert.That(relay.Server.Counters.AgentsVersionRefused, Is.EqualTo(1), "refused once, never retried");
        });
    }

    [Test]
    public async Task AHealthyAgent_CarriesBytes_AndExits0OnSigterm()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var upstream = TestUpstream.Echo();
        await using var agent = ProcessRunner.Dotnet(ProcessRunner.AgentDll,
            [$"--relay={relay.Server.AgentUrl}", "--pin", relay.Server.CertificateSha256!, $"--endpoint=echo=127.0.0.1:{upstream.Port}"], _folder,
            new Dictionary<string, string> { ["SITELINK_AUTHTOKEN"] = TestRelay.AcmeToken });
        await agent.WaitForLineAsync("Endpoint 'echo' bound", ExitTimeout);

        var payload = SocketTestExtensions.RandomBytes(4 * 1024 * 1024);
        using var client = await relay.ConnectClientAsync("echo");
        var receiving = client.ReadToEndAsync();
        await client.SendAllAsync(payload).DefaultTimeout();
        client.Shutdown(SocketShutdown.Send);
        var echoed = await receiving.DefaultTimeout();
        var exitCode = await agent.TerminateAsync(ExitTimeout);

        Assert.Multiple(() =>
        {
            Assert.That(SHA256.HashData(echoed), Is.EqualTo(SHA256.HashData(payload)));
            Assert.That(exitCode, Is.Zero, agent.AllOutput);
        });
    }
}
