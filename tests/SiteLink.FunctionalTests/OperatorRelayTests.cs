using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>
/// The built relay run as a process: the README's commands verbatim, start-up mistakes as one message and an exit
/// code, and defaults that do not depend on the folder it is started from.
/// </summary>
[TestFixture]
[Category("Operator")]
public sealed partial class OperatorRelayTests
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(120);
    private string _folder = "";

    [SetUp]
    public void SetUp() => _folder = Directory.CreateTempSubdirectory("sitelink-relay-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_folder, recursive: true);

    [Test]
    public async Task ReadmeCommands_RunVerbatimFromTheRepositoryRoot_CarryBytes()
    {
        var readme = await File.ReadAllTextAsync(Path.Combine(ProcessRunner.RepositoryRoot, "README.md"));
        var relayCommand = ReadmeRelayCommand().Match(readme);
        var agentCommand = ReadmeAgentCommand().Match(readme);
        Assert.That(relayCommand.Success && agentCommand.Success, Is.True, "README.md shows the relay and the agent commands");

        // Tests bind port 0 only: the addresses come from the environment, which overrides the file (as documented);
        // the command lines themselves run as written, from the repository root.
        var relayEnvironment = new Dictionary<string, string>
        {
            ["SITELINK_Relay__AgentListen"] = "127.0.0.1:0",
            ["SITELINK_Relay__Tls__DevelopmentCertificatePath"] = Path.Combine(_folder, "relay-dev-cert.pfx"),
            ["SITELINK_Relay__Admin__Listen"] = "127.0.0.1:0",
            ["SITELINK_Relay__Store__Path"] = Path.Combine(_folder, "relay.db"),
        };
        var cloudEndpoints = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(ProcessRunner.RepositoryRoot, "samples/relay/relay.json")))
            .RootElement.GetProperty("Relay").GetProperty("CloudEndpoints").GetArrayLength();
        for (var i = 0; i < cloudEndpoints; i++)
        {
            relayEnvironment[$"SITELINK_Relay__CloudEndpoints__{i}__Listen"] = "127.0.0.1:0";
        }

        await using var relay = ProcessRunner.Bash(relayCommand.Value, ProcessRunner.RepositoryRoot, relayEnvironment);
        var agentUrl = (await relay.WaitForLineAsync(@"listening for agents on (https://127\.0\.0\.1:\d+)/", StartTimeout)).Groups[1].Value;
        var pin = (await relay.WaitForLineAsync(@"pin it in agents\): ([0-9A-F]{64})", StartTimeout)).Groups[1].Value;
        var web = int.Parse((await relay.WaitForLineAsync(@"Cloud endpoint 'acme-web' on tcp://127\.0\.0\.1:(\d+)", StartTimeout)).Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        Assert.That(File.Exists(Path.Combine(_folder, "relay-dev-cert.pfx")), Is.True, "the development certificate is kept where configured");

        await using var upstream = TestUpstream.Echo();
        var agentLine = agentCommand.Value
            .Replace("https://127.0.0.1:8443", agentUrl, StringComparison.Ordinal)
            .Replace("SHA256_THE_RELAY_PRINTED", pin, StringComparison.Ordinal)
            .Replace("127.0.0.1:8080", $"127.0.0.1:{upstream.Port}", StringComparison.Ordinal);
        await using var agent = ProcessRunner.Bash(agentLine, ProcessRunner.RepositoryRoot);
        await agent.WaitForLineAsync("Endpoint 'web' bound", StartTimeout);

        var payload = SocketTestExtensions.RandomBytes(8 * 1024 * 1024);
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(new IPEndPoint(IPAddress.Loopback, web)).DefaultTimeout();
        var receiving = client.HashToEndAsync();
        await client.SendAllAsync(payload).DefaultTimeout();
        client.Shutdown(SocketShutdown.Send);
        var (sha256, length) = await receiving.DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(length, Is.EqualTo(payload.Length));
            Assert.That(sha256, Is.EqualTo(SHA256.HashData(payload)));
        });
    }

    [Test]
    [Category("AdminApi")]
    public async Task ReadmeProvisioning_RunsAsOneScript_TenantTokenEndpointAgentTrafficAndEvents()
    {
        var readme = await File.ReadAllTextAsync(Path.Combine(ProcessRunner.RepositoryRoot, "README.md"));
        var block = ReadmeProvisioningBlock().Match(readme);
        Assert.That(block.Success, Is.True, "README.md shows the provisioning block");
        var relayEnvironment = new Dictionary<string, string>
        {
            ["SITELINK_Relay__AgentListen"] = "127.0.0.1:0",
            ["SITELINK_Relay__Tls__DevelopmentCertificatePath"] = Path.Combine(_folder, "relay-dev-cert.pfx"),
            ["SITELINK_Relay__Admin__Listen"] = "127.0.0.1:0",
            ["SITELINK_Relay__Store__Path"] = Path.Combine(_folder, "relay.db"),
        };
        for (var i = 0; i < 4; i++)
        {
            relayEnvironment[$"SITELINK_Relay__CloudEndpoints__{i}__Listen"] = "127.0.0.1:0";
        }

        await using var relay = ProcessRunner.Bash(ReadmeRelayCommand().Match(readme).Value, ProcessRunner.RepositoryRoot, relayEnvironment);
        var agentUrl = (await relay.WaitForLineAsync(@"listening for agents on (https://127\.0\.0\.1:\d+)/", StartTimeout)).Groups[1].Value;
        var pin = (await relay.WaitForLineAsync(@"pin it in agents\): ([0-9A-F]{64})", StartTimeout)).Groups[1].Value;
        var admin = (await relay.WaitForLineAsync(@"Admin API on (https://127\.0\.0\.1:\d+)/", StartTimeout)).Groups[1].Value;
        var keyPin = (await relay.WaitForLineAsync(@"--pinnedpubkey\): (sha256//\S+)", StartTimeout)).Groups[1].Value;

        // Tests bind port 0 or free ports only: the script's fixed addresses are replaced, nothing else.
        var (receiver, endpoint, service) = (RealServers.FreePort(), RealServers.FreePort(), RealServers.FreePort());
        var script = block.Groups[1].Value
            .Replace("https://127.0.0.1:8444", admin, StringComparison.Ordinal)
            .Replace("THE_PIN_THE_RELAY_PRINTED", keyPin, StringComparison.Ordinal)
            .Replace("https://127.0.0.1:8443", agentUrl, StringComparison.Ordinal)
            .Replace("SHA256_THE_RELAY_PRINTED", pin, StringComparison.Ordinal)
            .Replace("127.0.0.1:9000", $"127.0.0.1:{receiver}", StringComparison.Ordinal)
            .Replace("\"127.0.0.1\", 9000", $"\"127.0.0.1\", {receiver}", StringComparison.Ordinal)
            .Replace("127.0.0.1:18090", $"127.0.0.1:{endpoint}", StringComparison.Ordinal)
            .Replace("http.server 8080", $"http.server {service}", StringComparison.Ordinal)
            .Replace("127.0.0.1:8080", $"127.0.0.1:{service}", StringComparison.Ordinal)
            .Replace("events.log", Path.Combine(_folder, "events.log"), StringComparison.Ordinal)
            .Replace("agent.log", Path.Combine(_folder, "agent.log"), StringComparison.Ordinal);
        // The script leaves its receiver, service and agent running, as a reader's terminal would: stopped here.
        await using var run = ProcessRunner.Bash("set -e\n" + script + "\nkill $(jobs -p)\n", ProcessRunner.RepositoryRoot);
        var exit = await run.WaitForExitAsync(TimeSpan.FromMinutes(3));
        Assert.That(exit, Is.Zero, run.AllOutput);
        var output = run.AllOutput;
        Assert.Multiple(() =>
        {
            Assert.That(output, Does.Contain("\"id\":\"initech\""), "the tenant was created");
            Assert.That(output, Does.Contain("\"name\":\"initech-web\""), "the endpoint was created");
            Assert.That(output, Does.Contain("\"agentId\""), "the session was listed");
            Assert.That(output, Does.Contain("\"type\":\"session.connected\"").And.Contain("\"type\":\"endpoint.bound\""), "the receiver printed the events");
            Assert.That(output, Does.Contain("\"active\":false"), "the token was revoked");
        });
    }

    [Test]
    public async Task WorkedExample_AddRedis_TheSampleConfigurationServesARealRedisEndToEnd()
    {
        // docs/operations.md, "Worked example": the sample relay.json has the cloud endpoint 'acme-redis' and 'redis' in
        // the token's Allow list; the agent adds --endpoint redis=127.0.0.1:6379 (here redis's own free port).
        await using var redis = await RedisServer.StartAsync();
        var sample = Path.Combine(ProcessRunner.RepositoryRoot, "samples/relay/relay.json");
        var environment = new Dictionary<string, string>
        {
            ["SITELINK_Relay__AgentListen"] = "127.0.0.1:0",
            ["SITELINK_Relay__Tls__DevelopmentCertificatePath"] = Path.Combine(_folder, "relay-dev-cert.pfx"),
            ["SITELINK_Relay__Admin__Listen"] = "127.0.0.1:0",
            ["SITELINK_Relay__Store__Path"] = Path.Combine(_folder, "relay.db"),
        };
        var cloudEndpoints = JsonDocument.Parse(await File.ReadAllTextAsync(sample)).RootElement.GetProperty("Relay").GetProperty("CloudEndpoints");
        for (var i = 0; i < cloudEndpoints.GetArrayLength(); i++)
        {
            environment[$"SITELINK_Relay__CloudEndpoints__{i}__Listen"] = "127.0.0.1:0";
        }

        await using var relay = ProcessRunner.Dotnet(ProcessRunner.RelayDll, ["--config", sample], _folder, environment);
        var agentUrl = (await relay.WaitForLineAsync(@"listening for agents on (https://\S+)", StartTimeout)).Groups[1].Value;
        var pin = (await relay.WaitForLineAsync(@"pin it in agents\): ([0-9A-F]{64})", StartTimeout)).Groups[1].Value;
        var port = (await relay.WaitForLineAsync(@"Cloud endpoint 'acme-redis' on tcp://127\.0\.0\.1:(\d+)", StartTimeout)).Groups[1].Value;
        await using var agent = ProcessRunner.Dotnet(ProcessRunner.AgentDll,
            ["--relay", agentUrl, "--pin", pin, "--endpoint", $"redis=127.0.0.1:{redis.Port}"], _folder,
            new Dictionary<string, string> { ["SITELINK_AUTHTOKEN"] = "acme-demo-token-change-me-0123456789" });
        await agent.WaitForLineAsync("Endpoint 'redis' bound", StartTimeout);

        // redis-cli, as the example shows, through the relay's cloud endpoint.
        await using (var set = ProcessRunner.Start("redis-cli", ["-h", "127.0.0.1", "-p", port, "set", "greeting", "hello"]))
        {
            Assert.That(await set.WaitForExitAsync(StartTimeout), Is.Zero, set.AllOutput);
            Assert.That(set.Output, Is.EqualTo(new[] { "OK" }));
        }

        await using (var get = ProcessRunner.Start("redis-cli", ["-h", "127.0.0.1", "-p", port, "get", "greeting"]))
        {
            Assert.That(await get.WaitForExitAsync(StartTimeout), Is.Zero, get.AllOutput);
            Assert.That(get.Output, Is.EqualTo(new[] { "hello" }));
        }

        // And megabytes of binary data both ways, checked at the far end.
        var value = SocketTestExtensions.RandomBytes(4 * 1024 * 1024);
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(new IPEndPoint(IPAddress.Loopback, int.Parse(port, System.Globalization.CultureInfo.InvariantCulture))).DefaultTimeout();
        var stored = await RedisServer.CommandAsync(client, "SET"u8.ToArray(), "blob"u8.ToArray(), value);
        var read = await RedisServer.CommandAsync(client, "GET"u8.ToArray(), "blob"u8.ToArray());

        Assert.Multiple(() =>
        {
            Assert.That(stored, Is.EqualTo("OK"u8.ToArray()));
            Assert.That(SHA256.HashData(read!), Is.EqualTo(SHA256.HashData(value)));
        });
    }

    [TestCase("--confg", "relay.json", "Unknown option --confg. Did you mean --config?")]
    [TestCase("stray-value", null, "Argument 1 is a value without an option before it")]
    public async Task AMistypedSwitch_IsRefusedByName(string first, string? second, string expected)
    {
        await using var relay = ProcessRunner.Dotnet(ProcessRunner.RelayDll, second is null ? [first] : [first, second], _folder);
        var exitCode = await relay.WaitForExitAsync(StartTimeout);

        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.EqualTo(2), relay.AllOutput);
            Assert.That(relay.AllOutput, Does.Contain(expected));
            Assert.That(relay.AllOutput, Does.Not.Contain("stray-value"), "values are never echoed");
        });
    }

    [TestCase("missing.json", null, "missing.json' (--config missing.json) does not exist")]
    [TestCase("relay.json", "{ \"Relay\": { bad", "relay.json' is not valid JSON: line 1, column")]
    [TestCase("relay.json", "{ \"Relay\": { \"Limits\": { \"HelloTimeout\": \"ten seconds\" } } }", "at 'Relay:Limits:HelloTimeout' to type 'System.TimeSpan'")]
    [TestCase("relay.json", "{ \"Relay\": { \"Tls\": { \"CertificatePath\": \"not-a-cert.pfx\" }, \"Tokens\": [ { \"Name\": \"a\", \"Token\": \"tok-0123456789abcdefghijklmnopqrstuvwxyz\", \"Tenant\": \"t\", \"Allow\": [ \"*\" ] } ] } }", "not-a-cert.pfx' cannot be loaded")]
    [TestCase("relay.json", "{ \"Relay\": { \"Tls\": { \"CertificatePath\": \"no-key.pfx\" }, \"Tokens\": [ { \"Name\": \"a\", \"Token\": \"tok-0123456789abcdefghijklmnopqrstuvwxyz\", \"Tenant\": \"t\", \"Allow\": [ \"*\" ] } ] } }", "no-key.pfx' has no private key")]
    [TestCase("relay.json", "{ \"Relay\": { \"Tls\": { \"DevelopmentCertificatePath\": \"a-file/dev.pfx\" }, \"Tokens\": [ { \"Name\": \"a\", \"Token\": \"tok-0123456789abcdefghijklmnopqrstuvwxyz\", \"Tenant\": \"t\", \"Allow\": [ \"*\" ] } ] } }", "a-file/dev.pfx' cannot be written")]
    public async Task AConfigurationMistake_IsOneMessageAndExitCode2(string file, string? content, string expected)
    {
        await File.WriteAllTextAsync(Path.Combine(_folder, "not-a-cert.pfx"), "this is not a certificate");
        await File.WriteAllTextAsync(Path.Combine(_folder, "a-file"), "a file where the certificate's folder should be");
        using (var key = System.Security.Cryptography.ECDsa.Create())
        {
            var request = new System.Security.Cryptography.X509Certificates.CertificateRequest("CN=no-key", key, HashAlgorithmName.SHA256);
            using var withKey = request.CreateSelfSigned(DateTimeOffset.UtcNow, DateTimeOffset.UtcNow.AddDays(1));
            using var publicOnly = System.Security.Cryptography.X509Certificates.X509CertificateLoader.LoadCertificate(withKey.RawData);
            await File.WriteAllBytesAsync(Path.Combine(_folder, "no-key.pfx"), publicOnly.Export(System.Security.Cryptography.X509Certificates.X509ContentType.Pkcs12));
        }

        if (content is not null)
        {
            await File.WriteAllTextAsync(Path.Combine(_folder, file), content);
        }

        await using var relay = ProcessRunner.Dotnet(ProcessRunner.RelayDll, ["--config", file], _folder);
        var exitCode = await relay.WaitForExitAsync(StartTimeout);

        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.EqualTo(2), relay.AllOutput);
            Assert.That(relay.AllOutput, Does.Contain(expected));
            Assert.That(relay.AllOutput, Does.Not.Match(@"(?m)^\s+at "), "no stack trace");
            Assert.That(relay.Errors.Count, Is.LessThanOrEqualTo(3), relay.AllOutput);
        });
    }

    [TestCase("agent port")]
    [TestCase("cloud endpoint")]
    public async Task AnAddressInUse_IsOneMessageAndExitCode3(string which)
    {
        using var taken = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        taken.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        taken.Listen();
        var address = taken.LocalEndPoint!.ToString()!;
        await WriteConfigAsync(which == "agent port" ? address : "127.0.0.1:0", which == "cloud endpoint" ? address : "127.0.0.1:0");

        await using var relay = ProcessRunner.Dotnet(ProcessRunner.RelayDll, ["--config", "relay.json"], _folder);
        var exitCode = await relay.WaitForExitAsync(StartTimeout);

        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.EqualTo(3), relay.AllOutput);
            Assert.That(relay.AllOutput, Does.Contain($"cannot listen on {address}"));
            Assert.That(relay.AllOutput, Does.Not.Match(@"(?m)^\s+at "), "no stack trace");
        });
    }

    [Test]
    public async Task StartedFromAnotherFolder_TheShippedDefaultsStillApply_AndPathsFollowTheConfigFile()
    {
        // As a service manager starts it: working directory elsewhere, config file in its own folder naming a relative
        // certificate path, default log levels (none set by the test).
        var configFolder = Directory.CreateDirectory(Path.Combine(_folder, "etc")).FullName;
        var workingDirectory = Directory.CreateDirectory(Path.Combine(_folder, "cwd")).FullName;
        await WriteConfigAsync("127.0.0.1:0", "127.0.0.1:0", configFolder, developmentCertificate: "certs/dev.pfx");
        await using var relay = ProcessRunner.Dotnet(ProcessRunner.RelayDll, ["--config", Path.Combine(configFolder, "relay.json")], workingDirectory);
        var agentUrl = new Uri((await relay.WaitForLineAsync(@"listening for agents on (https://\S+)", StartTimeout)).Groups[1].Value);
        var pin = (await relay.WaitForLineAsync(@"pin it in agents\): ([0-9A-F]{64})", StartTimeout)).Groups[1].Value;
        var port = int.Parse((await relay.WaitForLineAsync(@"Cloud endpoint 'echo' on tcp://127\.0\.0\.1:(\d+)", StartTimeout)).Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);

        await using var upstream = TestUpstream.Echo();
        var options = new TunnelSessionOptions { RelayUrl = agentUrl, AuthToken = Token, PinnedCertificateSha256 = pin };
        await using var session = await TunnelSession.ConnectAsync(options).DefaultTimeout();
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();
        var linesBefore = relay.Output.Count;
        const int connections = 20;
        for (var i = 0; i < connections; i++)
        {
            using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await client.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port)).DefaultTimeout();
            var receiving = client.ReadToEndAsync();
            await client.SendAllAsync(new byte[] { (byte)i, 1, 2, 3 }).DefaultTimeout();
            client.Shutdown(SocketShutdown.Send);
            Assert.That(await receiving.DefaultTimeout(), Is.EqualTo(new byte[] { (byte)i, 1, 2, 3 }));
        }

        var linesPerConnection = (relay.Output.Count - linesBefore) / (double)connections;
        Assert.Multiple(() =>
        {
            Assert.That(File.Exists(Path.Combine(configFolder, "certs", "dev.pfx")), Is.True, "a relative path in the config file is relative to that file's folder");
            Assert.That(File.Exists(Path.Combine(workingDirectory, "certs", "dev.pfx")), Is.False);
            Assert.That(relay.AllOutput, Does.Contain($"Configuration files: {Path.Combine(Path.GetDirectoryName(ProcessRunner.RelayDll)!, "appsettings.json")}, {Path.Combine(configFolder, "relay.json")}"),
                "the appsettings.json next to the binary applies, whatever the working directory");
            Assert.That(relay.AllOutput, Does.Not.Contain("Microsoft.AspNetCore"), "ASP.NET's per-request lines stay off");
            Assert.That(linesPerConnection, Is.LessThan(0.5), relay.AllOutput);
        });
    }

    private const string Token = "operator-token-0123456789abcdefghijklmnop";

    private async Task WriteConfigAsync(string agentListen, string cloudListen, string? folder = null, string? developmentCertificate = null)
    {
        var config = new
        {
            Relay = new
            {
                AgentListen = agentListen,
                Tls = new { DevelopmentCertificatePath = developmentCertificate ?? "dev.pfx" },
                Tokens = new[] { new { Name = "operator", Token, Tenant = "acme", Allow = new[] { "*" } } },
                CloudEndpoints = new[] { new { Name = "echo", Listen = cloudListen, Tenant = "acme", Endpoint = "echo" } },
            },
        };
        await File.WriteAllTextAsync(Path.Combine(folder ?? _folder, "relay.json"), JsonSerializer.Serialize(config));
    }

    /// <summary>README's relay command: the line under "Running the relay and the standalone agent".</summary>
    [GeneratedRegex(@"^dotnet run --project src/SiteLink\.Relay[^\n]*$", RegexOptions.Multiline)]
    private static partial Regex ReadmeRelayCommand();

    /// <summary>README's provisioning block: the bash block after its marker comment.</summary>
    [GeneratedRegex(@"<!-- provisioning:[^\n]*-->\n```bash\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex ReadmeProvisioningBlock();

    /// <summary>README's agent command: from SITELINK_AUTHTOKEN= through its continuation lines.</summary>
    [GeneratedRegex(@"^SITELINK_AUTHTOKEN=[^\n]*\\\n(?:[^\n]*\\\n)*[^\n]*$", RegexOptions.Multiline)]
    private static partial Regex ReadmeAgentCommand();
}
